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
import csv
import itertools
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.config.files import REPO_ROOT, read_classes  # noqa: E402
from utils.config.load import load_config  # noqa: E402
from utils.config.schema import ConfigError  # noqa: E402
from utils.data.synthetic import ensure_shapes  # noqa: E402

FOCAL_SWITCH = "loss.focal_loss"
FOCAL_ONLY = ("loss.focal_alpha", "loss.focal_gamma", "loss.focal_loss_ratio", "loss.focal_normalize", "loss.focal_form")
CSV_FIELDS = ["setting", "seed", "map50", "map50_07", "map50_95", "rare_ap50", "epochs", "seconds", "run_dir"]
ARM = "arm"  # the key that names a setting given with --arm (it is not a config key)
# two-sided 95% quantiles of Student's t by degrees of freedom (any statistics table; scipy is not a dependency)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def split_values(text: str) -> list[str]:
    """``a,b,[1,2],c`` -> ``["a", "b", "[1,2]", "c"]``: commas inside brackets or braces belong to the value."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or "." not in key or not split_values(values):
            raise SystemExit(f"error: --grid entry '{item}' must be section.key=value1,value2,...")
        if key in (k for k, _ in grid):
            raise SystemExit(f"error: --grid names {key} twice")
        grid.append((key.strip(), split_values(values)))
    return grid


def _truthy(value: str) -> bool:
    return bool(yaml.safe_load(value))


def expand(grid: list[tuple[str, list[str]]], base_focal: bool, base_focal_cls: bool) -> list[dict[str, str]]:
    """Every combination, with the focal-only keys dropped where focal objectness is off (and the class term
    is not focal either), duplicates removed, in grid order."""
    settings: list[dict[str, str]] = []
    keys = [k for k, _ in grid]
    for combo in itertools.product(*(v for _, v in grid)):
        s = dict(zip(keys, combo, strict=True))
        focal = _truthy(s[FOCAL_SWITCH]) if FOCAL_SWITCH in s else base_focal
        focal_cls = _truthy(s["loss.focal_cls"]) if "loss.focal_cls" in s else base_focal_cls
        if not focal and not focal_cls:
            s = {k: v for k, v in s.items() if k not in FOCAL_ONLY}
        if s not in settings:
            settings.append(s)
    return settings


def parse_arms(arms: list[list[str]]) -> list[dict[str, str]]:
    """``--arm NAME key=value ...`` (repeated) -> settings ``{"arm": NAME, key: value, ...}``, in order."""
    settings = []
    for name, *items in arms:
        if "=" in name or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise SystemExit(f"error: --arm {name}: an arm starts with its name (letters, digits, . _ -), then key=value")
        setting = {ARM: name}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or "." not in key:
                raise SystemExit(f"error: --arm {name}: '{item}' must be section.key=value")
            setting[key.strip()] = value
        if name in (s[ARM] for s in settings):
            raise SystemExit(f"error: --arm {name} is given twice")
        settings.append(setting)
    return settings


def overrides_of(setting: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in setting.items() if k != ARM]


def label(setting: dict[str, str]) -> str:
    """An arm's name; else ``focal_loss=true focal_gamma=2`` (the key's last part); ``base`` for an empty grid."""
    if ARM in setting:
        return setting[ARM]
    return " ".join(f"{k.split('.', 1)[1]}={v}" for k, v in setting.items()) or "base"


def folder_name(setting: dict[str, str], seed: int) -> str:
    if ARM in setting:
        return f"{setting[ARM]}_seed{seed}"
    parts = [f"{k.split('.', 1)[1]}-{v}" for k, v in setting.items()] + [f"seed{seed}"]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts))


def baseline_key(setting: dict[str, str]) -> tuple:
    """What a setting shares with its focal-off partner: every key but the focal ones."""
    return tuple((k, v) for k, v in setting.items() if k != FOCAL_SWITCH and k not in FOCAL_ONLY)


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


def rare_class_ap(result: dict) -> float | None:
    """AP50 of the class with the fewest training objects (the first such), from a run's result; None if absent."""
    counts, ap = result.get("train_objects"), result.get("ap50_per_class")
    if not counts or not ap:
        return None
    return float(ap[min(range(len(counts)), key=counts.__getitem__)])


