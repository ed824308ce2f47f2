"""Helpers shared by the bench scripts: timing medians and JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    """Median milliseconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def median_ms_interleaved(fns: dict[str, Callable[[], object]], runs: dict[str, int], warmup: int = 2) -> dict[str, float]:
    """Median milliseconds of each function, timed in alternation so that a slow spell of a
    shared machine falls on all of them alike; ``runs[name]`` timed calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(max(runs.values())):
        for name, fn in fns.items():
            if i < runs[name]:
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def emit(result: dict, path: str | None) -> dict:
    """Print ``result`` as JSON, and write it to ``path`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
    return result


def demo_in(folder: str | Path, images: int, overrides: list[str]) -> tuple[list[str], object]:
    """The demo (configs/shapes.yaml) with its data and runs under ``folder``, ``images`` training images and
    ``overrides``: (train.py's overrides, the config). The data are made here, before any timing starts, as a
    user's own data would already be there (train.py would make them on first use)."""
    from utils.config.files import read_classes
    from utils.config.load import load_config
    from utils.data.synthetic import ensure_shapes

    overrides = [f"data.root={folder}/data", f"train.save_dir={folder}/runs", f"shapes.num_train={images}", *overrides]
    cfg = load_config("shapes.yaml", overrides)
    ensure_shapes(cfg, read_classes(cfg.data.classes_path))
    return overrides, cfg
