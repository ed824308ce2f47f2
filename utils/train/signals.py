"""Stopping a run cleanly: SIGINT and SIGTERM ask it to end after the current iteration, with last.pt saved."""

from __future__ import annotations

import logging
import signal

LOGGER = logging.getLogger(__name__)


def _ignore(_signum: int, _frame) -> None:
    """A signal handler that does nothing."""


class StopSignals:
    """While entered, SIGINT and SIGTERM set :attr:`asked` (the signal's number) instead of ending the process."""

    def __init__(self) -> None:
        self.asked = 0  # the signal that asked the run to stop, 0 = none
        self._old: dict[int, object] = {}
        self._sigchld: list = []  # PyTorch's SIGCHLD handler, once a stop has switched it off

    def _on_signal(self, signum: int, _frame) -> None:
        self.asked = signum
        LOGGER.warning("signal %d: finishing the current iteration and saving last.pt", signum)
        if hasattr(signal, "SIGCHLD") and not self._sigchld:
            # a process group's SIGTERM also ends the DataLoader's workers, and PyTorch's SIGCHLD handler would raise
            # in the middle of the step (even between the optimizer's updates): from now on their end is expected
            # (a no-op handler, not SIG_DFL: a SIGCHLD already on its way must still find a Python handler, or
            # Python prints "Signal 17 ignored due to race condition" with a traceback)
            self._sigchld.append(signal.signal(signal.SIGCHLD, _ignore))

    def __enter__(self) -> StopSignals:
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *_exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        if self._sigchld:
            signal.signal(signal.SIGCHLD, self._sigchld.pop())
