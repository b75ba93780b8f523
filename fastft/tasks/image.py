"""Image classification: HF datasets in, timm models (pretrained, new head) out."""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional

import datasets
import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

from fastft.config import TrainingArguments
from fastft.errors import UserError
from fastft.feature_cache import FrozenFeatures, head_only
from fastft.image_models import (create_image_classifier, head_of, image_data_config, model_family,
                                 save_image_classifier)
from fastft.metrics import load_metric
from fastft.offline import image as image_assets
from fastft.regularization import MixupCutmix, classification_loss
from fastft.task_fields import ImageArguments
from fastft.tasks.base import Task
from fastft.tasks.common import (accuracy, classification_outputs, describe_eval_split, find_column,
                                 known_train_size, load_hub_dataset, named_split, plan_lines,
                                 with_eval_split)

IMAGE_COLUMNS = ("image", "img", "pixel_values", "jpg", "png")
LABEL_COLUMNS = ("label", "labels", "fine_label", "cls", "class")


class _Images(torch.utils.data.Dataset):
    """Decodes and transforms one example at a time (so workers share the Arrow table).

    Images are decoded here, not by datasets, so an unreadable file can be named, and
    skipped (``None``, dropped by ``collate``) when the recipe says ``on_bad_image: skip``.
    """

    def __init__(self, ds: datasets.Dataset, image_column: str, label_column: str, transform: Any, skip_bad: bool,
                 probe: Optional[tuple[Any, torch.Tensor]] = None):
        self.ds = ds.cast_column(image_column, datasets.Image(decode=False))
        self.image_column, self.label_column, self.transform, self.skip_bad = image_column, label_column, \
            transform, skip_bad
        self.skipped = 0
        # cache_frozen_features: the un-augmented transform and which images' features are cached, used in
        # the head-only epochs; items are then (pixels or None if cached, label, index)
        self.probe, self.head_only = probe, False
        self.labels = ds[label_column] if probe else None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Optional[tuple]:
        if not self.head_only:
            return self._decoded(i, self.transform)
        transform, cached = self.probe
        if cached[i]:
            return None, int(self.labels[i]), i
        item = self._decoded(i, transform)
        return item if item is None else (*item, i)

    def _decoded(self, i: int, transform: Any) -> Optional[tuple[torch.Tensor, int]]:
        from PIL import Image

        row = self.ds[i]
        image = row[self.image_column]
        source = image.get("path") or f"example {i}"
        try:
            pil = Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"])
            pixels = pil.convert("RGB")
        except (OSError, ValueError, SyntaxError) as err:  # PIL's ways of saying "not an image"
            if not self.skip_bad:
                raise UserError(f"cannot read image {source} ({type(err).__name__}); fix or remove it, or set "
                                f"on_bad_image: skip") from None
            self.skipped += 1
            warnings.warn(f"skipping unreadable image {source} ({self.skipped} so far)", stacklevel=2)
            return None
        return transform(pixels), int(row[self.label_column])


def _kind(feature: Any) -> str:
    """A column's type in words: int64, string, Image, ..."""
    return getattr(feature, "dtype", None) or type(feature).__name__


def _check_auto_augment(policy: Optional[str]) -> None:
    """timm rejects an unknown policy with a bare assertion deep in create_transform: build it once here."""
    if not policy:
        return
    from timm.data import create_transform

    try:
        create_transform(input_size=32, is_training=True, auto_augment=policy)
    except (AssertionError, ValueError, KeyError, IndexError) as err:
        raise UserError(f"auto_augment {policy!r} is not a timm policy ({str(err) or type(err).__name__}); use e.g. "
                        f"rand-m9-mstd0.5, augmix-m5-w4-d2, trivialaugwide, original, v0 or 3a") from None


