"""LoRA (Hu et al. 2021) through peft: which layers get adapters, the new head trained whole, what is saved.

The Trainer keeps training the task's own model class: peft injects its layers into it
in place, so a task's loss, generation and encoder cache see the model they built.
The ``PeftModel`` beside it is only for saving (the adapter) and merging (a plain model
the ecosystem reloads without peft).
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Iterable

from torch import nn

from fastft.config import TrainingArguments
from fastft.errors import UserError
from fastft.image_models import library_model

ADAPTER_DIR = "adapter"  # output_dir/adapter: what peft's PeftModel.from_pretrained(base, folder) loads
ADAPTER_CONFIG = "adapter_config.json"
# Leaf names of attention projections in each naming scheme: BART, Marian, NLLB, Whisper, wav2vec2 and
# transformers 5's ViT (q_proj); BERT (query); timm ViT (fused qkv); T5 (q). Hu et al. adapt query and value.
ATTENTION_PROJECTIONS = ("q_proj", "v_proj", "query", "value", "qkv", "q", "v")


def _adaptable(module: nn.Module) -> bool:
    """A layer peft's LoRA can wrap."""
    return isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)) or type(module).__name__ == "Conv1D"


def _head_modules(model: nn.Module, head_ids: set[int]) -> tuple[list[str], int]:
    """The largest sub-modules made only of head parameters (peft's modules_to_save), and how many head
    parameters lie outside them (in a module that also holds pretrained weights, e.g. a tied output layer)."""
    whole = {name for name, module in model.named_modules()
             if name and any(True for _ in module.parameters()) and all(id(p) in head_ids for p in module.parameters())}
    chosen = [name for name in whole if name.rpartition(".")[0] not in whole]
    covered = {id(p) for name, module in model.named_modules() if name in chosen for p in module.parameters()}
    return sorted(chosen), len(head_ids - covered)


def _matches(name: str, wanted: Iterable[str]) -> bool:
    return any(name == w or name.endswith("." + w) for w in wanted)


def _targets(model: nn.Module, requested: list[str], head: list[str], model_name: str) -> list[str]:
    """Full names of the layers that get adapters: the requested (or attention) layers the task trains."""
    candidates = {name: module for name, module in model.named_modules()
                  if _adaptable(module) and not _matches(name, head) and not any(name.startswith(h + ".") for h in head)}
    wanted = requested or ATTENTION_PROJECTIONS
    found = [name for name in candidates if _matches(name, wanted)]
    # A layer the task keeps frozen (a frozen encoder, frozen embeddings) stays exactly as pretrained.
    trainable = [name for name in found if candidates[name].weight.requires_grad]
    if trainable:
        return trainable
    examples = sorted({name.rpartition(".")[2] for name, m in candidates.items() if m.weight.requires_grad})[:8]
    if requested:
        what = (f"matches only layers the recipe keeps frozen ({', '.join(found[:3])}, ...)" if found
                else "matches no Linear, Conv or Embedding layer")
        raise UserError(f"lora_target_modules {', '.join(requested)} {what} in {model_name}; layers it could "
                        f"adapt: {', '.join(examples) or 'none'}")
    raise UserError(f"peft lora: {model_name} has no trainable attention projections ({', '.join(ATTENTION_PROJECTIONS)}) "
                    f"to adapt; set lora_target_modules to some of its layers, e.g. {', '.join(examples) or 'none found'}")


class LoraAdapter:
    """LoRA layers injected into a task's model in place, and the PeftModel that saves and merges them."""

    def __init__(self, model: nn.Module, args: TrainingArguments, head_params: Iterable[nn.Parameter],
                 model_name: str):
        """Only the adapters and the head (``head_params``, kept whole through modules_to_save) train from
        here on; every other weight is frozen."""
        from peft import LoraConfig, get_peft_model

        self.model, part = model, library_model(model)
        head, uncovered = _head_modules(part, {id(p) for p in head_params})
        targets = _targets(part, args.lora_target_modules, head, model_name)
        config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                            # a full-match pattern: exactly these layers, whatever else ends the same way
                            target_modules="^(?:" + "|".join(map(re.escape, targets)) + ")$",
                            modules_to_save=head or None)
        try:
            self.peft_model = get_peft_model(part, config)
        except (ValueError, TypeError, NotImplementedError) as err:
            raise UserError(f"peft could not add LoRA layers to {model_name}: {str(err).splitlines()[0][:300]}; "
                            f"choose other lora_target_modules") from None
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        leaves = sorted({name.rpartition(".")[2] for name in targets})
        self.summary = [f"LoRA r={args.lora_r}, alpha={args.lora_alpha:g} on {len(targets)} layers "
                        f"({', '.join(leaves)}); trained whole: {', '.join(head) if head else 'nothing else'}; "
                        f"trainable {trainable:,} of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%)"]
        if uncovered:
            self.summary.append(f"{uncovered} new parameter tensor(s) share a module with pretrained weights (e.g. a "
                                f"bias beside a tied output layer): under LoRA they keep their initial values")

    def merged(self, in_place: bool) -> nn.Module:
        """The task's model with the adapters folded into its weights and peft's layers gone.

        ``in_place`` at the end of training; otherwise on a copy, so training goes on unmerged
        (merging and unmerging in place would leave rounding differences in the weights).
        """
        model, peft_model = (self.model, self.peft_model) if in_place else copy.deepcopy((self.model, self.peft_model))
        peft_model.merge_and_unload()  # replaces peft's layers inside model
        return model

    def save(self, output_dir: Path, base_model: str) -> Path:
        """adapter_model.safetensors + adapter_config.json in output_dir/adapter; the folder."""
        folder = output_dir / ADAPTER_DIR
        self.peft_model.peft_config["default"].base_model_name_or_path = base_model
        self.peft_model.save_pretrained(str(folder), safe_serialization=True)
        (folder / "README.md").unlink(missing_ok=True)  # peft's stub card: output_dir/README.md is the run's card
        return folder


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The head's trainable copies that peft's modules_to_save made."""
    return [p for name, p in model.named_parameters() if ".modules_to_save." in name]


def adapter_folder(model: str | Path) -> Path | None:
    """The adapter to evaluate for MODEL: MODEL itself when it is an adapter folder, or the adapter of a
    fastft run saved without its merged model (merge_lora: false); else None."""
    folder = Path(model).expanduser()
    if (folder / ADAPTER_CONFIG).is_file():
        return folder
    if (folder / ADAPTER_DIR / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file():
        return folder / ADAPTER_DIR
    return None


def adapter_base(folder: Path) -> str:
    """The model an adapter folder was trained on (its adapter_config.json, read as JSON)."""
    path = Path(folder) / ADAPTER_CONFIG
    try:
        base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"{path} is not a readable adapter config ({err})") from None
    if not base:
        raise UserError(f"{path} names no base_model_name_or_path, the model its adapter was trained on")
    return base


def load_adapter(model: nn.Module, folder: Path) -> nn.Module:
    """``model`` (the adapter's base, with the task's head) with the adapter's weights merged in, in place."""
    from peft import PeftModel

    try:
        PeftModel.from_pretrained(library_model(model), str(folder)).merge_and_unload()
    except (ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"the adapter in {folder} does not fit {type(model).__name__}: "
                        f"{str(err).splitlines()[0][:300]}") from None
    return model
