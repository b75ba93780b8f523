"""User-facing errors: one line that names the problem and the fix, no traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake the user can fix (bad recipe, missing file, wrong value).

    Scripts catch it at the top and print ``error: <message>`` on one line, so a
    user never sees a traceback for their own typo.
    """


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a script's ``main`` so a ``UserError`` exits with status 2 and one line."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            message = " ".join(str(err).split())  # always one line
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper
