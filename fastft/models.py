"""timm models from names, Hub ids, local folders or fastft assets; saved in timm's Hub layout."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import timm
import torch
from torch import nn

from fastft import assets
from fastft.errors import UserError


def timm_source(name: str) -> str:
    """The identifier ``timm.create_model`` needs for a model_name_or_path."""
    if assets.is_asset(name):
        return f"local-dir:{assets.model_asset(name)}"
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file() or "architecture" not in json.loads(config.read_text()):
            raise UserError(f"model_name_or_path {name} is a folder without a timm config.json "
                            f"(with 'architecture'); point it at a folder saved by fastft or timm")
        return f"local-dir:{path.resolve()}"
    if name.startswith(("/", "./", "../", "~")) or path.suffix in (".pth", ".safetensors", ".bin"):
        raise UserError(f"model_name_or_path {name} does not exist; give an existing folder, a timm name "
                        f"or a Hub id such as timm/resnet50.a1_in1k")
    if name.startswith("hf-hub:"):
        return name
    if name.startswith("timm/") or (name.count("/") == 1 and not timm.is_model(name.split(".")[0])):
        return f"hf-hub:{name}"
    if timm.is_model(name.split(".")[0]):
        return name
    raise UserError(f"model_name_or_path {name!r} is neither a local folder, a fastft: asset "
                    f"({', '.join(assets.MODEL_ASSETS)}), a timm model name nor a Hub id (org/name)")


def create_timm_model(name: str, num_classes: int, pretrained: bool, zero_init_head: bool = True) -> nn.Module:
    """A timm model with a ``num_classes`` head: the checkpoint's if it fits, else a new one.

    A new head on pretrained features starts at zero (BiT, Kolesnikov et al. 2020):
    timm's random init gives large logits and a first loss far above log(num_classes).
    """
    source = timm_source(name)
    try:
        model = timm.create_model(source, pretrained=pretrained, num_classes=num_classes)
        if pretrained and zero_init_head and model.pretrained_cfg.get("num_classes") != num_classes:
            for param in model.get_classifier().parameters():
                nn.init.zeros_(param)
        return model
    except (OSError, RuntimeError, ValueError) as err:  # no network, missing file, incompatible weights
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise UserError(f"could not create model {name!r} ({type(err).__name__}: {first}); offline, use a "
                        f"local folder or a fastft: asset") from None


def save_timm_model(model: nn.Module, output_dir: Path, model_config: dict[str, Any],
                    data_config: Optional[dict[str, Any]] = None) -> None:
    """Weights and config as ``timm.create_model("hf-hub:<id>" | "local-dir:<dir>")`` reload them.

    ``model_config`` carries ``label_names`` (and optionally ``label_descriptions``).
    """
    model = model.to(memory_format=torch.contiguous_format)  # safetensors refuses channels_last strides
    keys = ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation")
    timm.models.save_for_hf(model, str(output_dir), model_config=model_config, safe_serialization=True,
                            data_config={k: v for k, v in (data_config or {}).items() if k in keys})
    # timm 1.0.31 also writes num_classes into model_args, which transformers' TimmWrapper
    # passes on next to its own num_classes (TypeError). timm reads the top-level copy anyway.
    config_file = Path(output_dir) / "config.json"
    config = json.loads(config_file.read_text())
    config.get("model_args", {}).pop("num_classes", None)
    config_file.write_text(json.dumps(config, indent=2))
