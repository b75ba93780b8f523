"""LR range test (Smith 2017; fastai's learning-rate finder) on the engine's own optimizer step.

The LR grows exponentially from ``lr_find_start`` to ``lr_find_end`` over
``lr_find_steps`` optimizer steps (stopping early once the loss diverges); the
smoothed loss against the LR goes to ``plots/lr_find.png`` and ``lr_find.json``
with suggested maxima for one-cycle, stated as ``learning_rate`` at the recipe's
``reference_batch_size`` (the sweep itself runs at the real global batch). Nothing else
in output_dir is touched.

The plot and the printed line give ONE suggestion, ``valley`` (fastai's default since
2.4): several lines on one plot left the user to pick, which is the job the sweep is
for. The other rules stay in lr_find.json.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
from matplotlib.figure import Figure

from fastft import output_folder
from fastft.batches import windows
from fastft.engine import Trainer
from fastft.errors import UserError
from fastft.launch import launch_state
from fastft.schedules import RangeTest, Scheduler

SUGGESTION = "valley"  # the rule the plot and the printed line go by


def suggestions(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """Candidate maximum LRs read off the smoothed loss curve.

    - ``valley``: about halfway into the longest stretch where the loss keeps falling
      (fastai's default suggestion), robust to a noisy curve;
    - ``steepest``: where the loss falls fastest per log-LR;
    - ``minimum_div_10``: a tenth of the LR at the lowest loss (Smith's rule of thumb).
    """
    n = len(losses)
    # A start that drifts down by a hair (a zero-initialised head barely moving at tiny LRs) is not
    # yet the valley: counted in, it dragged the pick 45x below the best LR of a fine-tuning sweep.
    fall = losses[0] - min(losses)
    first = next((i for i, loss in enumerate(losses) if losses[0] - loss > 0.05 * fall), 0)
    # Longest decreasing subsequence ending at each point (O(n^2), n is a few hundred).
    run = [1] * n
    for i in range(first + 1, n):
        run[i] = 1 + max((run[j] for j in range(first, i) if losses[j] > losses[i]), default=0)
    end = max(range(first, n), key=lambda i: (run[i], -i))
    start = end - run[end] + 1
    third = (end - start) / 3
    valley = start + int(third) + int(third / 2)
    logs = [math.log10(lr) for lr in lrs]
    slopes = [(losses[i + 1] - losses[i]) / (logs[i + 1] - logs[i]) for i in range(n - 1)]
    steepest = min(range(n - 1), key=lambda i: slopes[i]) if n > 1 else 0
    lowest = min(range(n), key=lambda i: losses[i])
    return {"valley": lrs[valley], "steepest": lrs[steepest], "minimum_div_10": lrs[lowest] / 10}


def lr_find_figure(lrs: list[float], losses: list[float], suggested: Optional[float], global_batch: int) -> Figure:
    """The smoothed loss against the LR, with the suggested LR marked on the curve and labelled once."""
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate at global batch {global_batch}")
    ax.set_ylabel("smoothed training loss")
    if suggested is not None:
        at = min(range(len(lrs)), key=lambda i: abs(math.log(lrs[i] / suggested)))
        ax.plot([lrs[at]], [losses[at]], "o", color="tab:red", label=f"suggested ({SUGGESTION}): {suggested:.2e}")
        ax.legend()
    ax.set_title("LR range test")
    fig.tight_layout()
    return fig


def summary_line(suggested: dict[str, float], steps: int, stated: str, plot: Path) -> str:
    """The printed result: the one suggestion first, then the other rules as asides."""
    if SUGGESTION not in suggested:
        return f"LR range test over {steps} steps: too few steps for a suggestion. Plot: {plot}"
    others = ", ".join(f"{k} {v:.3g}" for k, v in suggested.items() if k != SUGGESTION)
    return (f"LR range test over {steps} steps: suggested maximum LR for one_cycle: {suggested[SUGGESTION]:.3g} "
            f"({SUGGESTION} rule){stated}" + (f"; other rules in lr_find.json: {others}" if others else "")
            + f". Plot: {plot}")


def run_lr_find(task: Any, args: Any) -> dict[str, Any]:
    """Sweep the LR on the task's model and data through the engine's own step; returns what lr_find.json holds."""
    # It writes only lr_find.json and plots/lr_find.png, but not into someone else's folder.
    output_folder.check(Path(args.output_dir))
    started = time.perf_counter()
    trainer = Trainer(task, args)
    acc = trainer.accelerator
    peak = trainer.scheduler.peak_lr()
    sweep = Scheduler(trainer.optimizer, RangeTest(args.lr_find_start / peak, args.lr_find_end / peak,
                                                   args.lr_find_steps))
    lrs, losses, smooth, best = [], [], 0.0, math.inf
    trainer.model.train()
    batches = iter(())
    for t in range(args.lr_find_steps):
        window = next(batches, None)
        if window is None:  # the sweep may need more than one epoch of a small dataset
            trainer.train_loader.set_epoch(t)
            batches = windows(trainer.train_loader, args.gradient_accumulation_steps)
            window = next(batches)
        loss_sum, items, _ = trainer.step(window)
        loss_total, item_total = acc.reduce(torch.stack([loss_sum, items]), "sum").tolist()
        loss = loss_total / max(item_total, 1)
        smooth = 0.98 * smooth + 0.02 * loss  # fastai's exponential moving average, debiased below
        value = smooth / (1 - 0.98 ** (t + 1))
        lrs.append(peak * sweep.schedule.lr_factor(t))
        losses.append(value)
        best = min(best, value)
        if not math.isfinite(value) or value > 4 * best:  # diverged: the rest of the sweep says nothing
            break
        sweep.step()
    found = suggestions(lrs, losses) if len(lrs) > 2 else {}
    # The sweep ran at this global batch; the recipe states learning_rate at reference_batch_size, so
    # the suggestions are divided back by the batch scaling: they go into learning_rate as they are.
    scale = trainer.plan.scaled_learning_rate / trainer.plan.learning_rate
    result = {"lrs": lrs, "losses": losses, "suggested": {k: v / scale for k, v in found.items()},
              "suggested_at_global_batch": found, "global_batch_size": trainer.plan.global_batch_size,
              "reference_batch_size": trainer.plan.reference_batch_size, "steps_run": len(lrs),
              "suggestion": SUGGESTION}
    # The sweep's model, optimizer state and loaders go before anything else is built (learning_rate auto
    # builds the run's own next); its wall time, model loading included, is what a user waits for.
    del trainer
    acc.free_memory()
    result["runtime_s"] = time.perf_counter() - started
    if acc.is_main_process:
        out = Path(args.output_dir)
        (out / "plots").mkdir(parents=True, exist_ok=True)
        (out / "lr_find.json").write_text(json.dumps(result, indent=1))
        plot = out / "plots" / "lr_find.png"
        lr_find_figure(lrs, losses, found.get(SUGGESTION), result["global_batch_size"]).savefig(plot, dpi=100)
        stated = (f" (learning_rate at reference batch {result['reference_batch_size']}, which fastft scales "
                  f"by {scale:.3g} for global batch {result['global_batch_size']})" if scale != 1 else "")
        acc.print(summary_line(result["suggested"], len(lrs), stated, plot))
    return result


def auto_learning_rate(task: Any, args: Any) -> tuple[Optional[float], float]:
    """For ``learning_rate: auto``: the LR the range test at the run's start picks (as ``learning_rate``, at
    reference_batch_size) and the seconds it took; (None, 0) for a recipe that states its LR.

    The run is then built afresh from the recipe's seed, so it starts from the weights, data order and random
    state the sweep started from: it equals a run given that LR. A resumed run reuses the pick its start
    saved in lr_find.json (the checkpoint's plan holds the LR it scaled, and refuses another).
    """
    if args.learning_rate != "auto":
        return None, 0.0
    path = Path(args.output_dir) / "lr_find.json"
    if output_folder.resume_candidates(args):
        try:
            saved = json.loads(path.read_text())
            picked, seconds = float(saved["suggested"][saved["suggestion"]]), float(saved.get("runtime_s", 0.0))
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"learning_rate auto: {path} holds no LR range test pick, and this run resumes from a "
                            f"checkpoint trained at the LR its start picked there; set learning_rate to that LR, or "
                            f"start afresh with --overwrite_output_dir true") from None
        launch_state().print(f"learning_rate auto: resuming at {picked:.4g}, the LR range test's pick at this "
                             f"run's start ({path})")
        return picked, seconds
    result = run_lr_find(task, args)
    if SUGGESTION not in result["suggested"]:
        raise UserError(f"learning_rate auto: the LR range test stopped after {result['steps_run']} steps, too "
                        f"few to pick an LR (see {path.parent / 'plots' / 'lr_find.png'}); set learning_rate, or "
                        f"lower lr_find_start or raise lr_find_steps")
    picked = result["suggested"][SUGGESTION]
    launch_state().print(f"learning_rate auto: training at {picked:.4g} (the {SUGGESTION} rule); the range test "
                         f"took {result['runtime_s']:.1f}s, counted in the run's time")
    return picked, result["runtime_s"]
