"""Mixup / cutmix (through timm) and label smoothing for classification losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy


class MixupCutmix:
    """timm's ``Mixup`` made safe for odd batch sizes (the last batch of an epoch).

    timm asserts an even batch because it pairs each sample with its mirror; an
    odd batch mixes all but its last sample, which keeps its own (smoothed) target.
    """

    def __init__(self, num_classes: int, mixup_alpha: float, cutmix_alpha: float, prob: float,
                 switch_prob: float, label_smoothing: float):
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.mixup = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob,
                           switch_prob=switch_prob, label_smoothing=label_smoothing, num_classes=num_classes)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) % 2 == 0:
            return self.mixup(x, y)
        alone = mixup_target(y[-1:], self.num_classes, 1.0, self.label_smoothing)
        if len(x) == 1:
            return x, alone
        mixed_x, mixed_y = self.mixup(x[:-1].clone(), y[:-1])
        return torch.cat([mixed_x, x[-1:]]), torch.cat([mixed_y, alone])


_SOFT_CE = SoftTargetCrossEntropy()


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy on class ids (with label smoothing) or on soft targets from mixup."""
    if targets.dtype.is_floating_point:  # soft targets already carry the smoothing
        return _SOFT_CE(logits.float(), targets)
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
