"""The recipe fields every task shares, and the coercion and checks of their values.

Every field has a one-line help (shown by ``--help``); recipe keys are exactly the
field names, which follow HF ``TrainingArguments`` where one exists. Reading recipe
files and command lines is ``fastft.arguments``.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import typing
from typing import Any, Literal, Optional, Sequence

import yaml

from fastft.errors import UserError


def field(default: Any = dataclasses.MISSING, help: str = "", *, min: float | None = None,
          max: float | None = None, exclusive_min: bool = False, exclusive_max: bool = False,
          cli_only: bool = False) -> Any:
    """A recipe field with its one-line help and an optional numeric range."""
    meta = {"help": help, "min": min, "max": max, "exclusive_min": exclusive_min, "exclusive_max": exclusive_max,
            "cli_only": cli_only}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class TrainingArguments:
    """Fields every task shares: the engine, the schedule and the tricks."""

    output_dir: str = field(None, "Folder for checkpoints, metrics, plots and the final model (required).")
    overwrite_output_dir: bool = field(False, "Start afresh even if output_dir holds a finished run.")
    seed: int = field(42, "Random seed for model init, data order and augmentation.", min=0)
    num_train_epochs: float = field(3.0, "Number of passes over the training set (ignored if max_steps > 0).",
                                    min=0, exclusive_min=True)
    max_steps: int = field(-1, "Total optimizer steps; overrides num_train_epochs when > 0; -1: use epochs.")
    per_device_train_batch_size: int = field(32, "Training batch size per process.", min=1)
    per_device_eval_batch_size: int = field(64, "Evaluation batch size per process.", min=1)
    gradient_accumulation_steps: int = field(1, "Micro-batches accumulated per optimizer step.", min=1)
    auto_find_batch_size: bool = field(False, "On out-of-memory, halve the per-device batch and raise "
                                       "accumulation, keeping the global batch.")
    learning_rate: typing.Union[float, Literal["auto"]] = field(
        1e-3, "Peak learning rate, stated at reference_batch_size; auto: an LR range test at the run's start picks it.",
        min=0, exclusive_min=True)
    reference_batch_size: Optional[int] = field(
        None, "Global batch at which learning_rate is stated; unset means no LR scaling.", min=1)
    lr_scaling: Literal["linear", "sqrt", "none"] = field(
        "linear", "How the LR follows global batch / reference_batch_size (Goyal et al. 2017).")
    optim: str = field("adamw", "Optimizer as timm names it (adamw, sgd = Nesterov SGD, momentum = plain SGD, "
                                "lamb, ...) or as HF does (adamw_torch, adamw_torch_fused).")
    weight_decay: float = field(0.0, "Decoupled weight decay (not applied to biases and norms).", min=0)
    adam_beta1: float = field(0.9, "Adam beta1 (cycled inversely to the LR by one_cycle/cyclic).", min=0, max=1)
    adam_beta2: float = field(0.999, "Adam beta2.", min=0, max=1)
    adam_epsilon: float = field(1e-8, "Adam epsilon.", min=0, exclusive_min=True)
    momentum: float = field(0.9, "SGD momentum (cycled inversely to the LR by one_cycle/cyclic).", min=0, max=1)
    max_grad_norm: float = field(1.0, "Clip the global gradient norm to this; 0 turns clipping off.", min=0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "one_cycle", "cyclic", "inverse_sqrt",
                               "multistep"] = field("linear", "LR schedule after warmup.")
    warmup_steps: float = field(0.0, "Warmup length: optimizer steps if >= 1, a ratio of total steps if < 1.",
                                min=0)
    min_lr_ratio: float = field(0.0, "Final LR of linear/cosine as a fraction of the peak.", min=0, max=1)
    lr_decay_epochs: list[float] = field([], "Epochs at which multistep multiplies the LR by lr_decay_rate.")
    lr_decay_rate: float = field(0.1, "Factor applied at each multistep milestone.", min=0, exclusive_min=True)
    one_cycle_div_factor: float = field(25.0, "one_cycle starts at peak / this.", min=1)
    one_cycle_final_div_factor: float = field(1e4, "one_cycle ends at start LR / this.", min=1)
    one_cycle_anneal: Literal["cos", "linear"] = field("cos", "one_cycle interpolation between phases.")
    one_cycle_pct_start: float = field(0.25, "Share of steps one_cycle spends rising (used if warmup_steps is 0).",
                                       min=0, max=1, exclusive_min=True)
    cyclic_mode: Literal["triangular", "triangular2", "exp_range"] = field(
        "triangular", "Cyclical LR policy (Smith 2017).")
    cyclic_base_lr_ratio: float = field(0.25, "Cyclic LR lower bound as a fraction of the peak.",
                                        min=0, max=1)
    cyclic_step_size: Optional[int] = field(None, "Cyclic half-cycle in optimizer steps; unset means 2 epochs.",
                                            min=1)
    cyclic_gamma: float = field(0.99994, "exp_range amplitude decay per optimizer step.", min=0, max=1,
                                exclusive_min=True)
    cycle_momentum: bool = field(True, "Cycle momentum / Adam beta1 inversely to the LR (one_cycle, cyclic).")
    base_momentum: float = field(0.85, "Momentum at the LR peak when cycling.", min=0, max=1)
    max_momentum: float = field(0.95, "Momentum at the LR trough when cycling.", min=0, max=1)
    label_smoothing_factor: float = field(0.0, "Label smoothing epsilon (Szegedy et al. 2016).", min=0, max=1,
                                          exclusive_max=True)
    freeze_epochs: int = field(0, "Epochs to train only the new head before unfreezing the backbone.", min=0)
    restart_schedule_at_unfreeze: bool = field(False, "With freeze_epochs: run the LR schedule over the frozen "
                                               "epochs, then again from its start (warmup included) at the "
                                               "unfreezing, as fastai's fine_tune does.")
    head_lr_scale: float = field(1.0, "LR multiplier for newly initialised weights (head, cross-attention) over "
                                      "the pretrained ones (discriminative LRs).", min=0, exclusive_min=True)
    layer_decay: Optional[float] = field(None, "Layer-wise LR decay: each layer below the top gets this factor.",
                                         min=0, max=1, exclusive_min=True)
    mixed_precision: Optional[Literal["no", "fp16", "bf16"]] = field(
        None, "Mixed precision; unset defers to accelerate launch / its config.")
    channels_last: bool = field(False, "Use the channels_last memory format (faster convolutions).")
    model_ema: bool = field(False, "Keep an exponential moving average of the weights (timm ModelEmaV3); "
                            "evaluate and save it instead of the raw weights.")
    model_ema_decay: float = field(0.9998, "Weight EMA decay per optimizer step (its cap while model_ema_warmup "
                                   "ramps it up).", min=0, max=1)
    model_ema_warmup: bool = field(True, "Ramp the EMA decay up as 1 - step^(-2/3), so a short run averages "
                                   "recent weights rather than the initial ones.")
    peft: Literal["none", "lora"] = field("none", "Parameter-efficient fine-tuning through peft: lora trains "
                                          "low-rank adapters (Hu et al. 2021) and the new head; none: every weight.")
    lora_r: int = field(8, "LoRA rank of each adapter.", min=1)
    lora_alpha: float = field(16.0, "LoRA scaling: the update is multiplied by lora_alpha / lora_r.",
                              min=0, exclusive_min=True)
    lora_dropout: float = field(0.0, "Dropout on the adapters' input.", min=0, max=1, exclusive_max=True)
    lora_target_modules: list[str] = field([], "Names (or name endings) of the Linear/Conv layers that get "
                                               "adapters; unset: the attention projections (q/v, query/value, qkv).")
    merge_lora: bool = field(True, "Also save the adapters merged into the model, which loads without peft "
                                   "(output_dir); the adapters alone are in output_dir/adapter either way.")
    gradient_checkpointing: bool = field(False, "Recompute activations in the backward pass instead of keeping "
                                                "them: less memory, about a third more compute.")
    torch_compile: bool = field(False, "Compile the model with torch.compile (accelerate's dynamo plugin); the "
                                       "compile time counts in the run's time.")
    torch_compile_backend: Optional[str] = field(None, "torch.compile backend (unset: inductor).")
    torch_compile_mode: Optional[Literal["default", "reduce-overhead", "max-autotune",
                                         "max-autotune-no-cudagraphs"]] = field(None, "torch.compile mode.")
    eval_strategy: Literal["steps", "epoch", "no"] = field("epoch", "When to evaluate.")
    eval_steps: Optional[int] = field(None, "Evaluate every N optimizer steps (with eval_strategy: steps).", min=1)
    logging_steps: int = field(50, "Log train loss and LR every N optimizer steps.", min=1)
    checkpointing_steps: Optional[str] = field(None, "Save state every N optimizer steps, or 'epoch'; unset: never.")
    save_total_limit: Optional[int] = field(2, "Keep only the newest N checkpoints.", min=1)
    resume_from_checkpoint: Optional[str] = field(
        None, "Checkpoint folder to resume from; unset resumes from the newest in output_dir if any.")
    report_to: str = field("none", "Trackers for accelerate's log_with, comma-separated (tensorboard, wandb, "
                                   "mlflow, ...), all (every one installed) or none.")
    load_best_model_at_end: bool = field(False, "Save (and push) the weights of the best evaluation by "
                                                "metric_for_best_model, not the last one.")
    metric_for_best_model: Optional[str] = field(None, "Metric that picks the best evaluation, e.g. accuracy or "
                                                       "eval_loss; unset: the task's main metric.")
    greater_is_better: Optional[bool] = field(None, "Whether a higher metric_for_best_model is better; unset: "
                                                    "false for loss, wer, cer and ter, else true.")
    target_metric: Optional[str] = field(None, "Metric for time-to-target, e.g. eval_accuracy.")
    target_value: Optional[float] = field(None, "Value of target_metric that counts as reached.")
    stop_at_target: bool = field(False, "End training at the first evaluation that reaches target_value (the "
                                        "model saved is that evaluation's): the fastest way to a target.")
    dataloader_num_workers: int = field(0, "Worker processes per data loader.", min=0)
    group_by_length: bool = field(False, "Batch training samples of similar token lengths (translation, speech "
                                         "recognition), for less padding: the HF Trainer's groups, in shuffled order.")
    batch_by_tokens: bool = field(False, "Translation: batches of similar lengths up to per_device_train_batch_size "
                                         "x the mean sample's tokens (fairseq's max-tokens); the batch is then a mean.")
    max_train_samples: Optional[int] = field(None, "Truncate the training set (quick runs).", min=1)
    max_eval_samples: Optional[int] = field(None, "Truncate the evaluation set (quick runs).", min=1)
    push_to_hub: bool = field(False, "Upload the model, its card, config.yaml and metrics to the Hugging Face Hub.")
    hub_model_id: Optional[str] = field(None, "Hub repo (user/name or org/name); unset: <you>/<output_dir name>.")
    hub_private_repo: bool = field(False, "Create the Hub repo as private.")
    hub_revision: Optional[str] = field(None, "Branch to push to (created if missing); unset: main.")
    hub_strategy: Literal["end", "every_save"] = field(
        "end", "Push once at the end, or also each checkpoint's model as it is saved (in the background).")
    dry_run: bool = field(False, "Print the resolved plan (batch, LR, steps, schedule) and exit.", cli_only=True)
    lr_find: bool = field(False, "Run an LR range test (Smith 2017) instead of training; writes lr_find.json "
                          "and plots/lr_find.png.", cli_only=True)
    lr_find_start: float = field(1e-7, "LR range test: first LR.", min=0, exclusive_min=True)
    lr_find_end: float = field(10.0, "LR range test: last LR.", min=0, exclusive_min=True)
    lr_find_steps: int = field(100, "LR range test: optimizer steps of the sweep.", min=3)
    world_size: Optional[int] = field(None, "With --dry_run: plan for this many processes (e.g. 256 GPUs) "
                                      "instead of those launched.", min=1, cli_only=True)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """The type without its None, and whether None was allowed (a union of several types stays one)."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional
    return tp, False


