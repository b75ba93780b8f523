"""SIGTERM / SIGINT (preemption, Ctrl-C) become a request to checkpoint and stop cleanly."""
from __future__ import annotations

import signal
import threading
from typing import Any, Optional


class StopSignals:
    """Records a stop signal; the training loop checkpoints and exits after the current step.

    A second Ctrl-C stops at once (KeyboardInterrupt), for a user who will not wait.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""
