"""``cache_frozen_features``: the head-only epochs (``freeze_epochs``) of an image classifier as a linear
probe on features computed once per image (the first phase of LP-FT, Kumar et al. 2022).

While the backbone is frozen, what reaches the head of an un-augmented image does not change: each
training image goes through the model once (eval mode, no gradient), the input of its classifier is
kept, and later steps train the classifier on it alone, without decoding the image again. The
backbone's norm layers are frozen with it (in eval mode), where the uncached head-only epochs train
them (fastai's ``train_bn``); augmentation and mixup start with the unfreezing.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from torch import nn

from fastft.errors import UserError


class FrozenFeatures:
    """The classifier inputs of one process's training images, by dataset index, on the CPU."""

    def __init__(self, num_samples: int):
        # Shared with the training dataset, which then hands out a cached image without decoding it; a
        # worker process sees the mask as it was when its epoch began.
        self.cached = torch.zeros(num_samples, dtype=torch.bool)
        self.features: torch.Tensor | None = None
        self.checked = False

    def features_of(self, model: nn.Module, head: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's classifier inputs: the cached ones, and those of its decoded images, computed now."""
        index = batch["index"].cpu()
        if "pixel_values" in batch:
            computed = self._compute(extract_model_from_parallel(model), head, batch["pixel_values"])
            new = index[batch["decoded"].cpu()]
            if self.features is None:
                self.features = torch.empty(len(self.cached), computed.shape[1], dtype=torch.float32)
            self.features[new] = computed.cpu()
            self.cached[new] = True
        return self.features[index].to(batch["labels"].device)

    def _compute(self, model: nn.Module, head: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        inputs: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []

        def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            inputs.append(args[0])
            outputs.append(output)

        hook = head.register_forward_hook(keep)
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = model(pixels)
        finally:
            hook.remove()
            model.train(training)
        if not self.checked:  # the classifier's output must be the model's: else its input is not all it needs
            if len(inputs) != 1 or inputs[0].ndim != 2 or not torch.allclose(outputs[0].float(), logits.float()):
                raise UserError(f"cache_frozen_features: {type(model).__name__}'s output is not its classifier's "
                                f"output on one feature vector per image, so the classifier cannot be trained "
                                f"on cached features; drop cache_frozen_features")
            self.checked = True
        return inputs[0].float().flatten(1)


@contextlib.contextmanager
def head_only(model: nn.Module, head: nn.Module) -> Iterator[None]:
    """Calls of the (wrapped) model take classifier inputs and run the classifier alone, through the
    wrappers' forward (DDP's gradient sync, accelerate's autocast) as a full forward would."""
    inner = extract_model_from_parallel(model)
    # timm models keep their pre-classifier dropout rate: the head sees it as in the uncached epochs
    rate = float(getattr(inner, "drop_rate", 0.0) or 0.0)
    had_own = "forward" in vars(inner)  # accelerate's autocast wrapper lives on the instance
    own = vars(inner).get("forward")
    inner.forward = lambda features: head(F.dropout(features, rate, inner.training))
    try:
        yield
    finally:
        if had_own:
            inner.forward = own
        else:
            del inner.forward