def _expected(tp: Any) -> str:
    """What a value of ``tp`` looks like, for an error message."""
    if typing.get_origin(tp) is Literal:
        return " or ".join(map(str, typing.get_args(tp)))
    names = {float: "a number (finite, not inf or nan)", int: "an integer", bool: "true or false", str: "a string"}
    return names.get(tp, str(tp))


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def coerce(name: str, value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or the command line) to the field's type, or raise a clear error."""
    base, optional = unwrap_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~") and optional):
        if optional:
            return None
        raise UserError(f"{name} in {where} cannot be null")
    origin = typing.get_origin(base)

    def bad(expected: str) -> UserError:
        return UserError(f"{name} in {where} must be {expected}, got {value!r}")

    if origin is typing.Union:  # e.g. a number or "auto": the first member that takes the value
        for member in typing.get_args(base):
            try:
                return coerce(name, value, member, where)
            except UserError:
                pass
        raise bad(" or ".join(_expected(m) for m in typing.get_args(base)))

    if origin is Literal:
        choices = typing.get_args(base)
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted no/off/yes/on as a bool
            value = next((c for c in choices if str(c).lower() in (_TRUE if value else _FALSE)), value)
        if value not in choices:
            raise bad("one of " + ", ".join(map(str, choices)))
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise bad("true or false")
    if base is int:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise bad("an integer")
    if base is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):  # nan and inf would slip through every range check
            raise bad("a number (finite, not inf or nan)")
        return number
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad("a string")
    if base is list or origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise bad("a list")
        # "30,60" and "30 60" both split, whether one YAML string or one command-line word
        items = [v for item in value for v in (item.replace(",", " ").split() if isinstance(item, str) else [item])]
        item_type = (typing.get_args(base) or (Any,))[0]
        if item_type is Any:
            return [yaml.safe_load(v) if isinstance(v, str) else v for v in items]
        return [coerce(name, v, item_type, where) for v in items]
    return value


