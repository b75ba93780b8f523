"""Checkpoints in ``output_dir/checkpoint-<step>``: atomic writes, rotation, resume with fallback.

A checkpoint is written into a temporary folder and renamed only once it is
complete (``fastft_state.json`` is the last file in it), so a run killed while
saving never leaves a folder that a resume would trust. A checkpoint that is
complete but cannot be loaded (a damaged file) is skipped for an older one.

Nothing in a checkpoint is unpickled: accelerate reads its own files with
``weights_only=True``, and fastft keeps its state (loop position, schedule step,
the recipe it was made with) in ``fastft_state.json`` and the weight average in
``ema.safetensors``. A folder holding a pickle that accelerate would load without
that guard (a planted ``custom_checkpoint_0.pkl`` runs code when loaded) is refused.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import typing
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from accelerate import Accelerator
from safetensors import safe_open

from fastft import reporting
from fastft.config import to_dict
from fastft.errors import UserError

if TYPE_CHECKING:
    from fastft.config import TrainingArguments
    from fastft.ema import WeightAverage
    from fastft.schedules import Scheduler

_PATTERN = re.compile(r"^checkpoint-(\d+)$")
MARKER = "fastft_state.json"
EMA_FILE = "ema.safetensors"
# What accelerate.load_state reads with torch.load(weights_only=False): objects registered for checkpointing.
_PICKLES = re.compile(r"^custom_checkpoint_\d+\.pkl$")
# Plan fields a resumed run must share with the checkpoint, or its schedule, data order or weight average diverge.
PLAN_KEYS = ("global_batch_size", "total_steps", "scaled_learning_rate", "num_train_samples", "model_ema_decay")
# Recipe fields that may change on resume: where and how often a run reports, evaluates and saves, not what it
# trains. Every other field is recorded and must match. target_* are recorded: time_to_target_s is measured
# against them. The per-device batch is recorded: batches_in_epoch counts micro-batches of that size.
FREE_FIELDS = frozenset({
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "logging_steps", "eval_strategy", "eval_steps",
    "per_device_eval_batch_size", "max_eval_samples", "checkpointing_steps", "save_total_limit", "report_to",
    "dataloader_num_workers", "auto_find_batch_size", "push_to_hub", "hub_model_id", "hub_private_repo",
    "hub_revision", "hub_strategy", "lr_find", "lr_find_start", "lr_find_end", "lr_find_steps", "dry_run",
    "world_size", "stop_at_target",
    # the same weights, computed or saved another way: gradient checkpointing after an out-of-memory, say
    "gradient_checkpointing", "merge_lora",
    # task fields that change only how a run is evaluated
    "eval_split", "validation_file", "test_file", "eval_crop_pct", "num_beams", "max_new_tokens",
    "eval_before_training", "eval_lowercase", "text_normalization",
})
# Paths may change for a good reason (a moved folder): said in a warning, not refused. A different model
# still fails to load its checkpoint, and other data still changes num_train_samples in most cases.
PATH_FIELDS = frozenset({"model_name_or_path", "encoder_name_or_path", "decoder_name_or_path", "tokenizer_name",
                         "data_dir", "train_file"})


ADDED_LATER = ("best_step",)  # fields a checkpoint of an earlier fastft lacks; they start unset


@dataclasses.dataclass
class TrainState:
    """Loop position and timing that must survive a resume (kept in ``fastft_state.json``)."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches already consumed in `epoch`
    elapsed_s: float = 0.0  # training wall time before this process started
    time_to_target_s: Optional[float] = None
    best_metric: Optional[float] = None  # of metric_for_best_model
    best_step: Optional[int] = None  # the optimizer step of that evaluation
    last_eval_step: int = -1
    last_metric: Optional[float] = None  # main metric of the last evaluation
    skipped_steps: int = 0  # optimizer steps the fp16 loss scaler skipped

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set every field from ``state``; ValueError (and nothing set) unless it holds exactly them, well typed.

        The state comes from a JSON file, which may have been edited by hand.
        """
        hints = typing.get_type_hints(TrainState)
        state = {**{name: None for name in ADDED_LATER}, **state}
        if set(state) != set(hints):
            missing, unknown = sorted(set(hints) - set(state)), sorted(set(state) - set(hints))
            raise ValueError("; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                       + ([f"unknown {', '.join(unknown)}"] if unknown else [])))
        values = {}
        for name, hint in hints.items():
            value, optional = state[name], type(None) in typing.get_args(hint)
            kind = int if int in (hint, *typing.get_args(hint)) else float
            if value is None and optional:
                values[name] = None
            elif isinstance(value, bool) or not isinstance(value, (int,) if kind is int else (int, float)):
                raise ValueError(f"{name} must be {'a whole number' if kind is int else 'a number'}"
                                 f"{' or null' if optional else ''}, got {json.dumps(value)[:40]}")
            else:
                values[name] = kind(value)
        for name, value in values.items():
            setattr(self, name, value)


def run_identity(args: TrainingArguments, plan: dict[str, Any], task_args: Any = None) -> dict[str, Any]:
    """What a resume must share with its checkpoint, as the marker stores it (JSON values)."""
    fields = to_dict(task_args, args) if task_args is not None else to_dict(args)
    recipe = {k: v for k, v in fields.items() if k not in FREE_FIELDS}
    return json.loads(json.dumps({"plan": {k: plan[k] for k in PLAN_KEYS}, "recipe": recipe}))


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _PATTERN.match(path.name)
        if match and path.is_dir():
            if (path / MARKER).is_file():
                found.append((int(match.group(1)), path))
            else:
                warnings.warn(f"skipping incomplete checkpoint {path}", stacklevel=2)
    return [p for _, p in sorted(found)]


def remove_partial(output_dir: str | Path) -> None:
    """Drop temporary folders of saves that a kill interrupted."""
    for tmp in Path(output_dir).glob(".tmp-checkpoint-*"):
        shutil.rmtree(tmp, ignore_errors=True)


class _Unusable(Exception):
    """A checkpoint that must not or cannot be loaded; the message says which file and why."""


def _read_marker(path: Path) -> dict[str, Any]:
    """The marker, checked before anything of the checkpoint is loaded."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError, RecursionError) as err:  # UnicodeDecodeError, JSONDecodeError: ValueErrors
        raise _Unusable(f"{MARKER} is not readable JSON ({err})") from None
    if not isinstance(marker, dict):
        raise _Unusable(f"{MARKER} holds {type(marker).__name__}, not a JSON object")
    try:
        TrainState().load_state_dict({k: v for k, v in marker.items() if k in TrainState.__dataclass_fields__})
    except ValueError as err:
        raise _Unusable(f"{MARKER} is damaged ({err})") from None
    scheduler = marker.get("scheduler")
    count = scheduler.get("step_count") if isinstance(scheduler, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise _Unusable(f"{MARKER} is damaged (scheduler must be {{\"step_count\": <whole number>}}, "
                        f"got {json.dumps(scheduler)[:40]})")
    metric = marker.get("metric")
    if metric is not None and (isinstance(metric, bool) or not isinstance(metric, (int, float))):
        raise _Unusable(f"{MARKER} is damaged (metric must be a number or null, got {json.dumps(metric)[:40]})")
    for key in ("plan", "recipe"):
        if not isinstance(marker.get(key, {}), dict):
            raise _Unusable(f"{MARKER} is damaged ({key} must be a JSON object)")
    return marker


def _refuse_pickles(path: Path) -> None:
    try:
        pickles = sorted(p.name for p in path.iterdir() if _PICKLES.match(p.name))
    except OSError as err:
        raise _Unusable(f"the folder cannot be read ({err.strerror})") from None
    if pickles:
        raise _Unusable(f"it holds {', '.join(pickles)}: fastft does not load pickles, which can run code "
                        f"(older fastft versions wrote them)")


def _check_weights(path: Path, with_ema: bool) -> None:
    """Catch missing or truncated weights before any state is overwritten."""
    if with_ema and not (path / EMA_FILE).is_file():
        raise _Unusable(f"{EMA_FILE} is missing")
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):  # reads the header, which also says how long the file must be
                pass
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise _Unusable(f"{weights.name} is damaged ({str(err).strip()[:200]})") from None


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, state: TrainState, scheduler: Scheduler,
                    ema: Optional[WeightAverage], identity: dict[str, Any], save_total_limit: Optional[int],
                    greater_is_better: bool = True) -> Path:
    """Save model, optimizer, RNG (accelerate), weight average, schedule and loop state atomically.

    ``identity`` is ``run_identity(args, plan)``. Keeps the newest ``save_total_limit`` checkpoints
    plus the one with the best main metric.
    """
    root = Path(output_dir)
    final = root / f"checkpoint-{state.step}"
    tmp = root / f".tmp-checkpoint-{state.step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:  # every process holds the same average
            ema.save(tmp / EMA_FILE)
        metric = state.last_metric if state.last_eval_step == state.step else None
        info = {**state.state_dict(), "metric": metric, "scheduler": scheduler.state_dict(), **identity}
        (tmp / MARKER).write_text(json.dumps(info, indent=1))
        reporting.usual_modes(tmp)  # a checkpoint handed to another user must be readable like the rest
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if save_total_limit:
            _rotate(root, save_total_limit, greater_is_better)
    accelerator.wait_for_everyone()
    return final


