"""Run a grid of training settings over several seeds and tabulate the result: the focal ablation.

    python tools/ablate.py --config shapes.yaml --grid loss.focal_loss=false,true --seeds 3
    python tools/ablate.py --config voc.yaml --grid loss.focal_loss=false,true loss.focal_gamma=0.5,1,2 \\
        loss.focal_alpha=0.25,0.5 --seeds 3 --out runs/ablate/voc train.epochs=100
    python tools/ablate.py --arm bce --arm bce_iou loss.obj_iou_target=1 --arm vfl loss.focal_loss=true \\
        loss.focal_form=varifocal loss.focal_alpha=0.75 --seeds 5      # named arms, each against the first

Every combination of the ``--grid`` values is a setting; a setting with focal objectness off
ignores the focal-only keys (alpha, gamma, ratio, normalization), so it runs once per seed, not
once per gamma and alpha. Each (setting, seed) is its own ``train.py`` run in its own folder under
``--out``, with ``train.seed`` set; trailing ``section.key=value`` overrides apply to every run.
An interrupted sweep picks up where it stopped: finished runs are skipped, a run with a
``last.pt`` is resumed (also one that a signal stopped: its result says ``"stopped": true``).
Ctrl-C (or SIGTERM) reaches the running ``train.py``, which saves its ``last.pt``; the sweep then
exits with the same status (130 / 143), to be resumed by the same command. At the end (or with ``--report``, from what is there):

- ``ablation.csv``: a row per run (setting, seed, mAP50, mAP50-95, epochs, seconds, folder);
- ``ablation.md``: per setting the mean and standard deviation over seeds of mAP50 and mAP50-95,
  the best setting in bold, and the difference from focal off at the same seed (the same
  other settings), its mean and standard deviation;
- ``ablation.png``: the same as bars with error bars.

The metrics are those of the final evaluation of each run (the EMA weights after the last epoch).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.ablation.report import write_reports  # noqa: E402
from tools.ablation.runner import collect, run_sweep, train_subprocess  # noqa: E402
from tools.ablation.settings import FOCAL_SWITCH, expand, overrides_of, parse_arms, parse_grid  # noqa: E402
from tools.ablation.stats import summarize  # noqa: E402
from utils.config.files import read_classes  # noqa: E402
from utils.config.load import add_config_args, load_config  # noqa: E402
from utils.config.schema import ConfigError  # noqa: E402
from utils.data.synthetic import ensure_shapes  # noqa: E402


def main(argv: list[str] | None = None, runner: Callable[[list[str], Path], int] = train_subprocess) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, default="shapes.yaml")  # --config, and the overrides applied to every run
    parser.add_argument("--grid", nargs="+", metavar="section.key=v1,v2",
                        help="the settings to combine (default: loss.focal_loss=false,true)")
    parser.add_argument("--arm", nargs="+", action="append", metavar="NAME [section.key=value ...]",
                        help="a named setting, repeated; the first is the baseline every other is compared with "
                             "(in place of --grid)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 for every setting")
    parser.add_argument("--out", help="sweep folder (default: runs/ablate/<config name>)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time, the CPU cores shared out between them (OMP_NUM_THREADS); on a small "
                             "model two 1-core runs finish sooner than two 2-core runs one after the other")
    parser.add_argument("--report", action="store_true", help="only write the reports from the finished runs")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        raise SystemExit("error: --seeds must be at least 1")
    if args.jobs < 1:
        raise SystemExit("error: --jobs must be at least 1")
    if args.arm and args.grid:
        raise SystemExit("error: give --grid or --arm, not both")
    try:  # every value of every key is checked before the first run starts
        base = load_config(args.config, args.overrides)
        if args.arm:
            settings = parse_arms(args.arm)
            for setting in settings:
                load_config(args.config, [*args.overrides, *overrides_of(setting)])
        else:
            grid = parse_grid(args.grid or [f"{FOCAL_SWITCH}=false,true"])
            for key, values in grid:
                for v in values:
                    load_config(args.config, [*args.overrides, f"{key}={v}"])
            settings = expand(grid, base.loss.focal_loss, base.loss.focal_cls)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    seeds = list(range(args.seeds))
    out = Path(args.out or f"runs/ablate/{Path(args.config).stem}")
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(settings)} settings x {len(seeds)} seeds = {len(settings) * len(seeds)} runs in {out}")
    if not args.report:
        if args.jobs > 1:
            if base.data.synthetic:  # made here once, not by two runs at the same time
                ensure_shapes(base, read_classes(base.data.classes_path))
            if runner is train_subprocess:
                runner = partial(train_subprocess, threads=max(1, len(os.sched_getaffinity(0)) // args.jobs))
        run_sweep(args.config, args.overrides, settings, seeds, out, runner, args.jobs)
    rows = collect(settings, seeds, out)
    table = summarize(settings, rows)
    title = f"{Path(args.config).name} {' '.join(args.overrides)}".strip()
    write_reports(out, table, rows, title)
    print((out / "ablation.md").read_text())
    print(f"reports in {out}: ablation.csv, ablation.md, ablation.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