def check_range(name: str, value: Any, meta: dict, where: str) -> None:
    if value is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("exclusive_min") and value == lo)):
        op = ">" if meta.get("exclusive_min") else ">="
        raise UserError(f"{name} in {where} must be {op} {lo}, got {value}")
    if hi is not None and (value > hi or (meta.get("exclusive_max") and value == hi)):
        op = "<" if meta.get("exclusive_max") else "<="
        raise UserError(f"{name} in {where} must be {op} {hi}, got {value}")


def closest(name: str, names: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else "; see --help for valid fields"


def to_dict(*objs: Any) -> dict[str, Any]:
    """Flatten dataclass instances into one recipe mapping (for config.yaml)."""
    merged: dict[str, Any] = {}
    for obj in objs:
        merged.update({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
                       if not f.metadata.get("cli_only")})
    return merged


# accelerate's tracker names and the module each needs; accelerate drops a missing one with only a log line.
TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                   "comet_ml": ("comet_ml",), "aim": ("aim",), "clearml": ("clearml",), "dvclive": ("dvclive",),
                   "swanlab": ("swanlab",), "trackio": ("trackio",)}


def trackers(report_to: str) -> list[str]:
    """``report_to`` as accelerate's ``log_with`` list; a name that is unknown or not installed is an error."""
    names = report_to.replace(",", " ").split()
    if names in (["none"], []):
        return []
    if names == ["all"]:
        return ["all"]
    for name in names:
        if name not in TRACKER_MODULES:
            raise UserError(f"report_to {name!r} is not a tracker accelerate knows; use none, all or a "
                            f"comma-separated list of {', '.join(TRACKER_MODULES)}")
        if not any(importlib.util.find_spec(module) for module in TRACKER_MODULES[name]):
            raise UserError(f"report_to {name!r}: the {name} package is not installed; pip install "
                            f"{TRACKER_MODULES[name][0]}, or drop it from report_to")
    return names