def _metric(path: Path) -> Optional[float]:
    try:
        return _read_marker(path).get("metric")
    except _Unusable:  # a damaged marker has no best metric to keep it for
        return None


def _rotate(root: Path, keep: int, greater_is_better: bool) -> None:
    found = list_checkpoints(root)
    scored = [(m, p) for p in found if (m := _metric(p)) is not None]
    best = (max if greater_is_better else min)(scored, key=lambda mp: mp[0])[1] if scored else None
    for old in found[:-keep]:
        if old != best:
            shutil.rmtree(old, ignore_errors=True)


def candidates(output_dir: str | Path, resume_from_checkpoint: Optional[str]) -> list[Path]:
    """Checkpoints to try, newest first: the one named, else every complete one in output_dir."""
    if resume_from_checkpoint:
        path = Path(resume_from_checkpoint)
        if not path.is_dir():
            raise UserError(f"resume_from_checkpoint {path} is not a folder; pass a checkpoint-<step> folder "
                            f"or leave it unset to resume from the newest in output_dir")
        if not (path / MARKER).is_file():
            inside = list_checkpoints(path)
            if inside:  # an output_dir: the user meant one of its checkpoints
                raise UserError(f"resume_from_checkpoint {path} is an output_dir, not a checkpoint; pass one of its "
                                f"checkpoint-<step> folders (newest: {inside[-1]}), or set output_dir to it and "
                                f"leave resume_from_checkpoint unset")
            raise UserError(f"resume_from_checkpoint {path} is not a complete fastft checkpoint "
                            f"(no {MARKER}); pick another checkpoint-<step> folder")
        return [path]
    return list_checkpoints(output_dir)[::-1]