def interval95(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the half-width of the 95% t interval of the mean (0 for one value)."""
    mean, sd = mean_std(values)
    n = len(values)
    if n < 2:
        return mean, sd, 0.0
    t = T95[max(k for k in T95 if k <= n - 1)]  # the table's nearest smaller df: a slightly wider interval
    return mean, sd, t * sd / math.sqrt(n)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


METRICS = ("map50", "map50_95", "rare_ap50")


def summarize(settings: list[dict[str, str]], rows: list[dict]) -> list[dict]:
    """Per setting: runs, mean and std of each metric, and the paired difference from its partner: for arms,
    the first arm; otherwise the focal-off setting with the same other keys. Differences carry a 95% interval."""
    by_label = {label(s): [r for r in rows if r["setting"] == label(s)] for s in settings}
    if settings and ARM in settings[0]:
        off = {None: label(settings[0])}

        def key(_s: dict[str, str]) -> None:
            return None
    else:
        off = {baseline_key(s): label(s) for s in settings if FOCAL_SWITCH in s and not _truthy(s[FOCAL_SWITCH])}
        key = baseline_key
    table = []
    for s in settings:
        runs = by_label[label(s)]
        if not runs:
            continue
        entry = {"setting": label(s), "runs": len(runs), "seeds": sorted(r["seed"] for r in runs)}
        for m in METRICS:
            values = [r[m] for r in runs if r.get(m) is not None]
            entry[m] = mean_std(values) if len(values) == len(runs) else None
        partner = off.get(key(s))
        if partner is not None and partner != label(s):
            ref = {r["seed"]: r for r in by_label[partner]}
            for m in METRICS:
                diffs = [r[m] - ref[r["seed"]][m] for r in runs
                         if r["seed"] in ref and r.get(m) is not None and ref[r["seed"]].get(m) is not None]
                entry[f"delta_{m}"] = interval95(diffs) if diffs else None
            entry["versus"] = partner
        table.append(entry)
    return table


def write_reports(out: Path, table: list[dict], rows: list[dict], title: str) -> None:
    with open(out / "ablation.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    best = max(table, key=lambda e: e["map50"][0])["setting"] if table else None

    def pm(v) -> str:
        return "-" if v is None else f"{v[0]:.4f} ± {v[1]:.4f}"

    def signed(v) -> str:  # mean difference and its 95% interval
        return "-" if v is None else f"{v[0]:+.4f} [{v[0] - v[2]:+.4f}, {v[0] + v[2]:+.4f}]"

    partners = " / ".join(sorted({e["versus"] for e in table if "versus" in e})) or "focal off"
    lines = [f"# {title}", "", f"Mean ± standard deviation over seeds. Δ is the difference from {partners} at the "
             "same seed (and the same other settings): its mean and, in brackets, its 95% t interval. Rare-class "
             "AP50: the AP50 of the class with the fewest training objects.", "",
             "| setting | runs | mAP50 | mAP50-95 | rare-class AP50 | Δ mAP50 | Δ mAP50-95 | Δ rare-class AP50 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in table:
        name = f"**{e['setting']}**" if e["setting"] == best else e["setting"]
        lines.append(f"| {name} | {e['runs']} | {pm(e['map50'])} | {pm(e['map50_95'])} | {pm(e['rare_ap50'])} | "
                     f"{signed(e.get('delta_map50'))} | {signed(e.get('delta_map50_95'))} | "
                     f"{signed(e.get('delta_rare_ap50'))} |")
    if best:
        lines += ["", f"Best by mean mAP50: **{best}**."]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    if table:
        plot(out / "ablation.png", table, title)


def wrap_title(title: str, width_in: float, fontsize: float = 8) -> str:
    """The title broken into lines that fit the figure's width (a sweep's overrides can run to 300 characters)."""
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))  # a character is about 0.6 em wide
    return textwrap.fill(title, chars, break_on_hyphens=False)


def plot(path: Path, table: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(table))
    width = max(5.0, 1.3 * len(table) + 2)
    fig, ax = plt.subplots(figsize=(width, 4))
    for i, (m, name) in enumerate((("map50", "mAP50"), ("map50_95", "mAP50-95"))):
        ax.bar(x + (i - 0.5) * 0.38, [e[m][0] for e in table], 0.38, yerr=[e[m][1] for e in table], capsize=4, label=name)
    ax.set_xticks(x, [e["setting"].replace(" ", "\n") for e in table], fontsize=8)
    ax.set_ylabel("mean over seeds (error bars: std)")
    ax.set_title(wrap_title(title, width), fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None, runner: Callable[[list[str], Path], int] = train_subprocess) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="shapes.yaml", help="YAML config: a path, or a name in configs/")
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
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="applied to every run")
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
