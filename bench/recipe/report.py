"""The recipe trials' table for bench/README.md, from the folder trials.sh writes.

    python bench/recipe/report.py --trials bench/recipe/trials_15min/<machine> [--baseline default] [--out table.md]

One row per arm, in the order of ablation.csv: what the arm changes (the keys of its saved config.yaml that
differ from the baseline's, seed and run names aside), each seed's mAP50 and mAP50-95, their mean, the epochs
and the images per second (epochs x training images / the run's seconds, evaluations included, as a user's
clock counts them). An arm "wins" a metric when its worst seed beats the baseline's best seed there: the
difference is larger than either arm's spread over its seeds. Those wins are what trials.sh is for.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from utils.config.load import load_config  # noqa: E402
from utils.config.schema import Config, all_keys  # noqa: E402
from utils.train.resume import dotted  # noqa: E402

IGNORED_KEYS = {"train.seed", "train.name", "train.save_dir"}  # differ between any two runs


def changes(config: Config, baseline: Config) -> str:
    """``key=value`` for every config key whose value differs from the baseline's."""
    keys = [k for k in all_keys() if k not in IGNORED_KEYS and dotted(config, k) != dotted(baseline, k)]
    return " ".join(f"{k}={dotted(config, k)}" for k in keys) or "(the defaults)"


def images_per_second(row: dict[str, str], config: Config) -> float | None:
    """Epochs x training images / seconds; None where the set's size is not in the config (not synthetic)."""
    seconds = float(row["seconds"] or 0)
    if not config.data.synthetic or seconds <= 0:
        return None
    return int(row["epochs"]) * config.shapes.num_train / seconds


def arms(trials: Path) -> dict[str, list[dict]]:
    """ablation.csv's rows by arm, in file order, each with its run's saved config."""
    by_arm: dict[str, list[dict]] = {}
    with open(trials / "ablation.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            run_dir = Path(row["run_dir"])
            if not run_dir.exists():  # the folder was moved since: its runs sit in it by name
                run_dir = trials / run_dir.name
            by_arm.setdefault(row["setting"], []).append({**row, "config": load_config(run_dir / "config.yaml")})
    return by_arm


def table(trials: Path, baseline: str = "default") -> str:
    by_arm = arms(trials)
    if baseline not in by_arm:
        raise SystemExit(f"error: no finished run of the baseline arm '{baseline}' in {trials / 'ablation.csv'}")
    base_rows = by_arm[baseline]
    base_config = base_rows[0]["config"]
    best = {m: max(float(r[m]) for r in base_rows) for m in ("map50", "map50_95")}
    lines = ["| arm | changes | seeds | mAP50 per seed (mean) | mAP50-95 per seed (mean) | epochs | images/s | wins |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in by_arm.items():
        cells = []
        for metric in ("map50", "map50_95"):
            values = [float(r[metric]) for r in rows]
            cells.append(" / ".join(f"{v:.3f}" for v in values) + f" ({sum(values) / len(values):.3f})")
        epochs = sum(int(r["epochs"]) for r in rows) / len(rows)
        rates = [images_per_second(r, r["config"]) for r in rows]
        rate = f"{sum(rates) / len(rates):.1f}" if None not in rates else ""
        wins = [label for metric, label in (("map50", "mAP50"), ("map50_95", "mAP50-95"))
                if name != baseline and min(float(r[metric]) for r in rows) > best[metric]]
        what = "(the baseline)" if name == baseline else changes(rows[0]["config"], base_config)
        lines.append(f"| {name} | `{what}` | {len(rows)} | {cells[0]} | {cells[1]} | {epochs:g} | {rate} | "
                     f"{', '.join(wins)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=Path, required=True,
                        help="one machine's folder, bench/recipe/trials_15min/<machine> (figures compare only within one)")
    parser.add_argument("--baseline", default="default", help="the arm every other arm is compared with")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if not (args.trials / "ablation.csv").is_file():
        raise SystemExit(f"error: {args.trials / 'ablation.csv'} not found (run bench/recipe/trials.sh first)")
    text = table(args.trials, args.baseline)
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
