"""LR scaling, warmup and schedules, counted in optimizer steps.

Why not torch's schedulers: none of them warms up from the reference LR as
Goyal et al. (2017) do, honours timm's per-group ``lr_scale`` (layer-wise
decay), and cycles Adam's beta1 and SGD's momentum for every policy. The
formulas follow the papers; the tests check one_cycle and cyclic against
``torch.optim.lr_scheduler.OneCycleLR`` / ``CyclicLR`` value for value.

The scheduler here is stepped by the engine once per optimizer step, never by
accelerate (whose prepared scheduler steps ``num_processes`` times).
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Any, Optional

import torch


def scale_lr(learning_rate: float, global_batch: int, reference_batch: Optional[int], rule: str) -> float:
    """The LR for ``global_batch`` given one stated at ``reference_batch`` (linear: Goyal et al. 2017)."""
    if reference_batch is None or rule == "none":
        return learning_rate
    ratio = global_batch / reference_batch
    return learning_rate * (ratio if rule == "linear" else math.sqrt(ratio))


@dataclasses.dataclass
class Schedule:
    """LR (as a factor of the peak) and momentum at each optimizer step ``t`` (0 = first update)."""

    kind: str
    total_steps: int
    warmup_steps: int = 0
    warmup_start: float = 0.0  # factor of the peak at t=0 of warmup
    min_lr_ratio: float = 0.0
    milestones: tuple = ()  # multistep, in optimizer steps
    decay_rate: float = 0.1
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal: str = "cos"
    cyclic_mode: str = "triangular"
    cyclic_base: float = 0.25  # lower bound as a factor of the peak
    cyclic_step_size: int = 1
    cyclic_gamma: float = 1.0
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def title(self) -> str:
        return f"{self.kind} schedule, {self.warmup_steps} warmup steps"

    def lr_factor(self, t: int) -> float:
        t = max(t, 0)
        if self.kind == "one_cycle":  # torch's OneCycleLR is undefined past its last step: hold the end
            return self._one_cycle(min(t, max(self.total_steps - 1, 0)))[0]
        start = self._after_warmup(self.warmup_steps)
        if t < self.warmup_steps:  # linear ramp, Goyal et al. Sec. 2.2
            begin = min(self.warmup_start, start)
            return begin + (start - begin) * t / self.warmup_steps
        return self._after_warmup(t)

    def momentum(self, t: int) -> Optional[float]:
        """Momentum / beta1, or None when this schedule leaves it alone."""
        if not self.cycle_momentum or self.kind not in ("one_cycle", "cyclic"):
            return None
        t = max(t, 0)
        if self.kind == "one_cycle":
            return self._one_cycle(min(t, max(self.total_steps - 1, 0)))[1]
        if t < self.warmup_steps:
            return self.max_momentum
        height = self._cyclic_height(t - self.warmup_steps)
        return self.max_momentum - (self.max_momentum - self.base_momentum) * height

    def _after_warmup(self, t: int) -> float:
        span = max(1, self.total_steps - self.warmup_steps)
        p = min(1.0, max(0.0, (t - self.warmup_steps) / span))
        m = self.min_lr_ratio
        if self.kind == "linear":
            return 1.0 - (1.0 - m) * p
        if self.kind == "cosine":
            return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * p))
        if self.kind == "constant":
            return 1.0
        if self.kind == "inverse_sqrt":  # Vaswani et al. 2017, peak at the end of warmup
            return math.sqrt(max(self.warmup_steps, 1) / max(t, self.warmup_steps, 1))
        if self.kind == "multistep":
            return self.decay_rate ** bisect.bisect_right(self.milestones, t)
        if self.kind == "cyclic":
            height = self._cyclic_height(t - self.warmup_steps)
            return self.cyclic_base + (1.0 - self.cyclic_base) * height
        raise ValueError(f"unknown schedule {self.kind}")

    def _cyclic_height(self, u: int) -> float:
        """Smith (2017): triangle wave in [0, 1] times the policy's amplitude scale."""
        s = self.cyclic_step_size
        cycle = math.floor(1 + u / (2 * s))
        x = abs(u / s - 2 * cycle + 1)
        scale = {"triangular": 1.0, "triangular2": 1.0 / 2 ** (cycle - 1),
                 "exp_range": self.cyclic_gamma ** u}[self.cyclic_mode]
        return max(0.0, 1.0 - x) * scale

    def _one_cycle(self, t: int) -> tuple[float, float]:
        """Smith & Topin (2018) as torch's OneCycleLR phases it: rise to the peak, anneal far below start."""
        start, low = 1.0 / self.div_factor, 1.0 / (self.div_factor * self.final_div_factor)
        rise_end = float(self.warmup_steps) - 1
        last = float(self.total_steps - 1)
        if t <= rise_end:
            pct = t / rise_end if rise_end > 0 else 1.0
            return self._interp(start, 1.0, pct), self._interp(self.max_momentum, self.base_momentum, pct)
        pct = (t - rise_end) / (last - rise_end) if last > rise_end else 1.0
        return self._interp(1.0, low, pct), self._interp(self.base_momentum, self.max_momentum, pct)

    def _interp(self, a: float, b: float, pct: float) -> float:
        if self.anneal == "cos":
            return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (b - a) * pct + a


