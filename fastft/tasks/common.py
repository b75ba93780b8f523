"""Small pieces several tasks share: finding a dataset's columns, and classification outputs and accuracy."""
from __future__ import annotations

from typing import Any, Optional

import datasets
import torch
import torch.nn.functional as F

from fastft.errors import UserError


def find_column(ds: datasets.Dataset, name: Optional[str], candidates: tuple, field_name: str) -> str:
    """The column the recipe names (``field_name``), or the first of the usual names the dataset has."""
    if name is not None:
        if name not in ds.column_names:
            raise UserError(f"{field_name} {name!r} is not a column of the dataset; it has "
                            f"{', '.join(ds.column_names)}")
        return name
    for candidate in candidates:
        if candidate in ds.column_names:
            return candidate
    raise UserError(f"no {field_name.rsplit('_', 1)[0]} column found among {', '.join(ds.column_names)}; "
                    f"set {field_name}")


def classification_outputs(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a classifier's evaluation step returns for the engine to gather: per-sample loss and predictions."""
    logits = logits.float()
    return {"loss": F.cross_entropy(logits, labels, reduction="none"), "predictions": logits.argmax(-1),
            "references": labels}


def accuracy(metric: Any, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """``eval_accuracy`` of gathered ``classification_outputs`` through an ``evaluate`` accuracy module."""
    result = metric.compute(predictions=outputs["predictions"].tolist(), references=outputs["references"].tolist())
    return {"eval_accuracy": result["accuracy"]}
