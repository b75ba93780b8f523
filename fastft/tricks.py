"""The tricks a recipe can turn on, in one table: the model card lists those a run used, the dry-run plan
those it would use (with the fields' values), and a test holds the README's table to it."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional


@dataclasses.dataclass(frozen=True)
class Trick:
    name: str
    fields: tuple[str, ...]  # the recipe fields that turn it on or tune it, as the README's table names them
    on: Callable[[dict[str, Any]], bool]  # is it on in this recipe (a flat mapping of field -> value)?
    paper: str = ""  # a Markdown link, for the card
    # the field values that turn it off and leave the rest of the recipe as it was (fastft ablate); None: the
    # recipe cannot do without it (learning_rate auto has no LR to fall back to)
    off: Optional[dict[str, Any]] = None


def _positive(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: (r.get(name) or 0) > 0


TRICKS: list[Trick] = [
    Trick("LR scaled with the global batch, gradual warmup", ("reference_batch_size", "lr_scaling"),
          lambda r: bool(r.get("reference_batch_size")) and r.get("lr_scaling") != "none",
          "[Goyal et al. 2017](https://arxiv.org/abs/1706.02677)",
          off={"reference_batch_size": None}),
    # one-cycle and cyclic schedules rise by their own rule: a warmup there is part of the cycle, not a trick
    Trick("LR warmup", ("warmup_steps",), lambda r: (r.get("warmup_steps") or 0) > 0 and
          r.get("lr_scheduler_type") not in ("one_cycle", "cyclic"),
          "[Goyal et al. 2017](https://arxiv.org/abs/1706.02677)", off={"warmup_steps": 0}),
    Trick("one-cycle LR with inverse momentum", ("lr_scheduler_type",), lambda r: r.get("lr_scheduler_type") == "one_cycle",
          "[Smith & Topin 2018](https://arxiv.org/abs/1708.07120)", off={"lr_scheduler_type": "linear"}),
    Trick("LR picked by a range test at the run's start", ("learning_rate",), lambda r: r.get("learning_rate") == "auto",
          "[Smith 2017](https://arxiv.org/abs/1506.01186)"),
    Trick("cyclical LR", ("lr_scheduler_type", "cyclic_mode"), lambda r: r.get("lr_scheduler_type") == "cyclic",
          "[Smith 2017](https://arxiv.org/abs/1506.01186)", off={"lr_scheduler_type": "linear"}),
    Trick("inverse square-root LR with warmup", ("lr_scheduler_type",),
          lambda r: r.get("lr_scheduler_type") == "inverse_sqrt", "[Vaswani et al. 2017](https://arxiv.org/abs/1706.03762)",
          off={"lr_scheduler_type": "linear"}),
    Trick("mixup", ("mixup_alpha",), _positive("mixup_alpha"), "[Zhang et al. 2018](https://arxiv.org/abs/1710.09412)",
          off={"mixup_alpha": 0.0}),
    Trick("CutMix", ("cutmix_alpha",), _positive("cutmix_alpha"), "[Yun et al. 2019](https://arxiv.org/abs/1905.04899)",
          off={"cutmix_alpha": 0.0}),
    Trick("label smoothing", ("label_smoothing_factor",), _positive("label_smoothing_factor"),
          "[Szegedy et al. 2016](https://arxiv.org/abs/1512.00567)", off={"label_smoothing_factor": 0.0}),
    Trick("zero-initialised new head", ("zero_init_head",),
          lambda r: bool(r.get("zero_init_head")) and bool(r.get("pretrained", True)),
          "[Kolesnikov et al. 2020](https://arxiv.org/abs/1912.11370)", off={"zero_init_head": False}),
    Trick("head-only epochs before unfreezing", ("freeze_epochs",), _positive("freeze_epochs"),
          "[Howard & Ruder 2018](https://arxiv.org/abs/1801.06146)",
          off={"freeze_epochs": 0, "cache_frozen_features": False, "restart_schedule_at_unfreeze": False}),
    Trick("head-only epochs as a linear probe on features computed once (LP-FT)", ("cache_frozen_features",),
          lambda r: bool(r.get("cache_frozen_features")) and (r.get("freeze_epochs") or 0) > 0,
          "[Kumar et al. 2022](https://arxiv.org/abs/2202.10054)", off={"cache_frozen_features": False}),
    Trick("LR schedule restarted at the unfreezing", ("restart_schedule_at_unfreeze",),
          lambda r: bool(r.get("restart_schedule_at_unfreeze")) and (r.get("freeze_epochs") or 0) > 0,
          "[fastai fine_tune](https://docs.fast.ai/callback.schedule.html#learner.fine_tune)",
          off={"restart_schedule_at_unfreeze": False}),
    Trick("frozen embeddings", ("freeze_embeddings",), lambda r: bool(r.get("freeze_embeddings")),
          off={"freeze_embeddings": False}),
    Trick("frozen encoder", ("freeze_encoder",), lambda r: bool(r.get("freeze_encoder")),
          off={"freeze_encoder": False, "cache_encoder_outputs": False}),
    Trick("frozen feature encoder", ("freeze_feature_encoder",), lambda r: bool(r.get("freeze_feature_encoder")),
          off={"freeze_feature_encoder": False}),
    Trick("a higher LR for new weights", ("head_lr_scale",), lambda r: r.get("head_lr_scale", 1.0) not in (None, 1.0),
          off={"head_lr_scale": 1.0}),
    Trick("layer-wise LR decay", ("layer_decay",), lambda r: r.get("layer_decay") is not None,
          "[Clark et al. 2020](https://arxiv.org/abs/2003.10555)", off={"layer_decay": None}),
    Trick("exponential moving average of the weights, evaluated and saved", ("model_ema", "model_ema_decay"),
          lambda r: bool(r.get("model_ema")), "[Polyak & Juditsky 1992](https://doi.org/10.1137/0330046)",
          off={"model_ema": False}),
    Trick("channels_last memory format", ("channels_last",), lambda r: bool(r.get("channels_last")),
          off={"channels_last": False}),
    Trick("mixed precision", ("mixed_precision",), lambda r: r.get("mixed_precision") in ("fp16", "bf16"),
          "[Micikevicius et al. 2018](https://arxiv.org/abs/1710.03740)", off={"mixed_precision": "no"}),
    Trick("a shorter Whisper input window", ("whisper_window_s",), lambda r: bool(r.get("whisper_window_s")),
          off={"whisper_window_s": None}),
    Trick("encoder outputs computed once", ("cache_encoder_outputs",), lambda r: bool(r.get("cache_encoder_outputs")),
          off={"cache_encoder_outputs": False}),
    Trick("LoRA adapters (peft), the new head trained whole", ("peft", "lora_r", "lora_alpha"),
          lambda r: r.get("peft") == "lora", "[Hu et al. 2021](https://arxiv.org/abs/2106.09685)",
          off={"peft": "none", "lora_target_modules": []}),
    Trick("gradient checkpointing", ("gradient_checkpointing",), lambda r: bool(r.get("gradient_checkpointing")),
          "[Chen et al. 2016](https://arxiv.org/abs/1604.06174)", off={"gradient_checkpointing": False}),
    Trick("torch.compile", ("torch_compile",), lambda r: bool(r.get("torch_compile")),
          "[Ansel et al. 2024](https://doi.org/10.1145/3620665.3640366)", off={"torch_compile": False}),
    Trick("length-grouped batches", ("group_by_length",), lambda r: bool(r.get("group_by_length")),
          off={"group_by_length": False}),
    Trick("token-budget batches", ("batch_by_tokens",), lambda r: bool(r.get("batch_by_tokens")),
          "[Ott et al. 2019](https://arxiv.org/abs/1904.01038)", off={"batch_by_tokens": False}),
]


def tricks_on(recipe: dict[str, Any]) -> list[Trick]:
    """The tricks this recipe turns on, in the table's order."""
    return [t for t in TRICKS if t.on(recipe)]


def plan_line(recipe: dict[str, Any]) -> str:
    """The dry-run plan's ``tricks:`` value: each trick on, with the values of its fields that are set."""
    parts = []
    for trick in tricks_on(recipe):
        values = ", ".join(f"{f}={recipe[f]}" for f in trick.fields if recipe.get(f) not in (None, False))
        parts.append(f"{trick.name} ({values})" if values else trick.name)
    return "; ".join(parts) or "none"
