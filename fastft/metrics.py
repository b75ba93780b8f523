"""Metrics through `evaluate`, from modules shipped inside fastft so they load offline.

``evaluate.load("accuracy")`` fetches its script from the Hub; a local module
folder goes through the same ``evaluate`` machinery without the network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

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