def _changes(marker: dict[str, Any], identity: dict[str, Any]) -> dict[str, str]:
    """``field: "field old -> new"`` for each recorded value this run differs in; a key an older marker lacks
    is not checked."""
    # The plan's value wins over the recipe's: model_ema_decay is None in the plan when model_ema is off.
    saved = {**marker.get("recipe", {}), **marker.get("plan", {})}
    now = {**identity["recipe"], **identity["plan"]}
    return {k: f"{k} {saved[k]} -> {now[k]}" for k in now if k in saved and saved[k] != now[k]}


def load_checkpoint(accelerator: Accelerator, paths: list[Path], state: TrainState, scheduler: Scheduler,
                    ema: Optional[WeightAverage], identity: dict[str, Any], explicit: bool) -> Path:
    """Load the first checkpoint of ``paths`` that this run can use into the arguments; return it.

    ``identity`` is ``run_identity(args, plan)``: a checkpoint made with other training values, or of
    another model, is refused with a clear error. One that is damaged or holds a pickle is
    refused when ``explicit`` (named by the user), else skipped for an older one with a warning.
    """
    skipped = []
    for path in paths:
        try:
            _refuse_pickles(path)
            marker = _read_marker(path)
            changed = _changes(marker, identity)
            refused = [text for field, text in changed.items() if field not in PATH_FIELDS]
            if refused:  # the same in every checkpoint of a run: not skipped, refused
                raise UserError(f"checkpoint {path} was made with other training values ({'; '.join(refused)}); "
                                f"resume with the original recipe and world size, or pass --overwrite_output_dir "
                                f"true to start afresh")
            for field, text in changed.items():
                warnings.warn(f"resuming {path} with {text}; the run goes on from the checkpoint's weights as "
                              f"if the path had not changed", stacklevel=2)
            _check_weights(path, ema is not None)
        except _Unusable as err:
            if explicit:
                raise UserError(f"checkpoint {path} cannot be resumed: {err}; pass another checkpoint-<step> "
                                f"folder, or drop resume_from_checkpoint and pass --overwrite_output_dir true "
                                f"to start afresh") from None
            warnings.warn(f"skipping unreadable checkpoint {path}: {err}", stacklevel=2)
            skipped.append(f"{path.name}: {err}")
            continue
        try:
            accelerator.load_state(str(path))
            if ema is not None:  # else a resumed run would average from the resumed weights
                ema.load(path / EMA_FILE)
        except Exception as err:  # a file damaged past its header, or weights of another model
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            other_model = any(s in str(err) for s in ("size mismatch", "Missing key", "Unexpected key"))
            if explicit or other_model:
                fault = "does not fit this model" if other_model else "could not be loaded"
                raise UserError(f"checkpoint {path} {fault} ({reason}); resume with the model it was trained "
                                f"from, or pass --overwrite_output_dir true") from None
            warnings.warn(f"skipping unreadable checkpoint {path}: {reason}", stacklevel=2)
            skipped.append(f"{path.name}: {reason}")
            continue
        state.load_state_dict({k: marker[k] for k in TrainState.__dataclass_fields__})
        scheduler.load_state_dict(marker["scheduler"])
        return path
    raise UserError(f"no checkpoint in {paths[0].parent} could be loaded ({'; '.join(skipped)}); pass "
                    f"--overwrite_output_dir true to start afresh")
