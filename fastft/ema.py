"""An exponential moving average of the weights (timm's decay schedule), evaluated and saved in their place.

The average is updated after every optimizer step. Evaluation swaps it into the
live (accelerate-prepared) model and back, so it runs through exactly the same
path as the raw weights: DDP, autocast and the task's generation included.

Only the tensors training can change are averaged: the parameters the run trains and the
floating-point buffers (BatchNorm statistics). A frozen weight's average is the weight itself,
so under LoRA, or with a frozen encoder, the average costs memory for the trained part only.
"""
from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch
from safetensors.torch import load_file, save_file
from timm.utils.model_ema import ModelEmaV3

Named = list[tuple[list[str], torch.Tensor]]  # each tensor once, with all its names (a tied tensor has several)


def changing_tensors(model: torch.nn.Module, trainable: Optional[Iterable[torch.nn.Parameter]] = None) -> Named:
    """The tensors of ``model`` that training can change: ``trainable`` (default: every parameter) and the
    floating-point buffers. ``state_dict()`` would list a tied tensor once per name and every frozen weight."""
    trains = {id(p) for p in (model.parameters() if trainable is None else trainable)}
    found: dict[int, tuple[list[str], torch.Tensor]] = {}
    for name, tensor in itertools.chain(model.named_parameters(remove_duplicate=False),
                                        model.named_buffers(remove_duplicate=False)):
        if tensor.is_floating_point() and (id(tensor) in trains or not isinstance(tensor, torch.nn.Parameter)):
            found.setdefault(id(tensor), ([], tensor))[0].append(name)
    return list(found.values())


def named_copies(tensors: Named) -> dict[str, torch.Tensor]:
    """CPU copies by each tensor's first name, as safetensors' save_file takes them (no shared memory)."""
    return {names[0]: t.detach().to("cpu", copy=True).contiguous() for names, t in tensors}


@torch.no_grad()
def copy_into(tensors: Named, weights: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``weights`` (found by any of a tensor's names) into ``tensors``; extra names are ignored.

    A name missing or a shape that differs raises a RuntimeError saying so, as ``load_state_dict`` does.
    """
    for names, tensor in tensors:
        name = next((n for n in names if n in weights), None)
        if name is None:
            raise RuntimeError(f"Missing key(s) in {source}: {names[0]}")
        if weights[name].shape != tensor.shape:
            raise RuntimeError(f"size mismatch for {name} in {source}: {tuple(weights[name].shape)} against "
                               f"{tuple(tensor.shape)} in the model")
        tensor.copy_(weights[name])


class WeightAverage:
    """EMA of what a model trains, kept in float32 beside the live tensors.

    A bf16 or fp16 average would not move: (1 - decay) x (weights - average) is below their
    resolution at usual decays, so the average lives in float32 whatever the model's dtype.

    With ``warmup`` the decay at optimizer step t (from 1) is min(decay, 1 - t^(-2/3)), so in a
    run of a few hundred steps the average follows the weights instead of staying near the
    pretrained ones (timm's ``--model-ema-warmup``).
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool,
                 trainable: Optional[Iterable[torch.nn.Parameter]] = None):
        """Average ``model`` (the live, unwrapped one): the parameters in ``trainable`` (default: all of them,
        as the task left them trainable before any ``freeze_epochs``) and its floating-point buffers."""
        self._tensors = changing_tensors(model, trainable)
        # timm's decay schedule, on a one-weight stand-in: given the model, ModelEmaV3 would deep-copy all of it
        self._schedule = ModelEmaV3(torch.nn.Linear(1, 1), decay=decay, use_warmup=warmup)
        self._live = [t.detach() for _, t in self._tensors]
        self._averaged = [t.to(torch.float32, copy=True) for t in self._live]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the model's weights after optimizer step ``step`` (1-based)."""
        live = [t.float() for t in self._live]  # the same tensors unless the model is bf16/fp16
        torch._foreach_lerp_(self._averaged, live, 1.0 - self._schedule.get_decay(step))

    @torch.no_grad()
    def copy_to(self) -> None:
        """Overwrite the model's weights with the average (before saving the final model)."""
        for live, average in zip(self._live, self._averaged):
            live.copy_(average)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The average in the model's place for the duration; the training weights come back after."""
        saved = [t.clone() for t in self._live]
        self.copy_to()
        try:
            yield
        finally:
            with torch.no_grad():
                for live, kept in zip(self._live, saved):
                    live.copy_(kept)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The average by each tensor's first name."""
        return {names[0]: average for (names, _), average in zip(self._tensors, self._averaged)}

    def save(self, file: Path) -> None:
        """The average as safetensors (checkpoints never pickle)."""
        save_file(named_copies(list(zip((names for names, _ in self._tensors), self._averaged))), str(file))

    def load(self, file: Path) -> None:
        """The average a checkpoint saved; one saved over the whole model (frozen weights too) loads as well."""
        copy_into(list(zip((names for names, _ in self._tensors), self._averaged)), load_file(str(file)), str(file))
