"""Files a run leaves in output_dir: config.yaml, train_log.jsonl, metrics.jsonl, metrics.json.

Only the main process writes. On resume the logs are cut back to the
checkpoint's step, so a killed run's extra lines are not counted twice.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import yaml

TRAIN_LOG = "train_log.jsonl"
EVAL_LOG = "metrics.jsonl"
FINAL = "metrics.json"
CONFIG = "config.yaml"
CONFIG_HEADER = "# Resolved fastft recipe.\n"  # also what marks a folder as a fastft run's


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple):
        return list(value)
    return value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({k: _clean(v) for k, v in data.items()}, indent=2) + "\n")
    os.replace(tmp, path)


def usual_modes(folder: Path) -> list[Path]:
    """Give the safetensors files in ``folder`` the mode every other file gets (0o666 less the umask).

    safetensors 0.8 writes through a temporary file that is always 0600 and renamed into place
    (safetensors issue #782), so a model saved for others to use was readable by its owner alone.
    Returns the files changed.
    """
    umask = os.umask(0)  # the only portable way to read it; set straight back
    os.umask(umask)
    mode, changed = 0o666 & ~umask, []
    for path in sorted(folder.glob("*.safetensors")):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
            changed.append(path)
    return changed


def write_config(output_dir: Path, recipe: dict[str, Any], derived: dict[str, Any]) -> None:
    """The resolved recipe (loadable again with --config) and, commented apart, what was derived."""
    text = yaml.safe_dump({k: _clean(v) for k, v in recipe.items()}, sort_keys=False)
    derived_text = yaml.safe_dump({k: _clean(v) for k, v in derived.items()}, sort_keys=False)
    body = "".join(f"#   {line}\n" for line in derived_text.splitlines())
    (output_dir / CONFIG).write_text(f"{CONFIG_HEADER}{text}\n# Derived for this run:\n{body}")


def written_by_fastft(output_dir: Path) -> bool:
    """Whether a fastft run made this folder: its config.yaml, written first, starts with CONFIG_HEADER."""
    try:
        with open(output_dir / CONFIG, encoding="utf-8") as f:
            return f.readline() == CONFIG_HEADER
    except (OSError, UnicodeDecodeError):
        return False


def read_json_object(file: Path, fix: str) -> dict[str, Any]:
    """A JSON file that must hold an object (a model's config.json); ``fix`` tells the user what to do if not."""
    from fastft.errors import UserError

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{file} is not valid JSON ({err}); {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{file} must hold a JSON object, got {type(data).__name__}; {fix}")
    return data


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return rows


class RunLog:
    """Append-only JSON-lines logs for training and evaluation."""

    def __init__(self, output_dir: Path, enabled: bool, resume_step: Optional[int]):
        self.output_dir, self.enabled = output_dir, enabled
        if not enabled:
            return
        for name in (TRAIN_LOG, EVAL_LOG):
            path = output_dir / name
            keep = [r for r in read_jsonl(path) if resume_step is not None and r.get("step", 0) <= resume_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def _append(self, name: str, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.output_dir / name, "a") as f:
                f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")

    def train(self, row: dict[str, Any]) -> None:
        self._append(TRAIN_LOG, row)

    def eval(self, row: dict[str, Any]) -> None:
        self._append(EVAL_LOG, row)
