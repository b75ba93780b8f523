"""Small pieces several tasks share: Hub datasets, picking splits and columns, classification outputs and accuracy."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import datasets
import torch
import torch.nn.functional as F

from fastft.errors import UserError

# Train-set sizes of well-known Hub datasets by (name, configuration), so a dry run plans without downloading
# them; configuration None: whichever the recipe names.
KNOWN_TRAIN_SIZES = {
    **{(name, None): 50_000 for name in ("cifar10", "uoft-cs/cifar10", "cifar100", "uoft-cs/cifar100")},
    ("imagenet-1k", None): 1_281_167, ("ILSVRC/imagenet-1k", None): 1_281_167,
    ("food101", None): 75_750, ("ethz/food101", None): 75_750,
    ("zalando-datasets/fashion_mnist", None): 60_000, ("fashion_mnist", None): 60_000,
    ("wmt16", "ro-en"): 610_320, ("wmt/wmt16", "ro-en"): 610_320,
    ("wmt16", "de-en"): 4_548_885, ("wmt/wmt16", "de-en"): 4_548_885,
    ("wmt14", "de-en"): 4_508_785, ("wmt/wmt14", "de-en"): 4_508_785,
    ("google/speech_commands", "v0.02"): 84_848, ("speech_commands", "v0.02"): 84_848,
    ("mozilla-foundation/common_voice_11_0", "hi"): 4_361,
}


def known_train_size(name: Optional[str], config: Optional[str], max_train_samples: Optional[int]) -> Optional[int]:
    """Train-set size of a dataset of ``KNOWN_TRAIN_SIZES``, cut to max_train_samples; None for any other."""
    known = KNOWN_TRAIN_SIZES.get((name, config), KNOWN_TRAIN_SIZES.get((name, None)))
    return None if known is None else min(known, max_train_samples or known)


def load_hub_dataset(name: str, config: Optional[str], data_dir: Optional[str],
                     alternatives: str) -> datasets.DatasetDict:
    """``datasets.load_dataset`` of a Hub dataset; a failure (offline, no such dataset) is one line that ends
    with the task's ``alternatives``."""
    try:
        return datasets.load_dataset(name, config, data_dir=data_dir)
    except (FileNotFoundError, ConnectionError, OSError, ValueError,
            datasets.exceptions.DatasetGenerationError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise UserError(f"could not load dataset_name {name!r} ({type(err).__name__}: {first}); use "
                        f"{alternatives}") from None


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


def named_split(raw: datasets.DatasetDict, args: Any, field_name: str, dataset: str) -> datasets.Dataset:
    """The split the recipe names in ``field_name`` (train_split or eval_split)."""
    split = getattr(args, field_name)
    if split not in raw:
        raise UserError(f"{field_name} {split!r} is not in dataset {dataset}; it has {', '.join(raw)}")
    return raw[split]


def eval_split_name(raw: datasets.DatasetDict, args: Any) -> Optional[str]:
    """The split with_eval_split evaluates on: the recipe's eval_split, else validation, else test; None when
    it holds out part of train instead."""
    if args.eval_split is not None:
        return args.eval_split
    return next((name for name in ("validation", "test") if name in raw), None)


def describe_eval_split(raw: datasets.DatasetDict, args: Any) -> str:
    """The evaluation split in words, for the model card: e.g. ``test`` or ``train (15% held out)``."""
    split = eval_split_name(raw, args)
    return split if split is not None else f"{args.train_split} ({args.train_val_split * 100:g}% held out)"


def with_eval_split(raw: datasets.DatasetDict, train: datasets.Dataset, args: Any, seed: int, dataset: str,
                    limits: tuple[Optional[int], Optional[int]],
                    label_column: Optional[str] = None) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, evaluation): the recipe's eval_split, else the dataset's validation or test split, else a
    deterministic train_val_split share of train, stratified when ``label_column`` holds classes; each
    cut to a seeded random subset of at most ``limits`` (max_train_samples, max_eval_samples) rows."""
    if args.eval_split is not None:
        named_split(raw, args, "eval_split", dataset)
    split = eval_split_name(raw, args)
    if split == args.train_split:
        warnings.warn(f"the eval split is the training split ({split}): its metrics measure memorisation, not "
                      f"generalisation; set eval_split to another split", stacklevel=2)
    if split is not None:
        evaluation = raw[split]
    else:
        stratify = (label_column if label_column and isinstance(train.features[label_column], datasets.ClassLabel)
                    else None)
        parts = train.train_test_split(test_size=args.train_val_split, seed=seed, stratify_by_column=stratify)
        train, evaluation = parts["train"], parts["test"]
    return tuple(ds.shuffle(seed=seed).select(range(min(limit, len(ds)))) if limit else ds
                 for ds, limit in zip((train, evaluation), limits))


def plan_lines(rows: dict[str, str]) -> list[str]:
    """A task's lines of the dry-run plan (``label: value``), aligned with the engine's."""
    return [f"{label + ':':<28}{value}" for label, value in rows.items()]


def classification_outputs(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a classifier's evaluation step returns for the engine to gather: per-sample loss and predictions."""
    logits = logits.float()
    return {"loss": F.cross_entropy(logits, labels, reduction="none"), "predictions": logits.argmax(-1),
            "references": labels}


def accuracy(metric: Any, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """``eval_accuracy`` of gathered ``classification_outputs`` through an ``evaluate`` accuracy module."""
    result = metric.compute(predictions=outputs["predictions"].tolist(), references=outputs["references"].tolist())
    return {"eval_accuracy": result["accuracy"]}
