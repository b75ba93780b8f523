"""Image classifiers from timm (names, Hub ids, folders, fastft assets) or transformers.

Both families come back behind one interface: ``model(pixel_values) -> logits``,
their preprocessing as a timm data config (read from the checkpoint's files, so data
can be prepared before any model is built), their head, and a ``save`` that writes
the layout their own library reloads.
"""
from __future__ import annotations

import contextlib
import difflib
import json
from pathlib import Path
from typing import Any, Iterator, Optional

import timm
import torch
from safetensors import SafetensorError
from torch import nn

from fastft import reporting
from fastft.errors import UserError
from fastft.offline import image as image_assets


def _read_config(path: Path) -> dict[str, Any]:
    file = path / "config.json"
    return reporting.read_json_object(file, "re-save the model or fix the file") if file.is_file() else {}


def model_family(name: str) -> str:
    """'timm' or 'transformers' for a model_name_or_path, without loading weights."""
    if image_assets.is_asset(name) or name.startswith(("hf-hub:", "timm/")):
        return "timm"
    path = Path(name).expanduser()
    if path.is_dir():
        config = _read_config(path)
        if "architecture" in config:
            return "timm"
        if "model_type" in config:
            return "transformers"
        raise UserError(f"model_name_or_path {name} is a folder without a timm or transformers config.json; "
                        f"point it at a folder saved by fastft, timm or transformers")
    if path.is_file():
        raise UserError(f"model_name_or_path {name} is a file; give the folder that holds it and its config.json "
                        f"(as timm or transformers save a model)")
    if name.startswith(("/", "./", "../", "~")) or path.suffix in (".pth", ".safetensors", ".bin"):
        raise UserError(f"model_name_or_path {name} does not exist; give an existing folder, a timm name "
                        f"or a Hub id such as timm/resnet50.a1_in1k")
    if timm.is_model(name.split(".")[0]):
        return "timm"
    if name.count("/") == 1:  # a Hub repo: its config says which library wrote it
        from huggingface_hub import hf_hub_download

        try:
            config = json.loads(Path(hf_hub_download(name, "config.json")).read_text())
        except Exception as err:  # offline, missing repo, gated repo: all end the same way for the user
            raise UserError(f"could not read config.json of Hub model {name!r} ({type(err).__name__}); "
                            f"check the id and the network, or use a local folder") from None
        return "timm" if "architecture" in config else "transformers"
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=1, cutoff=0.8)
    hint = f"; did you mean timm's {close[0]!r}?" if close else ""
    raise UserError(f"model_name_or_path {name!r} is neither a local folder, a fastft: asset "
                    f"({', '.join(image_assets.MODEL_ASSETS)}), a timm model name nor a Hub id (org/name){hint}")


def _timm_source(name: str) -> str:
    if image_assets.is_asset(name):
        return f"local-dir:{image_assets.model_asset(name)}"
    if Path(name).expanduser().is_dir():
        return f"local-dir:{Path(name).expanduser().resolve()}"
    if name.count("/") == 1 and not name.startswith("hf-hub:"):
        return f"hf-hub:{name}"
    return name


