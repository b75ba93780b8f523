"""Checkpoints in ``output_dir/checkpoint-<step>``: atomic writes, rotation, resume with fallback.

A checkpoint is written into a temporary folder and renamed only once it is
complete (``fastft_state.json`` is the last file in it), so a run killed while
saving never leaves a folder that a resume would trust. A checkpoint that is
complete but cannot be loaded (a damaged file) is skipped for an older one.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional

from accelerate import Accelerator

from fastft.errors import UserError

_PATTERN = re.compile(r"^checkpoint-(\d+)$")
MARKER = "fastft_state.json"
# Plan fields a resumed run must share with the checkpoint, or its schedule, data order or weight average diverge.
PLAN_KEYS = ("global_batch_size", "total_steps", "scaled_learning_rate", "num_train_samples", "model_ema_decay")


@dataclasses.dataclass
class TrainState:
    """Loop position and timing that must survive a resume (checkpointed by accelerate)."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches already consumed in `epoch`
    elapsed_s: float = 0.0  # training wall time before this process started
    time_to_target_s: Optional[float] = None
    best_metric: Optional[float] = None
    last_eval_step: int = -1
    last_metric: Optional[float] = None  # main metric of the last evaluation
    skipped_steps: int = 0  # optimizer steps the fp16 loss scaler skipped

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


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


def _marker(path: Path) -> dict[str, Any]:
    return json.loads((path / MARKER).read_text())


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, state: TrainState, plan: dict[str, Any],
                    save_total_limit: Optional[int], greater_is_better: bool = True) -> Path:
    """Save model, optimizer, scheduler, RNG and loop state atomically.

    Keeps the newest ``save_total_limit`` checkpoints plus the one with the best main metric.
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
        metric = state.last_metric if state.last_eval_step == state.step else None
        info = {**state.state_dict(), "metric": metric, "plan": {k: plan[k] for k in PLAN_KEYS}}
        (tmp / MARKER).write_text(json.dumps(info, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if save_total_limit:
            _rotate(root, save_total_limit, greater_is_better)
    accelerator.wait_for_everyone()
    return final


def _rotate(root: Path, keep: int, greater_is_better: bool) -> None:
    found = list_checkpoints(root)
    scored = [(m, p) for p in found if (m := _marker(p).get("metric")) is not None]
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
            raise UserError(f"resume_from_checkpoint {path} is not a complete fastft checkpoint "
                            f"(no {MARKER}); pick another checkpoint-<step> folder")
        return [path]
    return list_checkpoints(output_dir)[::-1]


def load_checkpoint(accelerator: Accelerator, paths: list[Path], plan: dict[str, Any], explicit: bool) -> Path:
    """Load the first checkpoint of ``paths`` that this run can use; return it.

    A checkpoint of a different plan (global batch, steps, LR, data size) or model is
    refused with a clear error; a damaged one is skipped for an older one with a warning.
    """
    for path in paths:
        saved = _marker(path).get("plan", {})
        changed = [f"{k} {saved[k]} -> {plan[k]}" for k in PLAN_KEYS if k in saved and saved[k] != plan[k]]
        if changed:
            raise UserError(f"checkpoint {path} was made by a different plan ({'; '.join(changed)}); resume "
                            f"with the original recipe and world size, or pass --overwrite_output_dir true")
        try:
            accelerator.load_state(str(path))
            return path
        except Exception as err:  # a truncated file, or weights of another model
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            other_model = any(s in str(err) for s in ("size mismatch", "Missing key", "Unexpected key"))
            if explicit or other_model:
                raise UserError(f"checkpoint {path} does not fit this model ({reason}); resume with the "
                                f"model it was trained from, or pass --overwrite_output_dir true") from None
            warnings.warn(f"skipping unreadable checkpoint {path}: {reason}", stacklevel=2)
    raise UserError(f"no checkpoint in {paths[0].parent} could be loaded; pass --overwrite_output_dir true to "
                    f"start afresh")
