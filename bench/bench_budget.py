"""Time-budget probe: how much of ``train.time_limit`` a run uses when the machine is busy at its start.

    python -m bench.bench_budget [--minutes 3] [--images 200] [--busy 2] [--json out.json] [-- override ...]

Trains the demo (configs/shapes.yaml, its recipe) on ``--images`` synthetic images with
``train.time_limit = --minutes``, while ``--busy`` processes spin on the CPU from the start until the
first epoch's row is in results.csv (a load that stops, as another job of the machine would).
Prints the budget, the seconds the run took (train.py's own count, setup apart, and the wall time of
the whole command), the share of the budget used, the epochs, and the plans train.py printed.
Run with nothing else on the machine: the busy processes are the only load meant.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import demo_in, emit  # noqa: E402
from utils.runtime import cpu_has_native_bf16  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def spin() -> None:
    while True:
        pass


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--busy", type=int, default=2, help="spinning processes until the first epoch's row")
    parser.add_argument("--json")
    parser.add_argument("overrides", nargs="*", help="more config overrides for train.py")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        overrides, _ = demo_in(tmp, args.images, [f"train.time_limit={args.minutes}", *args.overrides])
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", "shapes.yaml", "--json", str(out), *overrides]
        busy = [mp.Process(target=spin, daemon=True) for _ in range(args.busy)]
        for p in busy:
            p.start()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        busy_s = None
        csv_path = Path(tmp) / "runs" / "exp" / "results.csv"
        while proc.poll() is None:
            if busy_s is None and csv_path.is_file() and len(csv_path.read_text().splitlines()) > 1:
                for p in busy:
                    p.terminate()
                busy_s = round(time.monotonic() - t0, 1)
            time.sleep(0.5)
        wall = time.monotonic() - t0
        for p in busy:
            p.terminate()
        log = proc.stdout.read()
        result = json.loads(out.read_text()) if out.is_file() else {}
    limit = args.minutes * 60
    return emit({"bench": "budget", "limit_s": limit, "busy_processes": args.busy, "busy_until_s": busy_s,
                 "run_seconds": result.get("seconds"), "wall_s": round(wall, 1),
                 "share_used": round(result["seconds"] / limit, 3) if result else None,
                 "epochs": result.get("epochs"), "map50": result.get("map50"),
                 "plans": [line for line in log.splitlines() if line.startswith("time limit")],
                 "native_bf16": cpu_has_native_bf16(), "returncode": proc.returncode}, args.json)


if __name__ == "__main__":
    main()