class ImageTask(Task):
    main_metric = "eval_accuracy"
    pipeline_tag = "image-classification"

    def __init__(self, task_args: ImageArguments, args: TrainingArguments):
        super().__init__(task_args, args)
        if not task_args.model_name_or_path:
            raise UserError("model_name_or_path is required: a timm name, Hub id, local folder or fastft: asset")
        _check_auto_augment(task_args.auto_augment)
        self.label_names: Optional[list[str]] = None
        self.mixup: Optional[MixupCutmix] = None
        self.frozen: Optional[FrozenFeatures] = None  # cache_frozen_features: the head-only epochs' features
        if task_args.cache_frozen_features:
            if not args.freeze_epochs:
                raise UserError("cache_frozen_features caches what the head sees during freeze_epochs: set "
                                "freeze_epochs (e.g. 1), or drop cache_frozen_features")
            if args.peft != "none" or args.torch_compile:
                raise UserError("cache_frozen_features trains the plain model's classifier on its own: it does not "
                                "combine with peft or torch_compile; drop one")

    # -- data --------------------------------------------------------------------------
    def _load_raw(self) -> datasets.DatasetDict:
        a = self.task_args
        if image_assets.is_asset(a.dataset_name):
            return image_assets.dataset_asset(a.dataset_name)
        if a.dataset_name == "imagefolder":
            if not a.data_dir or not Path(a.data_dir).is_dir():
                raise UserError(f"dataset_name imagefolder needs data_dir, a folder with train/ and test/ or "
                                f"validation/ class folders; got {a.data_dir!r}")
            try:
                return datasets.load_dataset("imagefolder", data_dir=a.data_dir)
            except FileNotFoundError:  # datasets' EmptyDatasetError: no image files at all
                raise UserError(f"data_dir {a.data_dir} holds no image files; imagefolder reads "
                                f"data_dir/train/<class>/<image> (and test/ or validation/)") from None
        return load_hub_dataset(a.dataset_name, a.dataset_config_name, a.data_dir,
                                "a Hub dataset name (online), 'imagefolder' with data_dir, or fastft:fashion_mnist")

    def _splits(self) -> tuple[datasets.Dataset, datasets.Dataset]:
        a, raw = self.task_args, self._load_raw()
        train = named_split(raw, a, "train_split", a.dataset_name)
        self.image_column = find_column(train, a.image_column, IMAGE_COLUMNS, "image_column")
        if a.dataset_name == "imagefolder" and a.label_column is None and "label" not in train.column_names:
            # imagefolder makes no label column from a single class folder, or from none
            raise UserError(f"data_dir {a.data_dir} has fewer than 2 class folders; imagefolder reads classes "
                            f"from data_dir/train/<class>/<image>, and a classifier needs at least 2")
        self.label_column = find_column(train, a.label_column, LABEL_COLUMNS, "label_column")
        image_feature, label_feature = train.features[self.image_column], train.features[self.label_column]
        if not isinstance(image_feature, datasets.Image):
            raise UserError(f"image_column {self.image_column!r} holds {_kind(image_feature)}, not images; name the "
                            f"column of images (this dataset has {', '.join(train.column_names)})")
        if not (isinstance(label_feature, datasets.ClassLabel) or _kind(label_feature).startswith(("int", "uint"))):
            raise UserError(f"label_column {self.label_column!r} holds {_kind(label_feature)}, not class ids; name "
                            f"the column of class labels (this dataset has {', '.join(train.column_names)})")
        limits = (self.args.max_train_samples, self.args.max_eval_samples)
        self.eval_split_used = describe_eval_split(raw, a)
        return with_eval_split(raw, train, a, self.args.seed, a.dataset_name, limits, self.label_column)

    def _labels(self, train: datasets.Dataset, evaluation: datasets.Dataset) -> list[str]:
        feature, column = train.features[self.label_column], self.label_column
        train_values, eval_values = train[column], evaluation[column]
        missing = sum(v is None for v in train_values)
        if missing:  # imagefolder with the images right in train/: the split folders became "classes"
            raise UserError(f"label_column {column!r} has no class for {missing} of {len(train_values)} training "
                            f"images; put each class's images in a folder of its own: data_dir/train/<class>/")
        if isinstance(feature, datasets.ClassLabel):
            names = list(feature.names)
        else:
            values = sorted(set(train_values) | set(v for v in eval_values if v is not None))
            if not all(isinstance(v, int) and v >= 0 for v in values):
                raise UserError(f"label_column {column!r} must hold class ids (0..N-1) or be a "
                                f"datasets.ClassLabel; found {values[:5]}")
            names = [str(i) for i in range(values[-1] + 1)]
        if len(names) < 2:
            raise UserError(f"label_column {column!r} has {len(names)} class; a classifier needs at least 2")
        unseen = sorted(v for v in set(eval_values) - set(train_values) if v is not None and 0 <= v < len(names))
        if unseen:  # e.g. max_train_samples cut out a rare class: its accuracy can only be 0
            count = sum(v in unseen for v in eval_values)
            warnings.warn(f"{count} evaluation images are of classes no training image has "
                          f"({', '.join(names[v] for v in unseen[:5])}); the model cannot learn them", stacklevel=2)
        return names

    def num_train_samples(self) -> int:
        a = self.task_args
        known = None if a.data_dir else known_train_size(a.dataset_name, a.dataset_config_name,
                                                         self.args.max_train_samples)
        return known if known is not None else len(self._splits()[0])

    def load_data(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        train, evaluation = self._splits()
        self.label_names = self._labels(train, evaluation)
        train_tf, eval_tf = self._transforms()
        a = self.task_args
        if a.mixup_alpha > 0 or a.cutmix_alpha > 0:
            self.mixup = MixupCutmix(len(self.label_names), a.mixup_alpha, a.cutmix_alpha, a.mixup_prob,
                                     a.mixup_switch_prob, self.args.label_smoothing_factor)
        self.metric = load_metric("accuracy")
        skip = a.on_bad_image == "skip"
        self.frozen = FrozenFeatures(len(train)) if a.cache_frozen_features else None
        self.train_images = _Images(train, self.image_column, self.label_column, train_tf, skip,
                                    (eval_tf, self.frozen.cached) if self.frozen else None)
        return self.train_images, _Images(evaluation, self.image_column, self.label_column, eval_tf, skip)

    def set_head_only(self, head_only: bool) -> None:
        if self.frozen is not None:
            self.train_images.head_only = head_only
            if not head_only:  # unfrozen: the backbone changes, and its cached features are of no more use
                self.frozen.features = None

    def _transforms(self) -> tuple[Any, Any]:
        from timm.data import create_transform

        a = self.task_args
        cfg = image_data_config(a.model_name_or_path)
        if a.image_size:
            cfg["input_size"] = (3, a.image_size, a.image_size)
        if a.eval_crop_pct:
            cfg["crop_pct"] = a.eval_crop_pct
        common = dict(input_size=cfg["input_size"], mean=cfg["mean"], std=cfg["std"],
                      interpolation=cfg.get("interpolation", "bilinear"))
        train_tf = create_transform(**common, is_training=True, scale=(a.train_crop_scale_min, 1.0),
                                    hflip=a.hflip, vflip=0.0, color_jitter=None, auto_augment=a.auto_augment)
        eval_tf = create_transform(**common, is_training=False, crop_pct=cfg.get("crop_pct", 0.875),
                                   crop_mode=cfg.get("crop_mode", "center"))
        self.data_config = cfg
        return train_tf, eval_tf

    def collate(self, examples: list[Optional[tuple]]) -> dict[str, torch.Tensor]:
        examples = [e for e in examples if e is not None]  # unreadable images, with on_bad_image: skip
        if not examples:
            raise UserError("a whole batch of images was unreadable; check the dataset's image files")
        if len(examples[0]) == 3:  # a head-only epoch on cached features: the images not yet cached come decoded
            decoded = [e[0] is not None for e in examples]
            batch = {"index": torch.tensor([e[2] for e in examples]), "decoded": torch.tensor(decoded),
                     "labels": torch.tensor([e[1] for e in examples], dtype=torch.long)}
            if any(decoded):
                batch["pixel_values"] = torch.stack([e[0] for e in examples if e[0] is not None])
            return batch
        images, labels = zip(*examples)
        return {"pixel_values": torch.stack(images), "labels": torch.tensor(labels, dtype=torch.long)}

    # -- model ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if self.label_names is None:
            raise RuntimeError("load_data() must run before build_model()")
        a = self.task_args
        return create_image_classifier(a.model_name_or_path, self.label_names, a.pretrained, a.zero_init_head)

    def head_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return head_of(model).parameters()

    def check_sources(self) -> None:
        name = self.task_args.model_name_or_path
        if name.count("/") != 1 or Path(name).expanduser().exists():  # a Hub id (org/name) would need the network
            model_family(name)

    def _inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["pixel_values"]
        return x.contiguous(memory_format=torch.channels_last) if self.args.channels_last else x

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "index" in batch:  # cache_frozen_features, a head-only epoch: a linear probe, without augmentation
            head = head_of(extract_model_from_parallel(model))
            pixels = {"pixel_values": self._inputs(batch)} if "pixel_values" in batch else {}
            features = self.frozen.features_of(model, head, {**batch, **pixels})
            with head_only(model, head):
                logits = model(features)
            return classification_loss(logits, batch["labels"], self.args.label_smoothing_factor) * len(features)
        x, y = self._inputs(batch), batch["labels"]
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        return classification_loss(model(x), y, self.args.label_smoothing_factor) * len(x)

    def evaluation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return classification_outputs(model(self._inputs(batch)), batch["labels"])

    def compute_metrics(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        return accuracy(self.metric, outputs)

    def save_model(self, model: nn.Module, output_dir: Path) -> None:
        save_image_classifier(model, output_dir, self.label_names, self.data_config)

    def card_info(self) -> dict[str, Any]:
        # transformers' image-classification pipeline reads both layouts (timm's through TimmWrapper).
        info = {**super().card_info(), "tags": ["image-classification"], "metric_name": "Accuracy",
                "task_name": "image", "pipeline": 'from transformers import pipeline\n\n'
                                                  'classifier = pipeline("image-classification", model="{repo_id}")'}
        if model_family(self.task_args.model_name_or_path) == "timm":
            info.update(library_name="timm", tags=["image-classification", "timm"],
                        load='import timm\n\nmodel = timm.create_model("hf-hub:{repo_id}", pretrained=True)')
        else:
            info["load"] = ('from transformers import AutoImageProcessor, AutoModelForImageClassification\n\n'
                            'model = AutoModelForImageClassification.from_pretrained("{repo_id}")\n'
                            'processor = AutoImageProcessor.from_pretrained("{repo_id}")')
        return info

    def describe(self) -> list[str]:
        a = self.task_args
        return plan_lines({"model": f"{a.model_name_or_path} (pretrained={a.pretrained})", "dataset": a.dataset_name})
