"""Optimizer construction (timm's factory) and backbone freezing for transfer learning."""
from __future__ import annotations

from typing import Iterable, Optional

import timm.optim
import torch
from torch import nn

from fastft.config import TrainingArguments
from fastft.errors import UserError

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


# HF TrainingArguments optimizer names -> (timm name, extra arguments). HF's "sgd" is not here: it is plain
# SGD in HF and Nesterov SGD in timm, and fastft's recipes mean timm's; plain SGD is "momentum".
HF_OPTIMIZERS = {"adamw_torch": ("adamw", {}), "adamw_hf": ("adamw", {}),
                 "adamw_torch_fused": ("adamw", {"fused": True}), "adafactor": ("adafactor", {})}
_NOT_SUPPORTED = ("8bit", "bnb", "apex", "paged", "galore", "lomo", "torchao", "schedule_free", "grokadamw")


def resolve_optimizer(name: str) -> tuple[str, dict]:
    """The timm name and extra optimizer arguments for ``optim`` (a timm or an HF name)."""
    if name in HF_OPTIMIZERS:
        return HF_OPTIMIZERS[name]
    if name not in timm.optim.list_optimizers():
        hint = (" (bitsandbytes, apex and the other optimizers HF loads from extra packages are not supported)"
                if any(part in name for part in _NOT_SUPPORTED) else "")
        raise UserError(f"optim '{name}' is neither a timm optimizer nor an HF name fastft maps{hint}; valid: "
                        f"adamw, adamw_torch, adamw_torch_fused, sgd (Nesterov), momentum (plain SGD), lamb, lars, "
                        f"adafactor, ... (timm.optim.list_optimizers())")
    return name, {}


def check_optimizer_name(name: str) -> None:
    resolve_optimizer(name)


def build_optimizer(model: nn.Module, args: TrainingArguments, lr: float,
                    head_params: Iterable[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """timm's create_optimizer_v2: no weight decay on biases/norms, layer-wise LR decay via ``lr_scale``.

    ``head_lr_scale`` multiplies the ``lr_scale`` of ``head_params`` (the weights a
    task initialised anew), on top of any layer decay.

    Build it before any freezing: timm leaves out parameters that do not
    require grad, and they would never train after unfreezing.
    """
    name, extra = resolve_optimizer(args.optim)
    info = timm.optim.get_optimizer_info(name)
    extra = dict(extra)
    if info.has_betas:
        extra["betas"] = (args.adam_beta1, args.adam_beta2)
    if info.has_eps:
        extra["eps"] = args.adam_epsilon
    if args.layer_decay is not None and not hasattr(model, "group_matcher"):
        raise UserError(f"layer_decay needs a model that groups its layers (timm models do); "
                        f"{type(model).__name__} does not: unset layer_decay")
    optimizer = timm.optim.create_optimizer_v2(
        model, opt=name, lr=lr, weight_decay=args.weight_decay, momentum=args.momentum,
        layer_decay=args.layer_decay, **extra)
    if args.head_lr_scale != 1.0:
        chosen = {id(p) for p in head_params}
        if not chosen:
            raise UserError(f"head_lr_scale {args.head_lr_scale} scales the LR of newly initialised weights, and "
                            f"this model has none (it is fully pretrained): unset head_lr_scale")
        _scale_lr(optimizer, chosen, args.head_lr_scale)
    return optimizer


def _scale_lr(optimizer: torch.optim.Optimizer, chosen: set[int], scale: float) -> None:
    """Move the chosen parameters of every group into a twin group whose ``lr_scale`` is ``scale`` times."""
    twins = []
    for group in optimizer.param_groups:
        picked = [p for p in group["params"] if id(p) in chosen]
        rest = [p for p in group["params"] if id(p) not in chosen]
        if not picked:
            continue
        # Only lr_scale: the Scheduler sets every group's lr from its initial_lr (the peak) times lr_scale.
        scaled = group.get("lr_scale", 1.0) * scale
        if rest:
            group["params"] = rest
            twins.append({**group, "params": picked, "lr_scale": scaled})
        else:
            group["lr_scale"] = scaled
    for twin in twins:
        optimizer.add_param_group(twin)


def set_backbone_frozen(model: nn.Module, head_params: Iterable[nn.Parameter], frozen: bool,
                        trainable: Optional[Iterable[nn.Parameter]] = None) -> None:
    """Freeze everything but the head and the norm layers (fastai's ``train_bn``), or unfreeze.

    Only ``trainable`` (default: every parameter) is ever unfrozen, so weights a task
    keeps fixed for the whole run (frozen embeddings or encoder) stay fixed. Frozen
    parameters skip their backward pass, which is what makes the head-only epochs fast.
    """
    keep = {id(p) for p in head_params}
    allowed = None if trainable is None else {id(p) for p in trainable}
    for module in model.modules():
        is_norm = isinstance(module, _NORMS)
        for param in module.parameters(recurse=False):
            may_train = allowed is None or id(param) in allowed
            param.requires_grad_(may_train and (not frozen or is_norm or id(param) in keep))