def check_training_args(args: TrainingArguments) -> None:
    """Checks across fields that no single field's type or range can make."""
    if args.world_size and not args.dry_run:
        raise UserError("world_size only applies with --dry_run; the launcher decides the real world size")
    if not args.output_dir:
        raise UserError("output_dir is required: set it in the recipe or pass --output_dir DIR")
    if args.max_steps == 0 or args.max_steps < -1:
        raise UserError(f"max_steps must be a positive number of optimizer steps, or -1 to train "
                        f"num_train_epochs; got {args.max_steps}")
    if (args.target_metric is None) != (args.target_value is None):
        raise UserError("target_metric and target_value go together: set both or neither")
    if args.stop_at_target and (args.target_metric is None or args.eval_strategy == "no"):
        raise UserError("stop_at_target stops at the first evaluation whose target_metric reaches target_value: set "
                        "target_metric, target_value and an eval_strategy (steps or epoch)")
    if args.load_best_model_at_end and args.eval_strategy == "no":
        raise UserError("load_best_model_at_end picks the best evaluation, and eval_strategy is 'no': set "
                        "eval_strategy steps (with eval_steps) or epoch")
    if args.checkpointing_steps not in (None, "epoch") and not (str(args.checkpointing_steps).isdigit()
                                                                 and int(args.checkpointing_steps) > 0):
        raise UserError(f"checkpointing_steps must be a whole number of steps (1 or more) or 'epoch', "
                        f"got {args.checkpointing_steps!r}")
    if args.push_to_hub and args.hub_strategy == "every_save" and not args.checkpointing_steps:
        raise UserError("hub_strategy every_save pushes at each checkpoint, and checkpointing_steps is unset: "
                        "set checkpointing_steps (N or epoch) or use hub_strategy end")
    if args.lr_scheduler_type == "multistep" and not args.lr_decay_epochs:
        raise UserError("lr_scheduler_type multistep needs lr_decay_epochs (the epochs at which the LR drops, "
                        "e.g. 30 60 80)")
    if args.lr_decay_epochs and args.lr_scheduler_type != "multistep":
        raise UserError(f"lr_decay_epochs only applies with lr_scheduler_type multistep (it is "
                        f"{args.lr_scheduler_type!r}); drop it or switch to multistep")
    if any(e <= 0 for e in args.lr_decay_epochs):
        raise UserError(f"lr_decay_epochs must all be > 0, got {args.lr_decay_epochs}")
    if args.batch_by_tokens and args.group_by_length:
        raise UserError("batch_by_tokens already batches samples of similar lengths (in shuffled order); "
                        "drop group_by_length")
    if args.restart_schedule_at_unfreeze and not args.freeze_epochs:
        raise UserError("restart_schedule_at_unfreeze restarts the LR schedule when the backbone unfreezes, and "
                        "freeze_epochs is 0: set freeze_epochs (head-only epochs first) or drop it")
    if args.restart_schedule_at_unfreeze and args.lr_scheduler_type == "multistep":
        raise UserError("restart_schedule_at_unfreeze does not apply to lr_scheduler_type multistep (its "
                        "lr_decay_epochs count from the run's start); use linear, cosine or one_cycle")
    if args.reference_batch_size and args.lr_scaling == "none":
        raise UserError("reference_batch_size does nothing with lr_scaling none; drop it, or choose linear or "
                        "sqrt scaling")
    if args.target_metric == "eval_accuracy" and not 0 <= args.target_value <= 1:
        raise UserError(f"target_value {args.target_value:g} for eval_accuracy can never be reached: accuracy is "
                        f"a fraction from 0 to 1" + (f"; did you mean {args.target_value / 100:g}?"
                                                       if 1 < args.target_value <= 100 else ""))
    if args.eval_strategy == "steps" and not args.eval_steps:
        raise UserError("eval_strategy 'steps' needs eval_steps (evaluate every N optimizer steps)")
    if args.eval_steps and args.eval_strategy != "steps":  # HF ignores it silently; the user meant something
        raise UserError(f"eval_steps {args.eval_steps} needs eval_strategy: steps (it is {args.eval_strategy!r}); "
                        f"set eval_strategy steps or drop eval_steps")
    if args.model_ema and args.model_ema_decay >= 1:
        raise UserError(f"model_ema_decay must be below 1 (at 1 the average never moves), got {args.model_ema_decay}; "
                        f"timm's default is 0.9998")
    if args.peft == "none" and args.lora_target_modules:
        raise UserError("lora_target_modules applies with peft: lora (peft is 'none'); set peft lora or drop it")
    if (args.torch_compile_backend or args.torch_compile_mode) and not args.torch_compile:
        raise UserError("torch_compile_backend and torch_compile_mode apply with torch_compile: true; set it or "
                        "drop them")
    trackers(args.report_to)
