"""What every offline asset module shares: ``fastft:`` names, the build-once cache, the prepare command.

Builds go to a temporary sibling folder that is renamed into place, so a killed build
never leaves a folder that looks finished.
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from fastft.errors import UserError

ASSET_PREFIX = "fastft:"


def cache_dir() -> Path:
    """Root of the asset cache: ``$FASTFT_CACHE`` or ``~/.cache/fastft``."""
    return Path(os.environ.get("FASTFT_CACHE") or Path.home() / ".cache" / "fastft").expanduser()


def is_asset(name: str) -> bool:
    """True for names meant for the asset modules (``fastft:...``), known or not."""
    return isinstance(name, str) and name.startswith(ASSET_PREFIX)


def check_name(name: str, known: dict[str, str], kind: str) -> None:
    """Raise a UserError naming the valid ones if ``name`` is not in ``known``."""
    if name not in known:
        raise UserError(f"unknown {kind} asset {name!r}; valid {kind} assets: {', '.join(sorted(known))}")


def build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """Return ``final``, first running ``build(tmp)`` and renaming tmp into place if needed."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 mode would stick to the finished folder and ignore the umask.
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            # Another process finished the same build first; its copy is just as good.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def prepare_assets(description: str, module: Any, argv: list[str] | None = None) -> int:
    """The ``python -m fastft.offline.*`` command: prepare each of the module's assets now, report what is
    missing, exit 1 if any (the module has MODEL_ASSETS / model_asset and DATASET_ASSETS / dataset_asset)."""
    preparers = [*((n, module.model_asset) for n in module.MODEL_ASSETS),
                 *((n, module.dataset_asset) for n in module.DATASET_ASSETS)]
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quiet", action="store_true", help="print only problems")
    quiet = parser.parse_args(argv).quiet
    failed = 0
    for name, prepare in preparers:
        try:
            result = prepare(name)
            if not quiet:
                print(f"{name}: ready ({result if isinstance(result, Path) else 'datasets cache'})")
        except UserError as err:
            failed += 1
            print(f"{name}: not available: {err}", file=sys.stderr)
    return 1 if failed else 0
