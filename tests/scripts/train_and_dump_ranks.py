"""Train like scripts/train_image.py, then let EVERY rank dump its parameters (for DDP tests)."""
import sys
from pathlib import Path

from safetensors.torch import save_file

from fastft.arguments import parse_args
from fastft.config import TrainingArguments
from fastft.engine import Trainer
from fastft.tasks.image import ImageArguments, ImageTask

task_args, args = parse_args([ImageArguments, TrainingArguments], sys.argv[1:])
trainer = Trainer(ImageTask(task_args, args), args)
trainer.fit()
acc = trainer.accelerator
state = {k: v.detach().contiguous() for k, v in acc.unwrap_model(trainer.model).state_dict().items()}
save_file(state, str(Path(args.output_dir) / f"rank{acc.process_index}_of_{acc.num_processes}.safetensors"))
