"""An exponential moving average of the weights (timm's ModelEmaV3), evaluated and saved in their place.

The average is updated after every optimizer step. Evaluation swaps it into the
live (accelerate-prepared) model and back, so it runs through exactly the same
path as the raw weights: DDP, autocast and the task's generation included.
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Any, Iterator

import torch
from timm.utils.model_ema import ModelEmaV3


class WeightAverage:
    """EMA of a model's parameters and floating-point buffers (BatchNorm statistics), kept in float32.

    A bf16 or fp16 average would not move: (1 - decay) x (weights - average) is below their
    resolution at usual decays, so the average lives in float32 whatever the model's dtype.

    With ``warmup`` the decay at optimizer step t (from 1) is min(decay, 1 - t^(-2/3)), so in a
    run of a few hundred steps the average follows the weights instead of staying near the
    pretrained ones (timm's ``--model-ema-warmup``).
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool):
        """Average ``model`` (the live, unwrapped one): its tensors are paired with the copy's once, here.

        ModelEmaV3.update walks ``state_dict()``, which lists a tied tensor once per name (a
        seq2seq model's embeddings and output layer), so its update would be applied two or three
        times a step; ``parameters()`` and ``buffers()`` list each tensor once.
        """
        self.model = model
        self.ema = ModelEmaV3(model, decay=decay, use_warmup=warmup, dtype=torch.float32)
        pairs = list(zip(itertools.chain(self.ema.module.parameters(), self.ema.module.buffers()),
                         itertools.chain(model.parameters(), model.buffers())))
        self._averaged = [mine for mine, _ in pairs if mine.is_floating_point()]
        self._live = [theirs.detach() for mine, theirs in pairs if mine.is_floating_point()]
        self._counters = [(mine, theirs) for mine, theirs in pairs if not mine.is_floating_point()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the model's weights after optimizer step ``step`` (1-based)."""
        for mine, theirs in self._counters:  # such as BatchNorm's num_batches_tracked
            mine.copy_(theirs)
        live = [theirs.float() for theirs in self._live]  # the same tensors unless the model is bf16/fp16
        torch._foreach_lerp_(self._averaged, live, 1.0 - self.ema.get_decay(step))

    def copy_to(self) -> None:
        """Overwrite the model's weights with the average (before saving the final model)."""
        self.model.load_state_dict(self.ema.module.state_dict())

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The average in the model's place for the duration; the training weights come back after."""
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.copy_to()
        try:
            yield
        finally:
            self.model.load_state_dict(saved)

    @property
    def module(self) -> torch.nn.Module:
        """The float32 copy holding the average: checkpoints save and load it as safetensors, not pickled."""
        return self.ema.module

    def state_dict(self) -> dict[str, Any]:
        return self.ema.module.state_dict()
