"""The CLIs' console logging (no torch import: a CLI sets it up before the heavy modules load)."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

PROGRESS_EVERY_S = 60.0  # seconds between a progress line and the next where the output is not a terminal


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


def progress(iterable: Iterable | None = None, *, total: int | None, desc: str, enabled: bool = True, leave: bool = True,
             unit: str = "it", stream: TextIO | None = None, every_s: float = PROGRESS_EVERY_S):
    """A progress bar: tqdm's on a terminal; elsewhere (a log file, CI) a :class:`LineProgress`, whose plain lines
    come every ``every_s`` seconds and once at the end instead of a carriage-return update per step."""
    stream = stream or sys.stderr
    if not enabled or stream.isatty():
        return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=leave, unit=unit, dynamic_ncols=True,
                    file=stream)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, stream=stream, every_s=every_s)


class LineProgress:
    """The part of tqdm's interface that the programs use (iteration, ``update``, ``set_postfix``, ``close``),
    written as whole lines: ``desc: n/total (p%), s s, 4.2 it/s, key=value ...``."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None, desc: str, unit: str = "it",
                 stream: TextIO, every_s: float = PROGRESS_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.start = self.last = clock()
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.every_s:
            self._line()

    def set_postfix(self, postfix: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:  # noqa: ARG002
        self.postfix = {**(postfix or {}), **kwargs}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line()

    def _line(self) -> None:
        now = self.clock()
        self.last = now
        elapsed = now - self.start
        count = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        rate = f", {self.n / elapsed:.2f} {self.unit}/s" if elapsed > 0 else ""
        post = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {count}, {elapsed:.0f} s{rate}{post}", file=self.stream, flush=True)
