"""A config from YAML and ``section.key=value`` overrides: coercion, validation, the command line.

Override values are read as YAML (``12``, ``0.5``, ``false``, ``[1, 2]``, ``null``). Validation fails
fast with one message that names the source (file or override), the dotted key and the problem:
unknown keys (with the closest valid key suggested), wrong types, values out of range, missing files.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import operator
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from utils.config.files import REPO_ROOT, find_config, read_anchors, read_classes, resolve_path
from utils.config.schema import NUM_ANCHORS, SECTIONS, Config, ConfigError, all_keys, section_fields, section_types


def _suggest(dotted: str) -> str:
    """' Did you mean ...?' for an unknown dotted key, or ''."""
    keys = all_keys()
    match = difflib.get_close_matches(dotted, keys, n=1, cutoff=0.6)
    if not match:  # right key, wrong section: train.focal_loss -> loss.focal_loss
        bare = dotted.rsplit(".", 1)[-1]
        by_bare = {k.rsplit(".", 1)[-1]: k for k in keys}
        close = difflib.get_close_matches(bare, list(by_bare), n=1, cutoff=0.8)
        match = [by_bare[close[0]]] if close else []
    return f" Did you mean '{match[0]}'?" if match else ""


# --------------------------------------------------------------------------- typing

_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return _coerce(value, inner, where)
        except ConfigError:
            raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}") from None
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML follows YAML 1.1, which reads 1e-4 (no dot) as a string.
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this module does not handle
        raise TypeError(f"unsupported config type {tp!r} for {where}")
    raise ConfigError(f"{where} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")


# --------------------------------------------------------------------------- building and validating


def _unknown_section(section: str, source: str) -> typing.NoReturn:
    hint = difflib.get_close_matches(section, list(SECTIONS), n=1)
    did = f" Did you mean '{hint[0]}'?" if hint else ""
    raise ConfigError(f"{source}: unknown section '{section}' (valid: {', '.join(SECTIONS)}).{did}")


def _set(cfg: Config, section: str, key: str, value: Any, source: str) -> None:
    """Set ``section.key`` after checking that the key exists and the type fits."""
    dotted = f"{section}.{key}"
    if section not in SECTIONS:
        _unknown_section(section, source)
    if key not in section_fields(section):
        raise ConfigError(f"{source}: unknown key '{dotted}'.{_suggest(dotted)}")
    word = "off" if value is False else "on"
    if isinstance(value, bool) and word in section_fields(section)[key].metadata.get("choices", ()):
        value = word  # YAML 1.1 reads a bare off / on as a boolean: train.amp=off
    setattr(getattr(cfg, section), key, _coerce(value, section_types(section)[key], f"{source}: {dotted}"))


_BOUNDS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"), "le": (operator.le, "<="), "lt": (operator.lt, "<")}


def _check_value(value: Any, rules: dict[str, Any], where: str) -> None:
    if "choices" in rules and value not in rules["choices"]:
        raise ConfigError(f"{where} = {value!r} is not one of {list(rules['choices'])}")
    if isinstance(value, list):
        if rules.get("nonempty") and not value:
            raise ConfigError(f"{where} must not be empty")
        if "length" in rules and len(value) != rules["length"]:
            raise ConfigError(f"{where} must have {rules['length']} entries, got {len(value)}: {value}")
        for i, v in enumerate(value):
            _check_value(v, {k: r for k, r in rules.items() if k not in ("length", "nonempty")}, f"{where}[{i}]")
        return
    if value is None or isinstance(value, (str, bool)):
        return
    for name, (op, sign) in _BOUNDS.items():
        if name in rules and not op(value, rules[name]):
            span = ""
            if any(b in rules for b in ("ge", "gt")) and any(b in rules for b in ("le", "lt")):
                lo = f"[{rules['ge']}" if "ge" in rules else f"({rules['gt']}"
                hi = f"{rules['le']}]" if "le" in rules else f"{rules['lt']})"
                span = f" (valid range {lo}, {hi})"
            raise ConfigError(f"{where} = {value} is out of range: must be {sign} {rules[name]}{span}")
    if "multiple_of" in rules and value % rules["multiple_of"]:
        m = rules["multiple_of"]
        near = max(m, round(value / m) * m)
        raise ConfigError(f"{where} = {value} must be a multiple of {m} (nearest: {near})")


def validate(cfg: Config, origins: dict[str, str] | None = None) -> Config:
    """Check ranges, choices, files and cross-field rules; raise ConfigError naming the key.

    ``origins`` maps a dotted key to where its value came from (file or override)
    so that the message can name it.
    """
    origins = origins or {}

    def where(dotted: str) -> str:
        return f"{origins.get(dotted, '<config>')}: {dotted}"

    _check_fields(cfg, where)

    m, t = cfg.model, cfg.train
    dev = t.device
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", dev):
        raise ConfigError(f"{where('train.device')} = {dev!r} is not one of auto, cpu, cuda, cuda:N")
    if t.freeze_epochs > t.epochs:
        raise ConfigError(f"{where('train.freeze_epochs')} = {t.freeze_epochs} exceeds train.epochs = {t.epochs}")
    if t.min_lr > t.lr:
        raise ConfigError(f"{where('train.min_lr')} = {t.min_lr} exceeds train.lr = {t.lr}")
    name = cfg.shapes.name  # the generator replaces data.root/name: one plain folder name, never root itself or above
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"{where('shapes.name')} = {name!r} must be one folder name under data.root (e.g. SHAPES)")
    if cfg.data.synthetic:  # the generated set lives in data.root/shapes.name: every split must point into it
        for key in ("train_splits", "val_splits"):
            splits = getattr(cfg.data, key)
            for split in splits:
                if split.split("/")[0] != cfg.shapes.name:
                    fixed = ",".join(f"{cfg.shapes.name}/{s.split('/', 1)[-1]}" for s in splits)
                    raise ConfigError(f"{where(f'data.{key}')}: '{split}' is not in the synthetic set shapes.name = "
                                      f"'{cfg.shapes.name}'; set data.{key}=[{fixed}]")
    lo, hi = cfg.data.scale
    if lo > hi:
        raise ConfigError(f"{where('data.scale')} = {cfg.data.scale}: min must not exceed max")
    anchors = read_anchors(m.anchors_path)
    if len(anchors) != NUM_ANCHORS[m.name]:
        raise ConfigError(f"{where('model.anchors_path')}: model.name = {m.name} needs {NUM_ANCHORS[m.name]} anchors, "
                          f"'{m.anchors_path}' has {len(anchors)}")
    read_classes(cfg.data.classes_path)
    if t.float32_overrides:  # each key and value checked now; how they fit the rest, when a float32 run applies them
        bad = [o for o in t.float32_overrides if o.split("=", 1)[0].strip() in ("train.amp", "train.float32_overrides")]
        if bad:
            raise ConfigError(f"{where('train.float32_overrides')}: {', '.join(bad)} cannot be a float32 override")
        _check_fields(with_float32_overrides(cfg), lambda dotted: f"{where('train.float32_overrides')}: {dotted}")
    return cfg


def _check_fields(cfg: Config, where) -> None:
    """Each key's own rules (range, choices, an existing file); ``where(dotted)`` names it in the error."""
    for section in SECTIONS:
        for key, f in section_fields(section).items():
            dotted = f"{section}.{key}"
            value = getattr(getattr(cfg, section), key)
            _check_value(value, dict(f.metadata), where(dotted))
            if f.metadata.get("file") and value and not resolve_path(value).is_file():
                raise ConfigError(f"{where(dotted)}: file not found: '{value}' (looked in the working directory and {REPO_ROOT})")