class _Logits(nn.Module):
    """transformers classifiers return an output object; the engine wants logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _zero_(module: nn.Module) -> None:
    for param in module.parameters():
        nn.init.zeros_(param)


@contextlib.contextmanager
def _loading(name: str) -> Iterator[None]:
    try:
        yield
    except SafetensorError as err:
        raise UserError(f"the weights of model_name_or_path {name} are damaged or truncated ({err}); save or "
                        f"download them again") from None
    # no network, a missing file, or weights of another architecture (timm's key filters then fail anyhow)
    except (OSError, RuntimeError, ValueError, KeyError, AttributeError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise UserError(f"could not create model {name!r} ({type(err).__name__}: {first}); offline, use a "
                        f"local folder or a fastft: asset") from None


def image_data_config(name: str) -> dict[str, Any]:
    """The checkpoint's preprocessing as a timm data config (input_size, mean, std, interpolation, crop_pct,
    crop_mode), from its config files alone: no weights are read, no model is built."""
    family = model_family(name)
    with _loading(name):
        if family == "timm":
            from timm.data import resolve_data_config
            from timm.models import resolve_model_input_args

            # The pretrained_cfg create_model would attach to the model, which resolve_model_data_config reads.
            return resolve_data_config(pretrained_cfg=resolve_model_input_args(_timm_source(name))["pretrained_cfg"])
        from transformers import AutoImageProcessor

        return _processor_data_config(AutoImageProcessor.from_pretrained(name))


def create_image_classifier(name: str, label_names: list[str], pretrained: bool,
                            zero_init_head: bool = True) -> nn.Module:
    """The model: ``model(x) -> logits``.

    The checkpoint's head is kept when it has as many classes as the data, else a
    new one is made; on pretrained features it starts at zero (BiT, Kolesnikov et
    al. 2020), since a random head gives a first loss far above log(num_classes).
    """
    family = model_family(name)
    with _loading(name):
        if family == "timm":
            model = timm.create_model(_timm_source(name), pretrained=pretrained, num_classes=len(label_names))
            fresh = model.pretrained_cfg.get("num_classes") != len(label_names)
            if pretrained and zero_init_head and fresh:
                _zero_(model.get_classifier())
            return model
        return _create_transformers(name, label_names, pretrained, zero_init_head)


def _processor_data_config(processor: Any) -> dict[str, Any]:
    """A transformers image processor's resize and normalisation as a timm data config."""
    size = processor.size  # a dict or a SizeDict, by transformers version
    get = size.get if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    side = get("height") or get("shortest_edge")
    return {"input_size": (3, side, side), "mean": tuple(processor.image_mean), "std": tuple(processor.image_std),
            "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center"}


def _create_transformers(name: str, label_names: list[str], pretrained: bool, zero_init_head: bool) -> nn.Module:
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    labels = {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
              "label2id": {n: i for i, n in enumerate(label_names)}}
    # dtype: transformers 5 loads a checkpoint in its saved dtype; training keeps float32 master weights.
    if pretrained:
        old = AutoConfig.from_pretrained(name).num_labels
        model = AutoModelForImageClassification.from_pretrained(name, ignore_mismatched_sizes=True,
                                                                dtype=torch.float32, **labels)
        if zero_init_head and old != len(label_names):
            _zero_(model.classifier)
    else:
        model = AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(name, **labels),
                                                            dtype=torch.float32)
    wrapped = _Logits(model)
    wrapped.processor = AutoImageProcessor.from_pretrained(name)  # saved with the model
    return wrapped


def library_model(model: nn.Module) -> nn.Module:
    """The model its library saves and loads: the transformers classifier inside fastft's logits wrapper,
    else the model itself."""
    return model.model if isinstance(model, _Logits) else model


def head_of(model: nn.Module) -> nn.Module:
    """The classification head: what freeze_epochs trains alone."""
    return model.model.classifier if isinstance(model, _Logits) else model.get_classifier()


def save_image_classifier(model: nn.Module, output_dir: Path, label_names: list[str],
                          data_config: dict[str, Any]) -> None:
    """Write the model as its own library reloads it (timm ``local-dir:``/``hf-hub:``, or ``from_pretrained``)."""
    model = model.to(memory_format=torch.contiguous_format)  # safetensors refuses channels_last strides
    if isinstance(model, _Logits):
        model.model.save_pretrained(output_dir)
        model.processor.save_pretrained(output_dir)
        return
    save_timm_model(model, output_dir, {"label_names": list(label_names)}, data_config)


def save_timm_model(model: nn.Module, output_dir: Path, model_config: dict[str, Any],
                    data_config: Optional[dict[str, Any]] = None) -> None:
    """timm's Hub layout (config.json + model.safetensors); ``model_config`` carries ``label_names``."""
    model = model.to(memory_format=torch.contiguous_format)
    keys = ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation")
    timm.models.save_for_hf(model, str(output_dir), model_config=model_config, safe_serialization=True,
                            data_config={k: v for k, v in (data_config or {}).items() if k in keys})
    # timm 1.0.31 also writes num_classes into model_args, which transformers' TimmWrapper
    # passes on next to its own num_classes (TypeError). timm reads the top-level copy anyway.
    config_file = Path(output_dir) / "config.json"
    config = json.loads(config_file.read_text())
    config.get("model_args", {}).pop("num_classes", None)
    config_file.write_text(json.dumps(config, indent=2))