@dataclasses.dataclass
class Restarted:
    """``first`` over the head-only steps, then ``second`` from its own start (its warmup included) at the
    unfreezing, as fastai's ``fine_tune`` runs two one-cycles: the backbone, untouched so far and with no
    optimizer state yet, starts at a low LR instead of wherever one schedule over the whole run has got to."""

    first: Schedule
    second: Schedule

    @property
    def kind(self) -> str:
        return self.second.kind

    @property
    def total_steps(self) -> int:
        return self.first.total_steps + self.second.total_steps

    @property
    def warmup_steps(self) -> int:
        """The fine-tuning phase's warmup: the one the backbone trains under."""
        return self.second.warmup_steps

    @property
    def warmup_start(self) -> float:
        return self.second.warmup_start

    def _phase(self, t: int) -> tuple[Schedule, int]:
        at = self.first.total_steps
        return (self.first, t) if t < at else (self.second, t - at)

    def lr_factor(self, t: int) -> float:
        schedule, u = self._phase(max(t, 0))
        return schedule.lr_factor(u)

    def momentum(self, t: int) -> Optional[float]:
        schedule, u = self._phase(max(t, 0))
        return schedule.momentum(u)

    def title(self) -> str:
        return (f"{self.kind} schedule restarted at the unfreezing (step {self.first.total_steps}), "
                f"{self.first.warmup_steps} + {self.second.warmup_steps} warmup steps")


@dataclasses.dataclass
class RangeTest:
    """The LR range test's sweep (Smith 2017), as factors of the peak: exponential from ``start`` to ``end``
    over ``steps`` optimizer steps; momentum left alone."""

    start: float
    end: float
    steps: int

    def lr_factor(self, t: int) -> float:
        return self.start * (self.end / self.start) ** (t / max(self.steps - 1, 1))

    def momentum(self, t: int) -> Optional[float]:
        return None


class Scheduler:
    """Applies a ``Schedule`` to an optimizer's groups; its state is one count, saved in fastft_state.json.

    The peak LR has one home, the optimizer: each group's ``initial_lr`` (set from its ``lr``
    when first scheduled, as torch's and timm's schedulers do). Every step sets
    ``lr = initial_lr * lr_scale * schedule factor``, ``lr_scale`` being timm's layer-wise decay.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: "Schedule | Restarted | RangeTest"):
        self.optimizer, self.schedule = optimizer, schedule
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.step_count = 0
        self._apply()

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def _apply(self) -> None:
        factor = self.schedule.lr_factor(self.step_count)
        momentum = self.schedule.momentum(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor * group.get("lr_scale", 1.0)
            if momentum is not None:
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                elif "momentum" in group:
                    group["momentum"] = momentum

    def peak_lr(self) -> float:
        """The LR the schedule's factors multiply (of the first group, before its lr_scale)."""
        return self.optimizer.param_groups[0]["initial_lr"]

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def last_momentum(self) -> Optional[float]:
        group = self.optimizer.param_groups[0]
        return group["betas"][0] if "betas" in group else group.get("momentum")

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = state["step_count"]
        self._apply()
