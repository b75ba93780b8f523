"""One run, as the recipe says: a dry run, an LR range test, or training with the out-of-memory retry.

``fastft.cli`` (the ``fastft`` command and ``scripts/``) and ``fastft.api`` parse
recipes and land here; ``fastft.engine.Trainer`` does the training.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from accelerate.utils import find_executable_batch_size

from fastft import output_folder, reporting
from fastft.arguments import parse_args
from fastft.config import TrainingArguments, check_training_args, to_dict
from fastft.engine import Trainer
from fastft.errors import exit_on_user_error
from fastft.launch import launch_state
from fastft.lr_find import auto_learning_rate, run_lr_find
from fastft.metrics import check_metric_names
from fastft.optim import check_optimizer_name
from fastft.plan import make_plan
from fastft.tasks.base import Task
from fastft.tricks import plan_line


def main(task_cls: Callable[[Any, TrainingArguments], Task], task_args_cls: type,
         argv: Optional[Sequence[str]] = None) -> Optional[dict]:
    """Parse a command line for ``task_cls`` and run it, errors as one line (``fastft.cli`` does the same
    for the ``fastft`` command and the scripts, parsing before torch is imported)."""
    return exit_on_user_error(lambda: run(task_cls, *parse_args([task_args_cls, TrainingArguments], argv)))()


def run(task_cls: Callable[[Any, TrainingArguments], Task], task_args: Any,
        args: TrainingArguments) -> Optional[dict]:
    """Dry-run, LR range test or training, as ``args`` says; a user mistake raises UserError."""
    check_training_args(args)
    task = task_cls(task_args, args)
    check_metric_names(task, args)
    if args.dry_run:
        launch_state().print(dry_run(task, args))
        return None
    if args.lr_find:
        return run_lr_find(task, args)
    return train(task, args)


def dry_run(task: Task, args: TrainingArguments) -> str:
    """The resolved plan for this launch (world size from accelerate), without training."""
    state = launch_state()
    # What training would refuse in its first seconds is refused here too, without loading weights.
    task.check_sources()
    check_optimizer_name(args.optim)
    out = Path(args.output_dir)
    output_folder.check(out)
    world = args.world_size or state.num_processes
    # token-budget batches: their number follows the token lengths, so the training set is read
    token_batches = task.token_batches(task.load_data()[0]) if args.batch_by_tokens else None
    plan = make_plan(args, task.num_train_samples(), world, task.drop_last, token_batches=token_batches)
    precision = args.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    lines = [plan.describe(), f"mixed precision:            {precision or 'no'}",
             f"tricks:                     {plan_line(to_dict(task.task_args, args))}"] + task.describe()
    if (out / reporting.FINAL).exists() and not args.overwrite_output_dir:
        lines.append(f"note: output_dir {out} holds a finished run; training it needs --overwrite_output_dir true")
    return "\n".join(lines)


def train(task: Task, args: TrainingArguments) -> dict[str, Any]:
    """Train ``task`` as the recipe says and return the final metrics."""
    if not args.auto_find_batch_size:
        return _fit(task, args)
    # On out-of-memory, retry with a smaller per-device batch and more accumulation, keeping the
    # global batch (and so the scaled LR and the schedule) unchanged.
    per_process = args.per_device_train_batch_size * args.gradient_accumulation_steps
    divisors = [d for d in range(1, per_process + 1) if per_process % d == 0]
    current = args.per_device_train_batch_size

    def smaller() -> int:
        nonlocal current
        current = max([d for d in divisors if d <= current // 2] or [0])
        return current

    @find_executable_batch_size(starting_batch_size=current, reduce_batch_size_fn=smaller)
    def attempt(batch_size: int) -> dict[str, Any]:
        trial = dataclasses.replace(args, per_device_train_batch_size=batch_size,
                                    gradient_accumulation_steps=per_process // batch_size)
        if batch_size != args.per_device_train_batch_size:
            launch_state().print(f"auto_find_batch_size: out of memory; retrying with per-device batch "
                                 f"{batch_size} x {trial.gradient_accumulation_steps} accumulation steps")
        return _fit(task, trial)

    return attempt()


def _fit(task: Task, args: TrainingArguments) -> dict[str, Any]:
    """Build the run and train it; with learning_rate auto, the LR range test first (again after an
    out-of-memory retry, at the new per-device batch)."""
    learning_rate, lr_find_s = auto_learning_rate(task, args)
    return Trainer(task, args, learning_rate, lr_find_s).fit()
