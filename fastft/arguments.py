"""Recipes and command lines to the fields' dataclasses: YAML files, shipped recipe names, HF Trainer
names (aliases), flags and the grouped ``--help``.

Precedence is field default < recipe file < command line; values are coerced and
range-checked by ``fastft.config``, where the fields are declared.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import yaml

from fastft.config import check_range, closest, coerce, unwrap_optional
from fastft.errors import UserError


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


def unknown_field(key: str, where: str, names: Sequence[str]) -> UserError:
    if key in _NOT_FIELDS:
        return UserError(f"'{key}' in {where}: {_NOT_FIELDS[key]}")
    return UserError(f"unknown field '{key}' in {where}{closest(key, names)}")


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
            raise unknown_field(str(key), str(path), list(fields))
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


def all_fields(classes: Sequence[type]) -> dict[str, dataclasses.Field]:
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
        return unknown_field(key, "the command line", names)
    hint = closest(key, names) if flag.startswith("-") else "; flags look like --field value"
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
               "restart_schedule_at_unfreeze", "cache_frozen_features", "head_lr_scale", "layer_decay",
               "mixed_precision", "channels_last",
               "model_ema", "model_ema_decay", "model_ema_warmup", "gradient_checkpointing", "torch_compile",
               "torch_compile_backend", "torch_compile_mode", "group_by_length", "batch_by_tokens"),
    "parameter-efficient fine-tuning": ("peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
                                        "merge_lora"),
    "evaluation and checkpoints": (
        "eval_strategy", "eval_steps", "per_device_eval_batch_size", "eval_before_training", "num_beams",
        "max_new_tokens", "eval_lowercase", "text_normalization", "target_metric", "target_value",
        "stop_at_target", "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
        "checkpointing_steps", "save_total_limit", "resume_from_checkpoint", "logging_steps", "report_to"),
    "Hub": ("push_to_hub", "hub_model_id", "hub_private_repo", "hub_revision", "hub_strategy"),
}
_GROUP_OF = {name: group for group, names in HELP_GROUPS.items() for name in names}


def _add_flag(group: Any, name: str, tp: Any, help: str) -> None:
    tp, _ = unwrap_optional(tp)
    kwargs: dict[str, Any] = {"help": help}
    if tp is bool:
        kwargs.update(nargs="?", const="true", metavar="BOOL")
    elif tp is list or typing.get_origin(tp) is list:
        kwargs.update(nargs="*", metavar="V")
    elif typing.get_origin(tp) is Literal:
        kwargs["metavar"] = "|".join(typing.get_args(tp))
    elif typing.get_origin(tp) is typing.Union:  # e.g. FLOAT|auto
        kwargs["metavar"] = "|".join("|".join(typing.get_args(m)) if typing.get_origin(m) is Literal
                                     else m.__name__.upper() for m in typing.get_args(tp))
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
    for name, f in all_fields(classes).items():
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
    fields = all_fields(classes)
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
    fields = all_fields(classes)
    values = {**recipe, **overrides}
    where = {k: (overrides_name if k in overrides else recipe_name) for k in values}
    out = []
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        for k, v in kwargs.items():
            check_range(k, v, fields[k].metadata, where[k])
        out.append(cls(**kwargs))
    return out
