"""Metrics through `evaluate`, from modules shipped inside fastft so they load offline.

``evaluate.load("accuracy")`` fetches its script from the Hub; a local module
folder goes through the same ``evaluate`` machinery without the network.
"""
from __future__ import annotations

from pathlib import Path

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
