"""Files a config points at: the repository's paths, ``--config NAME`` lookup, class and anchor files.

Relative paths are looked up as given (from the working directory) and then from the repository
root, so the shipped configs work from any directory.
"""

from __future__ import annotations

import re
from pathlib import Path

from utils.config.schema import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"


def resolve_path(path: str | Path) -> Path:
    """``path`` as given if it exists, else relative to the repository root, else as given."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    in_repo = REPO_ROOT / p
    return in_repo if in_repo.exists() else p


def find_config(name: str | Path) -> Path:
    """``--config NAME``: NAME as given, else ``configs/NAME`` (``.yaml`` may be left out)."""
    candidates = [Path(name), CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    shipped = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config file not found: '{name}' (looked in the working directory and {CONFIG_DIR}; shipped: {shipped})")


def read_classes(path: str | Path) -> list[str]:
    """Class names, one per line; blank lines and surrounding spaces ignored."""
    p = resolve_path(path)
    names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ConfigError(f"{p}: no class names found")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{p}: class names appear twice: {dupes}")
    return names


def read_anchors(path: str | Path) -> list[tuple[float, float]]:
    """Anchor ``(w, h)`` pairs in input pixels from Darknet's ``w,h, w,h, ...`` text, smallest first."""
    p = resolve_path(path)
    text = p.read_text(encoding="utf-8")
    try:
        values = [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]
    except ValueError as e:
        raise ConfigError(f"{p}: anchors must be numbers 'w,h, w,h, ...': {e}") from None
    if not values or len(values) % 2:
        raise ConfigError(f"{p}: expected an even count of numbers (w,h pairs), found {len(values)}")
    if any(v <= 0 for v in values):
        raise ConfigError(f"{p}: anchor sides must be positive, found {values}")
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


