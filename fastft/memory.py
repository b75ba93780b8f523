"""Memory for compute: gradient checkpointing (Chen et al. 2016) on transformers and timm models."""
from __future__ import annotations

from torch import nn

from fastft.errors import UserError
from fastft.image_models import library_model


def enable_gradient_checkpointing(model: nn.Module, model_name: str) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them.

    transformers models through ``gradient_checkpointing_enable``, non-reentrant (the
    reentrant kind gives no gradient when the inputs' embeddings are frozen, as under
    LoRA); timm models through ``set_grad_checkpointing``. A wrapper (fastft's logits
    wrapper around a transformers classifier) is looked through.
    """
    target = library_model(model)
    if hasattr(target, "gradient_checkpointing_enable"):
        if not getattr(target, "supports_gradient_checkpointing", False):
            raise UserError(f"gradient_checkpointing: {model_name} ({type(target).__name__}) does not support it in "
                            f"transformers; unset gradient_checkpointing")
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return
    if hasattr(target, "set_grad_checkpointing"):
        try:
            target.set_grad_checkpointing(True)
        except (AssertionError, NotImplementedError, AttributeError):
            raise UserError(f"gradient_checkpointing: timm's {type(target).__name__} ({model_name}) does not support "
                            f"it; unset gradient_checkpointing") from None
        return
    raise UserError(f"gradient_checkpointing needs a transformers or timm model; {model_name} is a "
                    f"{type(model).__name__}: unset gradient_checkpointing")
