"""Recipes: dataclass fields, YAML files and command-line overrides.

Precedence is field default < recipe file < command line. Every field has a
one-line help (shown by ``--help``); recipe keys are exactly the field names,
which follow HF ``TrainingArguments`` where one exists.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import math
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

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
    learning_rate: float = field(1e-3, "Peak learning rate, stated at reference_batch_size.",
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


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def coerce(name: str, value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or the command line) to the field's type, or raise a clear error."""
    base, optional = _unwrap_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~") and optional):
        if optional:
            return None
        raise UserError(f"{name} in {where} cannot be null")
    origin = typing.get_origin(base)

    def bad(expected: str) -> UserError:
        return UserError(f"{name} in {where} must be {expected}, got {value!r}")

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


def _check_range(name: str, value: Any, meta: dict, where: str) -> None:
    if value is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("exclusive_min") and value == lo)):
        op = ">" if meta.get("exclusive_min") else ">="
        raise UserError(f"{name} in {where} must be {op} {lo}, got {value}")
    if hi is not None and (value > hi or (meta.get("exclusive_max") and value == hi)):
        op = "<" if meta.get("exclusive_max") else "<="
        raise UserError(f"{name} in {where} must be {op} {hi}, got {value}")


def _closest(name: str, names: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else "; see --help for valid fields"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a recipe that sets a field twice is a mistake."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, typing.Hashable):  # PyYAML itself names an unhashable key
                continue
            if key in seen:
                raise UserError(f"recipe file {self.name} sets '{key}' twice (lines {seen[key]} and {line}); "
                                f"keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


# Not fields, but asked for: say where the value comes from instead of "unknown field".
_NOT_FIELDS = {"hub_token": "a Hub token is never read from a recipe or flag (recipes get shared and pushed): "
                            "set HF_TOKEN or run `hf auth login`",
               "save_strategy": "fastft saves checkpoints by checkpointing_steps: N (every N steps, like HF's "
                                "save_steps), epoch, or unset for none",
               "logging_strategy": "fastft logs every logging_steps optimizer steps",
               "do_train": "fastft train trains; fastft eval evaluates a saved model",
               "do_eval": "evaluation follows eval_strategy; fastft eval evaluates a saved model"}


def _unknown(key: str, where: str, names: Sequence[str]) -> UserError:
    if key in _NOT_FIELDS:
        return UserError(f"'{key}' in {where}: {_NOT_FIELDS[key]}")
    return UserError(f"unknown field '{key}' in {where}{_closest(key, names)}")


RECIPES = Path(__file__).resolve().parent / "recipes"  # the shipped recipes, <task>/<name>.yaml


def shipped_recipes(task: Optional[str] = None) -> list[Path]:
    """The recipes installed with fastft, of one task (a folder of RECIPES) or all."""
    folders = [RECIPES / task] if task else sorted(p for p in RECIPES.iterdir() if p.is_dir())
    return sorted(f for folder in folders if folder.is_dir() for f in folder.glob("*.yaml"))


def resolve_recipe(config: str, task: Optional[str] = None) -> Path:
    """``--config``: a path as given, else a shipped recipe's name (``quickstart`` for this task, or
    ``image/quickstart``), so a recipe works from any folder."""
    path = Path(config).expanduser()
    if path.exists():
        return path
    name = config.removesuffix(".yaml").removesuffix(".yml")
    for candidate in ([RECIPES / task / f"{name}.yaml"] if task else []) + [RECIPES / f"{name}.yaml"]:
        if candidate.is_file():
            return candidate
    names = [r.stem if task else f"{r.parent.name}/{r.stem}" for r in shipped_recipes(task)]
    what = f"recipe file {config} does not exist" if "/" in config or path.suffix else \
        f"recipe {config!r} is neither a file nor a shipped recipe{f' of task {task}' if task else ''}"
    raise UserError(f"{what}; shipped recipes: {', '.join(names)} (`fastft recipes` lists them)")


def load_recipe(path: str | Path, fields: dict[str, dataclasses.Field]) -> dict[str, Any]:
    """Read a YAML recipe and return its values checked against the fields (HF aliases mapped)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"recipe file {path} is a folder; give a YAML file such as recipes/image/quickstart.yaml")
    if not path.is_file():
        raise UserError(f"recipe file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"recipe file {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                        f"{err.start}); save it as UTF-8") from None
    except OSError as err:
        raise UserError(f"recipe file {path} cannot be read ({err.strerror})") from None
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data() or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"recipe file {path} is not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise UserError(f"recipe file {path} must be a mapping of field: value, got {type(data).__name__}")
    values, aliased = {}, {}
    for key, value in data.items():
        if key in ALIASES:
            aliased[key] = value
            continue
        if key in fields and fields[key].metadata.get("cli_only"):
            raise UserError(f"{key} in {path} is a command-line flag only (--{key}), not a recipe field: it "
                            f"changes what one launch does, and a recipe describes the run")
        if key not in fields:
            raise _unknown(str(key), str(path), list(fields))
        values[key] = coerce(key, value, fields[key].type, str(path))
    values.update(map_aliases(aliased, values, str(path)))
    return values


def _warmup_ratio(value: float) -> float:
    if not 0 <= value < 1:
        raise UserError(f"warmup_ratio must be >= 0 and < 1 (a share of the total steps), got {value:g}")
    return value


# HF TrainingArguments / no_trainer names that fastft spells otherwise: alias -> (field, alias type, mapping).
# A mapping to None means "no change" (e.g. bf16: false leaves mixed_precision alone).
ALIASES: dict[str, tuple[str, Any, Callable[[Any], Any]]] = {
    "bf16": ("mixed_precision", bool, lambda on: "bf16" if on else None),
    "fp16": ("mixed_precision", bool, lambda on: "fp16" if on else None),
    "save_steps": ("checkpointing_steps", int, lambda n: str(n)),
    "with_tracking": ("report_to", bool, lambda on: "all" if on else None),
    "warmup_ratio": ("warmup_steps", float, _warmup_ratio),
    "evaluation_strategy": ("eval_strategy", Literal["steps", "epoch", "no"], lambda v: v),
}


def map_aliases(aliased: dict[str, Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    """Field values for the HF names in ``aliased`` (from one source); a clash with a field set there too,
    or with another alias, is an error rather than a silent pick."""
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for alias, raw in aliased.items():
        target, kind, mapping = ALIASES[alias]
        given = coerce(alias, raw, kind, where)
        if alias == "save_steps" and given < 1:
            raise UserError(f"save_steps in {where} must be >= 1, got {given}")
        value = mapping(given)
        if value is None:
            continue
        for other, other_value in ((target, values.get(target)), (origin.get(target), out.get(target))):
            if other is not None and other_value is not None and other_value != value:
                raise UserError(f"{alias} and {other} in {where} both set {target} ({value!r} vs "
                                f"{other_value!r}); keep one")
        out[target], origin[target] = value, alias
    return out


def _all_fields(classes: Sequence[type]) -> dict[str, dataclasses.Field]:
    fields: dict[str, dataclasses.Field] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            f.type = hints[f.name]
            fields[f.name] = f
    return fields


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # argparse would print usage and exit
        raise UserError(f"command line: {message}; see --help")


def unknown_flag(unknown: Sequence[str], names: Sequence[str]) -> UserError:
    """The error for argparse's leftover arguments: the first flag, and the field it was likely meant as."""
    flag = next((u for u in unknown if u.startswith("-")), unknown[0])
    key = flag.lstrip("-").split("=")[0]
    if key in _NOT_FIELDS:
        return _unknown(key, "the command line", names)
    hint = _closest(key, names) if flag.startswith("-") else "; flags look like --field value"
    return UserError(f"unknown command-line argument '{flag}'{hint}")


# --help sections: every field of every task is in one (tests/test_cli.py checks it).
HELP_GROUPS: dict[str, tuple[str, ...]] = {
    "run": ("output_dir", "overwrite_output_dir", "seed", "task", "dry_run", "world_size", "lr_find",
            "lr_find_start", "lr_find_end", "lr_find_steps"),
    "data": ("dataset_name", "dataset_config_name", "data_dir", "train_file", "validation_file", "test_file",
             "train_split", "eval_split", "train_val_split", "image_column", "label_column", "audio_column",
             "text_column", "source_column", "target_column", "source_lang", "target_lang", "source_prefix",
             "max_source_length", "max_target_length", "max_duration_s", "min_duration_s", "on_bad_image",
             "max_train_samples", "max_eval_samples", "dataloader_num_workers"),
    "model": ("model_name_or_path", "pretrained", "zero_init_head", "encoder_name_or_path", "decoder_name_or_path",
              "tokenizer_name", "source_lang_code", "target_lang_code", "language", "asr_task", "whisper_window_s",
              "freeze_encoder", "freeze_feature_encoder", "freeze_embeddings", "cache_encoder_outputs"),
    "batch, optimizer and schedule": (
        "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
        "auto_find_batch_size", "learning_rate", "reference_batch_size", "lr_scaling", "optim", "weight_decay",
        "adam_beta1", "adam_beta2", "adam_epsilon", "momentum", "max_grad_norm", "lr_scheduler_type",
        "warmup_steps", "min_lr_ratio", "lr_decay_epochs", "lr_decay_rate", "one_cycle_div_factor",
        "one_cycle_final_div_factor", "one_cycle_anneal", "one_cycle_pct_start", "cyclic_mode",
        "cyclic_base_lr_ratio", "cyclic_step_size", "cyclic_gamma", "cycle_momentum", "base_momentum",
        "max_momentum"),
    "tricks": ("label_smoothing_factor", "mixup_alpha", "cutmix_alpha", "mixup_prob", "mixup_switch_prob",
               "auto_augment", "hflip", "train_crop_scale_min", "image_size", "eval_crop_pct", "freeze_epochs",
               "head_lr_scale", "layer_decay", "mixed_precision", "channels_last", "model_ema", "model_ema_decay",
               "model_ema_warmup"),
    "evaluation and checkpoints": (
        "eval_strategy", "eval_steps", "per_device_eval_batch_size", "eval_before_training", "num_beams",
        "max_new_tokens", "eval_lowercase", "text_normalization", "target_metric", "target_value",
        "stop_at_target", "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
        "checkpointing_steps", "save_total_limit", "resume_from_checkpoint", "logging_steps", "report_to"),
    "Hub": ("push_to_hub", "hub_model_id", "hub_private_repo", "hub_revision", "hub_strategy"),
}
_GROUP_OF = {name: group for group, names in HELP_GROUPS.items() for name in names}


def _add_flag(group: Any, name: str, tp: Any, help: str) -> None:
    tp, _ = _unwrap_optional(tp)
    kwargs: dict[str, Any] = {"help": help}
    if tp is bool:
        kwargs.update(nargs="?", const="true", metavar="BOOL")
    elif tp is list or typing.get_origin(tp) is list:
        kwargs.update(nargs="*", metavar="V")
    elif typing.get_origin(tp) is Literal:
        kwargs["metavar"] = "|".join(typing.get_args(tp))
    else:
        kwargs["metavar"] = tp.__name__.upper()
    group.add_argument(f"--{name}", **kwargs)


def _build_parser(prog: str, classes: Sequence[type], usage: Optional[str] = None) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, usage=usage or "%(prog)s [--config RECIPE] [--FIELD VALUE ...]",
                           allow_abbrev=False, argument_default=argparse.SUPPRESS,
                           description="Recipe fields; precedence: default < --config recipe < flag.")
    parser.add_argument("--config", help="YAML recipe whose keys are the fields below: a path, or a shipped "
                                         "recipe's name such as quickstart (`fastft recipes` lists them).")
    groups = {name: parser.add_argument_group(name) for name in [*HELP_GROUPS, "other"]}
    for name, f in _all_fields(classes).items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        _add_flag(groups[_GROUP_OF.get(name, "other")], name, f.type, f"{f.metadata['help']} (default: {default})")
    aliases = parser.add_argument_group("HF Trainer names", "accepted in recipes too, and mapped to the field named")
    for alias, (target, kind, _) in ALIASES.items():
        _add_flag(aliases, alias, kind, f"-> {target}")
    if not groups["other"]._group_actions:
        parser._action_groups.remove(groups["other"])
    return parser


def _is_negative_number(token: str) -> bool:
    try:
        return token.startswith("-") and float(token) < 0
    except ValueError:
        return False


def parse_args(classes: Sequence[type], argv: Sequence[str] | None = None, prog: str | None = None,
               task: Optional[str] = None, usage: Optional[str] = None) -> list[Any]:
    """Resolve dataclass instances from defaults, ``--config`` and command-line flags.

    ``task`` (image, translation, speech) lets ``--config`` name a shipped recipe of that task.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse reads "-1e-3" as a flag; glue a negative number to its field as --field=-1e-3.
    for i in range(len(argv) - 2, -1, -1):
        if argv[i].startswith("--") and "=" not in argv[i] and _is_negative_number(argv[i + 1]):
            argv[i:i + 2] = [f"{argv[i]}={argv[i + 1]}"]
    fields = _all_fields(classes)
    parser = _build_parser(prog or Path(sys.argv[0]).name, classes, usage)
    ns, unknown = parser.parse_known_args(argv)
    if unknown:
        raise unknown_flag(unknown, list(fields) + list(ALIASES))
    cli = vars(ns)
    config = cli.pop("config", None)
    recipe = resolve_recipe(config, task) if config else None
    aliased = {k: cli.pop(k) for k in list(cli) if k in ALIASES}
    overrides = {key: coerce(key, raw, fields[key].type, "the command line") for key, raw in cli.items()}
    overrides.update(map_aliases(aliased, overrides, "the command line"))
    return build_args(classes, load_recipe(recipe, fields) if recipe else {}, overrides, str(recipe))


def build_args(classes: Sequence[type], recipe: dict[str, Any], overrides: dict[str, Any],
               recipe_name: str = "the recipe", overrides_name: str = "the command line") -> list[Any]:
    """The dataclass instances from coerced recipe values and overrides (which win), range-checked."""
    fields = _all_fields(classes)
    values = {**recipe, **overrides}
    where = {k: (overrides_name if k in overrides else recipe_name) for k in values}
    out = []
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        for k, v in kwargs.items():
            _check_range(k, v, fields[k].metadata, where[k])
        out.append(cls(**kwargs))
    return out


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
    trackers(args.report_to)
