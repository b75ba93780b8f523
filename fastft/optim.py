"""Optimizer construction (timm's factory) and backbone freezing for transfer learning."""
from __future__ import annotations

from typing import Iterable, Optional

import timm.optim
import torch
from torch import nn

from fastft.config import TrainingArguments
from fastft.errors import UserError

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def check_optimizer_name(name: str) -> None:
    if name not in timm.optim.list_optimizers():
        raise UserError(f"optim '{name}' is not a timm optimizer; valid: adamw, sgd, momentum, lamb, "
                        f"lars, adafactor, ... (timm.optim.list_optimizers())")


def build_optimizer(model: nn.Module, args: TrainingArguments, lr: float,
                    head_params: Iterable[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """timm's create_optimizer_v2: no weight decay on biases/norms, layer-wise LR decay via ``lr_scale``.

    ``head_lr_scale`` multiplies the ``lr_scale`` of ``head_params`` (the weights a
    task initialised anew), on top of any layer decay.

    Build it before any freezing: timm leaves out parameters that do not
    require grad, and they would never train after unfreezing.
    """
    check_optimizer_name(args.optim)
    info = timm.optim.get_optimizer_info(args.optim)
    extra = {}
    if info.has_betas:
        extra["betas"] = (args.adam_beta1, args.adam_beta2)
    if info.has_eps:
        extra["eps"] = args.adam_epsilon
    if args.layer_decay is not None and not hasattr(model, "group_matcher"):
        raise UserError(f"layer_decay needs a model that groups its layers (timm models do); "
                        f"{type(model).__name__} does not: unset layer_decay")
    optimizer = timm.optim.create_optimizer_v2(
        model, opt=args.optim, lr=lr, weight_decay=args.weight_decay, momentum=args.momentum,
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
        # Only lr_scale: the Scheduler (and lr_find) set every group's lr from it.
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
