"""Metrics through `evaluate`, from modules shipped inside fastft so they load offline.

``evaluate.load("accuracy")`` fetches its script from the Hub; a local module
folder goes through the same ``evaluate`` machinery without the network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import evaluate

from fastft.errors import UserError

MODULES = Path(__file__).parent / "metric_modules"


def load_metric(name: str) -> evaluate.EvaluationModule:
    """An ``evaluate`` metric by name, from fastft's bundled modules."""
    path = MODULES / name
    if not (path / f"{name}.py").is_file():
        valid = ", ".join(sorted(p.name for p in MODULES.iterdir() if p.is_dir() and not p.name.startswith("_")))
        raise UserError(f"no bundled metric {name!r}; available: {valid}")
    return evaluate.load(str(path))


LOWER_IS_BETTER = ("loss", "wer", "cer", "ter")  # error rates and losses; every other metric is a score


def higher_is_better(metric: str, override: Optional[bool] = None) -> bool:
    """Direction of ``metric`` (``eval_`` prefix or not); ``override`` is the recipe's greater_is_better."""
    if override is not None:
        return override
    return metric.removeprefix("eval_") not in LOWER_IS_BETTER


def resolve_best_metric(task: Any, args: Any) -> str:
    """metric_for_best_model as the task reports it (``accuracy`` -> ``eval_accuracy``, as in HF)."""
    name = args.metric_for_best_model or task.main_metric
    name = name if name.startswith("eval_") else f"eval_{name}"
    if name not in task.metric_names():
        raise UserError(f"metric_for_best_model {args.metric_for_best_model!r} is not reported by this task; use "
                        f"one of {', '.join(sorted(task.metric_names()))}")
    return name


def check_metric_names(task: Any, args: Any) -> None:
    """The recipe's target_metric and metric_for_best_model must be metrics the task reports."""
    if args.target_metric and args.target_metric not in task.metric_names():
        raise UserError(f"target_metric {args.target_metric!r} is not reported by this task; use one of "
                        f"{', '.join(sorted(task.metric_names()))}")
    resolve_best_metric(task, args)
