"""One HF Trainer run for benchmarks/peers.py, as transformers' image-classification example trains.

``examples/pytorch/image-classification/run_image_classification.py``: an ``AutoModelForImageClassification``
(here a local timm checkpoint, through transformers' TimmWrapper), torchvision's RandomResizedCrop, flip
and normalisation in training, resize and center crop in evaluation, ``Trainer`` with the README's
hyperparameters unless flags change them (learning_rate 2e-5, 5 epochs, batch 8, linear decay, no
warmup, AdamW). It evaluates every ``--eval_steps`` steps instead of every epoch, and does not save
checkpoints (the README saves each epoch): both only make the peer's time to target shorter.
Writes ``metrics.jsonl`` rows as fastft's (step, elapsed_s, eval_runtime_s, eval_accuracy).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from datasets import load_dataset
from timm.data import resolve_data_config
from torchvision import transforms
from trainer_rows import Rows, train_and_write
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="imagefolder with train/ and test/")
    p.add_argument("--model", type=Path, required=True, help="local timm checkpoint folder")
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--num_train_epochs", type=float, default=5)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--eval_steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    data = load_dataset("imagefolder", data_dir=str(a.data))
    names = data["train"].features["label"].names
    model = AutoModelForImageClassification.from_pretrained(
        a.model, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True)
    cfg = resolve_data_config(pretrained_cfg=json.loads((a.model / "config.json").read_text())["pretrained_cfg"])
    normalize = transforms.Normalize(mean=cfg["mean"], std=cfg["std"])
    train_tf = transforms.Compose([transforms.RandomResizedCrop(a.size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    eval_tf = transforms.Compose([transforms.Resize(a.size), transforms.CenterCrop(a.size), transforms.ToTensor(),
                                  normalize])

    def with_tf(tf):
        def apply(batch):
            batch["pixel_values"] = [tf(image.convert("RGB")) for image in batch["image"]]
            return batch
        return apply

    data["train"].set_transform(with_tf(train_tf))
    data["test"].set_transform(with_tf(eval_tf))

    def collate(examples):
        return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
                "labels": torch.tensor([e["label"] for e in examples])}

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())}

    rows = Rows("eval_accuracy")
    args = TrainingArguments(
        output_dir=str(a.output_dir / "trainer"), learning_rate=a.learning_rate, num_train_epochs=a.num_train_epochs,
        per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=a.batch_size, seed=a.seed,
        eval_strategy="steps", eval_steps=a.eval_steps, save_strategy="no", logging_strategy="no",
        report_to="none", remove_unused_columns=False, dataloader_num_workers=0, use_cpu=True,
        disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["test"],
                      data_collator=collate, compute_metrics=accuracy, callbacks=[rows])
    train_and_write(trainer, rows, a.output_dir)


if __name__ == "__main__":
    main()
