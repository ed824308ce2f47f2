"""Progress in a log that is not a terminal: whole lines, every so many seconds and at the end."""

from __future__ import annotations

import io

from tqdm import tqdm

from utils.console import LineProgress, progress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_lines_come_every_n_seconds_and_at_the_end() -> None:
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(total=10, desc="epoch 1/3", stream=out, every_s=60, clock=clock)
    for i in range(1, 11):  # a step every 25 s
        clock.t = 25.0 * i
        bar.set_postfix({"loss": f"{1 / i:.2f}"}, refresh=False)
        bar.update(1)
    bar.close()
    bar.close()  # a second close writes nothing
    # by hand: lines where 60 s have passed since the last one (t = 75, 150, 225), then the end (t = 250)
    assert out.getvalue().splitlines() == [
        "epoch 1/3: 3/10 (30%), 75 s, 0.04 it/s, loss=0.33",
        "epoch 1/3: 6/10 (60%), 150 s, 0.04 it/s, loss=0.17",
        "epoch 1/3: 9/10 (90%), 225 s, 0.04 it/s, loss=0.11",
        "epoch 1/3: 10/10 (100%), 250 s, 0.04 it/s, loss=0.10",
    ]


def test_a_short_loop_gives_one_line_and_no_carriage_returns() -> None:
    out = io.StringIO()
    items = list(progress(range(500), total=500, desc="eval", stream=out))
    assert items == list(range(500))
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") == 1 and text.startswith("eval: 500/500 (100%), ")


def test_a_terminal_gets_tqdm_and_disabled_prints_nothing() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress(range(3), total=3, desc="x", stream=Terminal()), tqdm)
    out = io.StringIO()
    assert list(progress(range(3), total=3, desc="x", stream=out, enabled=False)) == [0, 1, 2]
    assert out.getvalue() == ""
