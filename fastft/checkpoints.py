"""Checkpoints in ``output_dir/checkpoint-<step>``: atomic writes, rotation, resume lookup.

A checkpoint is written into a temporary folder and renamed only once it is
complete (``fastft_state.json`` is the last file in it), so a run killed while
saving never leaves a folder that a resume would trust.
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


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, state: TrainState,
                    save_total_limit: Optional[int]) -> Path:
    """Save model, optimizer, scheduler, RNG and loop state; keep the newest ``save_total_limit``."""
    root = Path(output_dir)
    final = root / f"checkpoint-{state.step}"
    tmp = root / f".tmp-checkpoint-{state.step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / MARKER).write_text(json.dumps(state.state_dict(), indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if save_total_limit:
            for old in list_checkpoints(root)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(output_dir: str | Path, resume_from_checkpoint: Optional[str]) -> Optional[Path]:
    """The checkpoint to resume from: the one named, else the newest complete one in output_dir."""
    if resume_from_checkpoint:
        path = Path(resume_from_checkpoint)
        if not path.is_dir():
            raise UserError(f"resume_from_checkpoint {path} is not a folder; pass a checkpoint-<step> folder "
                            f"or leave it unset to resume from the newest in output_dir")
        if not (path / MARKER).is_file():
            raise UserError(f"resume_from_checkpoint {path} is not a complete fastft checkpoint "
                            f"(no {MARKER}); pick another checkpoint-<step> folder")
        return path
    found = list_checkpoints(output_dir)
    return found[-1] if found else None
