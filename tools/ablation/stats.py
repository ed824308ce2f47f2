"""Statistics over seeds: mean and standard deviation per setting, and the paired difference from its partner
with a 95% t interval."""

from __future__ import annotations

import math
import statistics

from tools.ablation.settings import ARM, FOCAL_SWITCH, baseline_key, label, truthy

# two-sided 95% quantiles of Student's t by degrees of freedom (any statistics table; scipy is not a dependency)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


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
        off = {baseline_key(s): label(s) for s in settings if FOCAL_SWITCH in s and not truthy(s[FOCAL_SWITCH])}
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
