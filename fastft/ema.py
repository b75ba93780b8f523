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
        self.ema = ModelEmaV3(model, decay=decay, use_warmup=warmup, dtype=torch.float32)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Fold in the weights after optimizer step ``step`` (1-based).

        ModelEmaV3.update walks ``state_dict()``, which lists a tied tensor once per name (a
        seq2seq model's embeddings and output layer), so its update would be applied two or
        three times a step; ``parameters()`` and ``buffers()`` list each tensor once.
        """
        averaged, live = [], []
        for mine, theirs in zip(itertools.chain(self.ema.module.parameters(), self.ema.module.buffers()),
                                itertools.chain(model.parameters(), model.buffers())):
            if mine.is_floating_point():
                averaged.append(mine)
                live.append(theirs.detach().to(mine.dtype))
            else:  # counters such as BatchNorm's num_batches_tracked
                mine.copy_(theirs)
        torch._foreach_lerp_(averaged, live, 1.0 - self.ema.get_decay(step))

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Overwrite the model's weights with the average (before saving the final model)."""
        for live, average in zip(model.state_dict().values(), self.ema.module.state_dict().values()):
            live.copy_(average)

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[None]:
        """The average in the model's place for the duration; the training weights come back after."""
        with torch.no_grad():
            saved = [v.detach().clone() for v in model.state_dict().values()]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for live, kept in zip(model.state_dict().values(), saved):
                    live.copy_(kept)

    # accelerate.register_for_checkpointing: a resumed run goes on from the saved average.
    def state_dict(self) -> dict[str, Any]:
        return self.ema.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.module.load_state_dict(state)
