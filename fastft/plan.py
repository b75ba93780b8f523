"""The resolved training plan: global batch, scaled LR, warmup and total optimizer steps.

Everything here is derived from the recipe, the dataset size and the number of
processes, so ``--dry_run`` prints exactly what training will do.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

from fastft.batches import TokenBudgetBatches
from fastft.config import TrainingArguments
from fastft.errors import UserError
from fastft.schedules import Restarted, Schedule, scale_lr


@dataclasses.dataclass
class TrainPlan:
    num_processes: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    global_batch_size: int
    num_train_samples: int
    batches_per_epoch: int  # per process
    steps_per_epoch: int  # optimizer steps
    total_steps: int
    num_epochs: float
    warmup_steps: int
    learning_rate: float  # as stated in the recipe
    reference_batch_size: int | None
    scaled_learning_rate: float
    schedule: Schedule | Restarted
    model_ema_decay: float | None = None  # None: no weight averaging
    model_ema_warmup: bool = False
    max_batch_tokens: int | None = None  # batch_by_tokens: each batch's budget of padded tokens
    # recipe: as the recipe states it; lr_find: learning_rate auto, picked by the range test at the start;
    # pending: learning_rate auto before that test (its own plan, or a dry run's)
    learning_rate_source: str = "recipe"

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("schedule")
        out["lr_scheduler_type"] = self.schedule.kind
        return out

    def describe(self) -> str:
        s = self.schedule
        ref = (f"{self.learning_rate:g} at reference batch {self.reference_batch_size}"
               if self.reference_batch_size else f"{self.learning_rate:g} (no LR scaling)")
        scaled = f"{self.scaled_learning_rate:.6g}"
        marks = {0, self.warmup_steps, self.total_steps // 2, self.total_steps - 1}
        if isinstance(s, Restarted):  # the first phase's end and the restart's peak
            marks = {0, s.first.warmup_steps, s.first.total_steps - 1, s.first.total_steps,
                     s.first.total_steps + s.second.warmup_steps, self.total_steps - 1}
        checkpoints = sorted(marks)
        points = ", ".join(f"step {t}: {self.scaled_learning_rate * s.lr_factor(t):.4g}" for t in checkpoints
                           if 0 <= t < self.total_steps)
        if self.learning_rate_source == "lr_find":
            ref += " (learning_rate auto: found by the LR range test at the start)"
        pending = self.learning_rate_source == "pending"
        if pending:  # the peak is not known yet: the schedule as its fractions
            ref = scaled = "auto: the LR range test at the run's start picks it (its valley rule)"
            points = ", ".join(f"step {t}: {s.lr_factor(t):.4g} x peak" for t in checkpoints if 0 <= t < self.total_steps)
        lines = [
            f"world size (processes):     {self.num_processes}",
            f"per-device batch:           {self.per_device_train_batch_size}"
            + (f" (the mean: batches of similar lengths, up to {self.max_batch_tokens} padded tokens each)"
               if self.max_batch_tokens else ""),
            f"gradient accumulation:      {self.gradient_accumulation_steps}",
            f"global batch:               {self.global_batch_size}",
            f"training samples:           {self.num_train_samples}",
            f"optimizer steps per epoch:  {self.steps_per_epoch}",
            f"total optimizer steps:      {self.total_steps} ({self.num_epochs:.3g} epochs)",
            f"learning rate (recipe):     {ref}",
            f"learning rate (scaled):     {scaled}",
            f"warmup steps:               {self.warmup_steps}"
            + (f" (from {s.warmup_start * self.scaled_learning_rate:.4g})" if s.warmup_start and not pending
               else f" (from {s.warmup_start:.4g} x peak)" if s.warmup_start else ""),
            f"schedule:                   {s.kind}; LR at {points}",
        ]
        if isinstance(s, Restarted):
            lines.insert(-1, f"schedule restarted:         at step {s.first.total_steps} (the unfreezing), warming "
                             f"up over {s.second.warmup_steps}; the head-only steps warm up over "
                             f"{s.first.warmup_steps}")
        if s.momentum(0) is not None:
            lines.append(f"momentum/beta1 cycled:      {s.momentum(0):g} -> "
                         f"{min(s.momentum(t) for t in range(0, self.total_steps, max(1, self.total_steps // 200)))}"
                         f" at the LR peak")
        if self.model_ema_decay is not None:
            ramp = " (ramped up as 1 - step^(-2/3))" if self.model_ema_warmup else ""
            lines.append(f"weight EMA (evaluated, saved): decay {self.model_ema_decay:g}{ramp}")
        return "\n".join(lines)


def batches_per_process(num_samples: int, batch_size: int, num_processes: int, drop_last: bool,
                        num_batches: int | None = None) -> int:
    """Batches each process sees per epoch, as accelerate shards with even_batches=True; ``num_batches``:
    an epoch's batches on all processes where a batch sampler sets them (batch_by_tokens)."""
    if num_batches is not None:
        total = num_batches
    else:
        total = num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)
    return total // num_processes if drop_last else math.ceil(total / num_processes)


