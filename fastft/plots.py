"""PNG plots in output_dir/plots: the LR (and momentum) schedule, loss and the main metric."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from fastft.schedules import Schedule  # noqa: E402


def plot_schedule(path: Path, schedule: Schedule, peak_lr: float) -> None:
    steps = list(range(schedule.total_steps))
    stride = max(1, len(steps) // 2000)
    steps = steps[::stride]
    momentum = [schedule.momentum(t) for t in steps]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(steps, [peak_lr * schedule.lr_factor(t) for t in steps], color="tab:blue")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate", color="tab:blue")
    ax.set_title(f"{schedule.kind} schedule, {schedule.warmup_steps} warmup steps")
    if momentum[0] is not None:
        ax2 = ax.twinx()
        ax2.plot(steps, momentum, color="tab:orange")
        ax2.set_ylabel("momentum / beta1", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(path: Path, train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], key: str,
                title: str) -> None:
    """One curve from train_log.jsonl (if it has ``key``) and one from metrics.jsonl."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    train_key = key.removeprefix("eval_")
    train = [(r["step"], r[train_key]) for r in train_rows if r.get(train_key) is not None]
    evals = [(r["step"], r[key]) for r in eval_rows if r.get(key) is not None]
    if train:
        ax.plot(*zip(*train), label=f"train {train_key}", alpha=0.8)
    if evals:
        ax.plot(*zip(*evals), marker="o", label=key)
    ax.set_xlabel("optimizer step")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(output_dir: Path, schedule: Schedule, peak_lr: float, train_rows: list[dict[str, Any]],
                eval_rows: list[dict[str, Any]], main_metric: str) -> list[Path]:
    folder = output_dir / "plots"
    folder.mkdir(exist_ok=True)
    paths = [folder / "lr_schedule.png", folder / "loss.png", folder / f"{main_metric.removeprefix('eval_')}.png"]
    plot_schedule(paths[0], schedule, peak_lr)
    plot_curves(paths[1], train_rows, eval_rows, "eval_loss", "loss")
    plot_curves(paths[2], train_rows, eval_rows, main_metric, main_metric)
    return paths
