"""The runs of a sweep: each (setting, seed) a ``train.py`` process, resumed where it stopped, signals passed on;
and the finished runs' results collected."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.ablation.settings import folder_name, label, overrides_of
from tools.ablation.stats import rare_class_ap
from utils.config.files import REPO_ROOT

_LIVE: set[subprocess.Popen] = set()  # the train.py processes running now (one per job)


def train_subprocess(args: list[str], log: Path, threads: int | None = None) -> int:
    """Run ``train.py`` with ``args``, its output into ``log``; the exit status.

    ``threads`` sets ``OMP_NUM_THREADS`` for the run (``--jobs`` shares the cores out). While it
    runs, the sweep's SIGINT and SIGTERM go on to it (``forward_signals``), and it is waited for,
    so that it saves its ``last.pt`` first (a terminal's Ctrl-C reaches both; saying it twice is harmless).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    with open(log, "a") as fh:
        proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *args], stdout=fh, stderr=subprocess.STDOUT,
                                cwd=REPO_ROOT, env=env)
        _LIVE.add(proc)
        try:
            return proc.wait()
        finally:
            _LIVE.discard(proc)


def finished(result: Path) -> bool:
    """Whether ``result`` (a run's ``--json``) says the run finished: present, readable and not stopped by a signal."""
    try:
        return not json.loads(result.read_text()).get("stopped", False)
    except (OSError, ValueError, AttributeError):
        return False


# what train.py writes before its first checkpoint: the config, the start pictures (train.report.announce), the log
TRAIN_FILES = re.compile(r"(config\.yaml|labels\.png|train_batch0\.jpg|results\.csv|result\.json|"
                         r"events\.out\.tfevents\..*|\..*\.tmp)")


def remove_unstarted_run(run_dir: Path) -> None:
    """Remove a run folder that stopped before its first checkpoint, when it holds only what train.py writes
    before one; anything else in it is a clear error (the folder is left as it is)."""
    foreign = [p.name for p in run_dir.iterdir() if not (p.is_file() and TRAIN_FILES.fullmatch(p.name))]
    if foreign:
        raise SystemExit(f"error: {run_dir} has no last.pt to resume, and holds files a run does not write "
                         f"({', '.join(sorted(foreign)[:5])}); move it away and run the sweep again")
    shutil.rmtree(run_dir)


def run_sweep(config: str, overrides: list[str], settings: list[dict[str, str]], seeds: list[int], out: Path,
              runner: Callable[..., int] = train_subprocess, jobs: int = 1) -> None:
    """Every (setting, seed) that has not finished, seed by seed, ``jobs`` runs at a time.

    A signal (SIGINT, SIGTERM) goes on to the running runs and no new one starts; once they have
    saved, the sweep exits with their status. A run that fails stops the sweep the same way.
    """
    total = len(settings) * len(seeds)
    stop: list[int] = []  # the exit status that ends the sweep, once one is known

    def one(n: int, setting: dict[str, str], seed: int) -> None:
        try:
            train_one(n, setting, seed)
        except BaseException:  # a clear error (a foreign folder): no further run starts
            stop.append(1)
            raise

    def train_one(n: int, setting: dict[str, str], seed: int) -> None:
        name = folder_name(setting, seed)
        run_dir = out / name
        result = run_dir / "result.json"
        tag = f"[{n}/{total}] {label(setting)} seed {seed}"
        if stop:
            return
        args = ["--config", config, *overrides, *overrides_of(setting), f"train.seed={seed}",
                f"train.save_dir={out}", f"train.name={name}", "--json", str(result)]
        if (run_dir / "last.pt").is_file():
            args += ["--resume", str(run_dir / "last.pt")]
            print(f"{tag}: resuming {run_dir / 'last.pt'}", flush=True)
        else:
            if run_dir.exists():  # stopped before its first checkpoint: start again
                remove_unstarted_run(run_dir)
            print(f"{tag}: training in {run_dir}", flush=True)
        status = runner(args, out / "logs" / f"{name}.log")
        if status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            stop.append(status)  # first: a run that ends meanwhile starts no other
            print(f"{tag}: stopped by a signal; {run_dir / 'last.pt'} is saved.", flush=True)
        elif status != 0 or not finished(result):
            stop.append(1)
            print(f"error: the run {run_dir} ended with status {status}; see {out / 'logs' / f'{name}.log'}.", flush=True)
        else:
            r = json.loads(result.read_text())
            print(f"{tag}: mAP50 {r.get('map50', float('nan')):.4f}  mAP50-95 {r.get('map50_95', float('nan')):.4f}  "
                  f"({r.get('epochs')} epochs, {r.get('seconds')} s)", flush=True)

    todo = []
    for n, (setting, seed) in enumerate(((s, seed) for seed in seeds for s in settings), 1):
        if finished(out / folder_name(setting, seed) / "result.json"):
            print(f"[{n}/{total}] {label(setting)} seed {seed}: done before, skipped")
        else:
            todo.append((n, setting, seed))

    def forward(signum: int, _frame) -> None:
        stop.append(128 + signum)
        for proc in list(_LIVE):
            if proc.poll() is None:
                proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for future in [pool.submit(one, *task) for task in todo]:
                future.result()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stop:
        status = stop[0]
        if status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            print("stopped by a signal; the runs' last.pt are saved. Run the same command again to resume the sweep.",
                  flush=True)
            raise SystemExit(status)
        raise SystemExit("error: a run failed (above). Run the same command again to resume the sweep.")


def collect(settings: list[dict[str, str]], seeds: list[int], out: Path) -> list[dict]:
    rows = []
    for setting in settings:
        for seed in seeds:
            path = out / folder_name(setting, seed) / "result.json"
            if finished(path):
                r = json.loads(path.read_text())
                rows.append({"setting": label(setting), "seed": seed, "map50": r.get("map50"), "map50_07": r.get("map50_07"),
                             "map50_95": r.get("map50_95"), "rare_ap50": rare_class_ap(r), "epochs": r.get("epochs"),
                             "seconds": r.get("seconds"), "run_dir": str(path.parent)})
    return rows