def make_plan(args: TrainingArguments, num_train_samples: int, num_processes: int,
              drop_last: bool = False, learning_rate: float | None = None,
              token_batches: TokenBudgetBatches | None = None) -> TrainPlan:
    """Resolve steps, warmup, LR and schedule for this dataset and world size.

    ``learning_rate`` is what the LR range test found for a recipe's ``learning_rate: auto``; without it such
    a plan is the range test's own (its LR factors apply to a peak of 1) and says the peak is not yet known.
    ``token_batches`` (batch_by_tokens) sets the number of batches an epoch has.
    """
    auto = args.learning_rate == "auto"
    stated = learning_rate if learning_rate is not None else 1.0 if auto else args.learning_rate
    batches = batches_per_process(num_train_samples, args.per_device_train_batch_size, num_processes, drop_last,
                                  len(token_batches) if token_batches is not None else None)
    # a global batch must fit in the data (as drop_last already demands); else LR scaling assumes samples
    # that are not there, and even_batches would pad every process's batch with repeats
    if args.per_device_train_batch_size * num_processes > num_train_samples:
        raise UserError(f"per_device_train_batch_size {args.per_device_train_batch_size} x {num_processes} "
                        f"processes is larger than the {num_train_samples} training samples; lower it")
    steps_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
    if args.max_steps > 0:
        total = args.max_steps
    else:
        total = max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    freeze_steps = args.freeze_epochs * steps_per_epoch
    if args.restart_schedule_at_unfreeze and freeze_steps >= total:
        raise UserError(f"restart_schedule_at_unfreeze: freeze_epochs ({args.freeze_epochs}) covers the whole run "
                        f"({total} steps), so no schedule is left to restart; train longer or unset it")
    if args.freeze_epochs and freeze_steps >= total:  # a linear probe, if meant
        warnings.warn(f"freeze_epochs ({args.freeze_epochs}) covers the whole run ({total / steps_per_epoch:g} "
                      f"epochs): only the head trains, the backbone never does", stacklevel=2)
    global_batch = args.per_device_train_batch_size * num_processes * args.gradient_accumulation_steps
    scaled = scale_lr(stated, global_batch, args.reference_batch_size, args.lr_scaling)
    if args.restart_schedule_at_unfreeze:  # each phase planned as a run of its own
        schedule: Schedule | Restarted = Restarted(_schedule(args, freeze_steps, steps_per_epoch, stated, scaled),
                                                   _schedule(args, total - freeze_steps, steps_per_epoch, stated,
                                                             scaled))
    else:
        schedule = _schedule(args, total, steps_per_epoch, stated, scaled)
    return TrainPlan(
        num_processes=num_processes, per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, global_batch_size=global_batch,
        num_train_samples=num_train_samples, batches_per_epoch=batches, steps_per_epoch=steps_per_epoch,
        total_steps=total, num_epochs=total / steps_per_epoch, warmup_steps=schedule.warmup_steps,
        learning_rate=stated, reference_batch_size=args.reference_batch_size,
        scaled_learning_rate=scaled, schedule=schedule,
        model_ema_decay=args.model_ema_decay if args.model_ema else None, model_ema_warmup=args.model_ema_warmup,
        max_batch_tokens=token_batches.max_tokens if token_batches is not None else None,
        learning_rate_source=("lr_find" if learning_rate is not None else "pending") if auto else "recipe",
    )


def _schedule(args: TrainingArguments, total: int, steps_per_epoch: int, stated: float, scaled: float) -> Schedule:
    """The recipe's schedule over ``total`` optimizer steps (a warmup ratio is of these steps)."""
    if args.warmup_steps < 1:
        warmup = round(args.warmup_steps * total)
    elif float(args.warmup_steps).is_integer():
        warmup = int(args.warmup_steps)
    else:
        raise UserError(f"warmup_steps must be a whole number of steps or a ratio < 1, got {args.warmup_steps}")
    if args.lr_scheduler_type == "one_cycle" and warmup == 0:
        warmup = max(1, round(args.one_cycle_pct_start * total))
    if warmup >= total and args.lr_scheduler_type != "constant":
        raise UserError(f"warmup_steps ({warmup}) must be fewer than the "
                        + (f"optimizer steps of each phase ({total})" if args.restart_schedule_at_unfreeze
                           else f"total optimizer steps ({total})"))
    return Schedule(
        kind=args.lr_scheduler_type, total_steps=total, warmup_steps=warmup,
        # Goyal et al. warm up from the reference LR to the scaled one; otherwise from 0.
        warmup_start=stated / scaled if scaled > stated else 0.0,
        min_lr_ratio=args.min_lr_ratio,
        milestones=tuple(sorted(round(float(e) * steps_per_epoch) for e in args.lr_decay_epochs)),  # for bisect
        decay_rate=args.lr_decay_rate, div_factor=args.one_cycle_div_factor,
        final_div_factor=args.one_cycle_final_div_factor, anneal=args.one_cycle_anneal,
        cyclic_mode=args.cyclic_mode, cyclic_base=args.cyclic_base_lr_ratio,
        cyclic_step_size=args.cyclic_step_size or 2 * steps_per_epoch, cyclic_gamma=args.cyclic_gamma,
        cycle_momentum=args.cycle_momentum, base_momentum=args.base_momentum, max_momentum=args.max_momentum,
    )
