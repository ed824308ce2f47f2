"""The settings of a sweep: ``--grid`` combinations (focal-only keys dropped where focal objectness is off)
or ``--arm`` lists; their labels, folder names and focal-off partners."""

from __future__ import annotations

import itertools
import re

import yaml

from nets.loss import BCE, OBJECTNESS_KEYS

FOCAL_SWITCH = "loss.focal_loss"


# the keys that only focal objectness reads (nets/loss.py knows which form reads which key)
FOCAL_ONLY = tuple(f"loss.{k}" for k in OBJECTNESS_KEYS if k not in BCE.keys)


ARM = "arm"  # the key that names a setting given with --arm (it is not a config key)


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


def truthy(value: str) -> bool:
    return bool(yaml.safe_load(value))


def expand(grid: list[tuple[str, list[str]]], base_focal: bool, base_focal_cls: bool) -> list[dict[str, str]]:
    """Every combination, with the focal-only keys dropped where focal objectness is off (and the class term
    is not focal either), duplicates removed, in grid order."""
    settings: list[dict[str, str]] = []
    keys = [k for k, _ in grid]
    for combo in itertools.product(*(v for _, v in grid)):
        s = dict(zip(keys, combo, strict=True))
        focal = truthy(s[FOCAL_SWITCH]) if FOCAL_SWITCH in s else base_focal
        focal_cls = truthy(s["loss.focal_cls"]) if "loss.focal_cls" in s else base_focal_cls
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
