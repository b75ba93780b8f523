"""PNG plots in output_dir/plots: the LR (and momentum) schedule, loss and the main metric.

Loss and metric are drawn twice side by side, against optimizer steps and against
wall time (``elapsed_s``), since a benchmark is judged by time as much as by steps.
The small ``*_text``/``*_note`` helpers decide what the plots say; tests check them
and the Figure objects, not pixels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fastft.schedules import Restarted, Schedule  # noqa: E402

X_AXES = (("step", "optimizer step"), ("elapsed_s", "wall time since the start (s)"))
ONE_EVALUATION = "one evaluation: set eval_strategy steps for a curve"
NO_EVALUATION = "no evaluation logged (eval_strategy no?)"


def plot_schedule(path: Path, schedule: Schedule | Restarted, peak_lr: float) -> None:
    steps = list(range(schedule.total_steps))
    stride = max(1, len(steps) // 2000)
    steps = steps[::stride]
    momentum = [schedule.momentum(t) for t in steps]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(steps, [peak_lr * schedule.lr_factor(t) for t in steps], color="tab:blue")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate", color="tab:blue")
    ax.set_title(schedule.title())
    if momentum[0] is not None:
        ax2 = ax.twinx()
        ax2.plot(steps, momentum, color="tab:orange")
        ax2.set_ylabel("momentum / beta1", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def loss_text(label_smoothing: float = 0.0, soft_targets: bool = False) -> tuple[str, str]:
    """(title, train-curve label) of the loss plot. A smoothed or soft-target train loss sits well above
    the plain cross-entropy of evaluation even on a perfect model, so the plot says which one it is."""
    extras = ([f"label smoothing {label_smoothing:g}"] if label_smoothing > 0 else []) + \
             (["mixup/cutmix soft targets"] if soft_targets else [])
    if not extras:
        return "loss", "train loss"
    added = " and ".join(extras)
    return f"loss (train loss includes {added}; eval loss does not)", f"train loss (with {added})"


def target_line(key: str, target_metric: Optional[str], target_value: Optional[float]) -> Optional[float]:
    """The target to draw on the plot of ``key``: only the run's target_metric has one."""
    if target_metric is None or target_value is None:
        return None
    return target_value if target_metric.removeprefix("eval_") == key.removeprefix("eval_") else None


def evaluation_note(evaluations: int, has_train_curve: bool) -> Optional[str]:
    """What to say when the plot has no curve to show: a lone point must not pass for a trend."""
    if has_train_curve or evaluations > 1:
        return None
    return ONE_EVALUATION if evaluations == 1 else NO_EVALUATION


def curves_figure(train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], key: str, title: str,
                  train_label: Optional[str] = None, target: Optional[float] = None) -> Figure:
    """``key`` from metrics.jsonl (and its train_log.jsonl twin, if logged) against steps and wall time."""
    train_key = key.removeprefix("eval_")
    fig = Figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    count, has_train = 0, False
    for ax, (x, x_label) in zip(axes, X_AXES):
        train = [(r[x], r[train_key]) for r in train_rows if r.get(train_key) is not None and r.get(x) is not None]
        evals = [(r[x], r[key]) for r in eval_rows if r.get(key) is not None and r.get(x) is not None]
        if train:
            has_train = True
            ax.plot(*zip(*train), label=train_label or f"train {train_key}", alpha=0.8)
        if evals:
            ax.plot(*zip(*evals), marker="o", label=key)
        count = max(count, len(evals))
        if target is not None:
            ax.axhline(target, linestyle="--", color="tab:red", label=f"target {target:g}")
        ax.set_xlabel(x_label)
    axes[0].set_title("against optimizer steps")
    axes[1].set_title("against wall time")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize="small")
    fig.suptitle(title)
    note = evaluation_note(count, has_train)
    if note:
        fig.text(0.5, 0.02, note, ha="center", style="italic", gid="note")
    fig.tight_layout(rect=(0, 0.06 if note else 0, 1, 1))
    return fig


def curve_figures(train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], main_metric: str,
                  target_metric: Optional[str] = None, target_value: Optional[float] = None,
                  label_smoothing: float = 0.0, soft_targets: bool = False) -> dict[str, Figure]:
    """loss.png and <main metric>.png as Figures, by file name."""
    title, train_label = loss_text(label_smoothing, soft_targets)
    return {"loss.png": curves_figure(train_rows, eval_rows, "eval_loss", title, train_label,
                                      target_line("eval_loss", target_metric, target_value)),
            f"{main_metric.removeprefix('eval_')}.png": curves_figure(
                train_rows, eval_rows, main_metric, main_metric, None,
                target_line(main_metric, target_metric, target_value))}


def write_plots(output_dir: Path, schedule: Schedule | Restarted, peak_lr: float, train_rows: list[dict[str, Any]],
                eval_rows: list[dict[str, Any]], main_metric: str, *, target_metric: Optional[str] = None,
                target_value: Optional[float] = None, label_smoothing: float = 0.0,
                soft_targets: bool = False) -> list[Path]:
    """lr_schedule.png, loss.png and <main metric>.png; ``soft_targets``: mixup or cutmix was on."""
    folder = output_dir / "plots"
    folder.mkdir(exist_ok=True)
    paths = [folder / "lr_schedule.png"]
    plot_schedule(paths[0], schedule, peak_lr)
    for name, fig in curve_figures(train_rows, eval_rows, main_metric, target_metric, target_value,
                                   label_smoothing, soft_targets).items():
        fig.savefig(folder / name, dpi=100)
        paths.append(folder / name)
    return paths
