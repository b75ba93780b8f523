"""What fastft may write in an output_dir, checked before any data or model is loaded.

fastft writes over only what it wrote: a run in progress is resumed, a finished
run is replaced only with ``overwrite_output_dir``, and a folder holding anything
else (a model to fine-tune from, someone's files) is refused whatever the flags.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastft import checkpoints, reporting
from fastft.config import TrainingArguments
from fastft.errors import UserError


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(out: Path) -> None:
    """Fail now, not after training, when output_dir cannot be created or written (read-only disk, a file in
    the way); probed with a temporary folder that is removed at once, so a refusal leaves no trace."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} exists and is not a folder")
    base = _nearest_existing(out)
    if not base.is_dir():
        raise UserError(f"output_dir {out} cannot be made: {base} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fastft-write-test-", dir=base))
    except OSError as err:
        raise UserError(f"output_dir {out} is not writable ({err.strerror} in {base}); choose a folder "
                        f"you can write to") from None


def check_foreign(out: Path) -> None:
    """Refuse a non-empty folder that no fastft run made: overwrite_output_dir replaces runs, not other files."""
    if not out.is_dir() or reporting.written_by_fastft(out):
        return
    found = sorted(p.name for p in out.iterdir())
    plots = {p.name for p in (out / "plots").iterdir()} if (out / "plots").is_dir() else set()
    # what --lr_find or fastft eval alone leaves
    if set(found) <= {"lr_find.json", "plots", "eval_metrics.json"} and plots <= {"lr_find.png"}:
        return
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise UserError(f"output_dir {out} holds files that fastft did not write ({shown}); fastft never writes "
                        f"over them, not even with overwrite_output_dir: choose a new or empty output_dir")


def check(out: Path) -> None:
    """What every command that writes to output_dir (training, lr_find) checks first, a dry run too."""
    check_writable(out)
    check_foreign(out)


def resume_candidates(args: TrainingArguments) -> list[Path]:
    """Refuse to clobber; return the checkpoints to resume from, newest first."""
    out = Path(args.output_dir)
    check(out)
    if args.overwrite_output_dir:
        return checkpoints.candidates(out, args.resume_from_checkpoint) if args.resume_from_checkpoint else []
    if (out / reporting.FINAL).exists():
        raise UserError(f"output_dir {out} holds a finished run ({reporting.FINAL}); pass --overwrite_output_dir "
                        f"true to replace it or choose another output_dir")
    return checkpoints.candidates(out, args.resume_from_checkpoint)
