"""User-facing errors: one line that names the problem and the fix, no traceback."""
from __future__ import annotations

import functools
import signal
import sys
import threading
import warnings
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake the user can fix (bad recipe, missing file, wrong value).

    Scripts catch it at the top and print ``error: <message>`` on one line, so a
    user never sees a traceback for their own typo.
    """


class _Terminated(BaseException):
    """SIGTERM outside the training loop (inside it, fastft.interrupts checkpoints instead)."""


STOPPED = (KeyboardInterrupt, _Terminated)  # what Ctrl-C and SIGTERM raise under exit_on_user_error


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated


def _one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              line: str | None = None) -> str:
    """A warning as one line, like an error: Python's format adds the file and the source line."""
    kind = "" if category is UserWarning else f"{category.__name__}: "
    return f"warning: {kind}{' '.join(str(message).split())}\n"


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a script's ``main``: a ``UserError`` exits with status 2 and one line, and so does a stop signal
    (130 for Ctrl-C, 143 for SIGTERM) that arrives while loading or saving, not training; warnings print as
    one ``warning:`` line each."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        previous, formatting = None, warnings.formatwarning
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            previous = signal.signal(signal.SIGTERM, _terminate)
        warnings.formatwarning = _one_line
        try:
            return main(*args, **kwargs)
        except UserError as err:
            message = " ".join(str(err).split())  # always one line
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(2)
        except (KeyboardInterrupt, _Terminated) as err:
            name, code = ("Ctrl-C", 130) if isinstance(err, KeyboardInterrupt) else ("SIGTERM", 143)
            print(f"error: stopped by {name} outside the training loop; the complete checkpoints in output_dir "
                  f"are intact: run the same command to resume", file=sys.stderr, flush=True)
            sys.exit(code)
        finally:
            warnings.formatwarning = formatting
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper
