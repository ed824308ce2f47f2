"""The CLIs' console logging (no torch import: a CLI sets it up before the heavy modules load)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any


class _ConsoleFormat(logging.Formatter):
    """Information as plain lines (a run's summary), warnings and errors with their level and source."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno <= logging.INFO:
            return record.getMessage()
        return f"{record.levelname} {record.name}: {record.getMessage()}"


def setup_logging(level: int = logging.INFO) -> None:
    """The CLIs' console: the project's log records on stderr, information without a prefix."""
    handler = logging.StreamHandler()
    handler.setFormatter(_ConsoleFormat())
    logging.basicConfig(level=level, handlers=[handler])


def one_line_errors(*kinds: type[Exception]) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """A CLI's ``main`` decorated: an error of ``kinds`` (the typed errors the library raises for bad input)
    ends it with ``error: <message>`` on stderr and status 1, instead of a traceback."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def guarded(*args: Any, **kwargs: Any) -> int:
            try:
                return main(*args, **kwargs)
            except kinds as e:
                print(f"error: {e}", file=sys.stderr)
                return 1

        return guarded

    return wrap