def with_float32_overrides(cfg: Config, overrides: Sequence[str] = ()) -> Config:
    """A copy of ``cfg`` with ``train.float32_overrides`` applied, then ``overrides`` (the command line's) again so
    that they win; the list emptied, since its values are in the config now."""
    out = copy.deepcopy(cfg)
    apply_overrides(out, cfg.train.float32_overrides)
    apply_overrides(out, overrides)
    out.train.float32_overrides = []
    return out


def config_from_dict(data: dict[str, Any] | None, source: str = "<dict>",
                     origins: dict[str, str] | None = None) -> Config:
    """Build a Config from nested dicts (a YAML file, a checkpoint's ``config``); keys not given keep defaults.

    Does not run :func:`validate` (files may not exist where a checkpoint is read).
    """
    cfg = Config()
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    for section, values in data.items():
        if section not in SECTIONS:
            _unknown_section(str(section), source)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping of keys, got {type(values).__name__}")
        for key, value in values.items():
            _set(cfg, section, str(key), value, source)
            if origins is not None:
                origins[f"{section}.{key}"] = source
    return cfg


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as e:  # also refuses !!python/object and other unsafe tags
        raise ConfigError(f"{path}: not a valid YAML config: {e}") from None


def apply_overrides(cfg: Config, overrides: Sequence[str], origins: dict[str, str] | None = None) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML) to ``cfg`` in place."""
    for item in overrides:
        source = f"override '{item}'"
        if "=" not in item:
            raise ConfigError(f"{source}: expected section.key=value")
        dotted, text = item.split("=", 1)
        dotted = dotted.strip()
        if dotted.count(".") != 1:
            raise ConfigError(f"{source}: expected section.key=value, e.g. loss.focal_loss=false.{_suggest(dotted)}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: value is not valid YAML: {e}") from None
        section, key = dotted.split(".")
        _set(cfg, section, key, value, source)
        if origins is not None:
            origins[dotted] = source
    return cfg


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (found by :func:`find_config`), apply overrides, validate.

    ``path=None`` starts from the defaults of the dataclasses.
    """
    origins: dict[str, str] = {}
    if path is None:
        cfg = Config()
    else:
        p = find_config(path)
        cfg = config_from_dict(_read_yaml(p), str(p), origins)
        for dotted in all_keys():
            origins.setdefault(dotted, f"{p} (default)")
    apply_overrides(cfg, overrides, origins)
    return validate(cfg, origins)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text; :func:`load_config` reads it back to an equal Config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def save_config(cfg: Config, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(cfg), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- command line


def add_config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--config`` and trailing ``section.key=value`` overrides, shared by every CLI."""
    parser.add_argument("--config", default=default,
                        help="YAML config: a path, or a name in configs/ (e.g. voc.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override any config key, value read as YAML (e.g. loss.focal_loss=false)")
