"""The whole configuration: typed dataclasses, YAML loading, overrides, validation.

A run is described by one YAML file (``configs/*.yaml``) with the sections
``model``, ``data``, ``loss``, ``train``, ``eval`` and ``shapes`` (the synthetic demo set), plus ``section.key=value``
overrides from the command line whose values are read as YAML (``12``, ``0.5``,
``false``, ``[1, 2]``, ``null``).

Validation fails fast with one message that names the source (file or override),
the dotted key and the problem: unknown keys (with the closest valid key
suggested), wrong types, values out of range, missing files.

Relative paths are looked up as given (from the working directory) and then
from the repository root, so the shipped configs work from any directory.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import operator
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"

MODEL_NAMES = ("yolov4", "yolov4-tiny")
NUM_ANCHORS = {"yolov4": 9, "yolov4-tiny": 6}  # yolov4.cfg and yolov4-tiny.cfg


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names source, key and problem."""


def _f(default: Any, **checks: Any) -> Any:
    """A dataclass field with validation rules in its metadata.

    Rules: ``choices`` (allowed values), ``ge``/``gt``/``le``/``lt`` (bounds, applied
    to each element of a list), ``multiple_of``, ``file`` (must exist when not
    empty), ``length`` (exact list length), ``nonempty`` (list).
    """
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=checks)
    return field(default=default, metadata=checks)


# --------------------------------------------------------------------------- sections


@dataclass
class ModelConfig:
    name: str = _f("yolov4", choices=MODEL_NAMES)  # architecture: yolov4 | yolov4-tiny
    input_size: int = _f(416, gt=0, multiple_of=32)  # network input side, pixels (square, multiple of 32)
    anchors_path: str = _f("model_data/yolo_anchors.txt", file=True)  # anchor (w, h) pairs in input pixels, smallest first
    weights: str = _f("", file=True)  # weights to start from: .pt checkpoint or Darknet .weights / .conv.137; "" = none
    scale_x_y: list[float] = _f([1.0, 1.0, 1.0], gt=0, length=3)  # xy decode scale per stride 8/16/32 (Darknet: 1.2/1.1/1.05)
    obj_prior: float = _f(0.01, gt=0, lt=1)  # initial objectness probability of the head bias (Lin et al. 2017, 3.3)
    cls_prior: float | None = _f(None, gt=0, lt=1)  # initial class probability of the head bias; null = 1 / (num_classes + 1)


@dataclass
class DataConfig:
    format: str = _f("voc", choices=("voc", "coco"))  # annotation format of the dataset under root
    root: str = _f("VOCdevkit")  # dataset folder: VOCdevkit for voc, the COCO folder for coco
    train_splits: list[str] = _f(["VOC2007/trainval", "VOC2012/trainval"], nonempty=True)  # voc: YEAR/split; coco: train2017
    val_splits: list[str] = _f(["VOC2007/test"], nonempty=True)  # splits evaluated during training and by eval.py
    classes_path: str = _f("model_data/voc_classes.txt", file=True)  # class names, one per line, in label order
    synthetic: bool = _f(False)  # generate the synthetic shapes set under root when it is missing (demo)
    mosaic: float = _f(0.5, ge=0, le=1)  # probability of a 4-image mosaic per training sample
    mixup: float = _f(0.0, ge=0, le=1)  # probability of blending a mosaic with a second mosaic
    close_mosaic: int = _f(0, ge=0)  # last N epochs train without mosaic and mixup, epochs
    flip: float = _f(0.5, ge=0, le=1)  # probability of a horizontal flip
    scale: list[float] = _f([0.25, 2.0], gt=0, length=2)  # random image scale range (min, max), ratio of input size
    jitter: float = _f(0.3, ge=0, lt=1)  # aspect-ratio jitter amplitude, fraction
    translate: float = _f(0.5, ge=0, le=0.5)  # placement range of a scaled image: 0 = centred, 0.5 = anywhere
    hsv: list[float] = _f([0.1, 0.7, 0.4], ge=0, le=1, length=3)  # hue, saturation, value jitter gains, fraction
    min_box_size: float = _f(2.0, ge=0)  # boxes narrower or shorter than this after augmentation are dropped, pixels
    min_box_area: float = _f(0.2, ge=0, le=1)  # boxes keeping less than this fraction of their area are dropped
    workers: int = _f(4, ge=0)  # DataLoader worker processes per rank
    cache: bool = _f(True)  # cache parsed annotations next to the split lists
    strict: bool = _f(False)  # any dataset problem (bad image, XML, box, class) is an error instead of a skip


@dataclass
class ShapesConfig:
    name: str = _f("SHAPES")  # folder of the synthetic set under data.root (used when data.synthetic is true)
    num_train: int = _f(800, ge=1)  # images in ImageSets/Main/train.txt
    num_val: int = _f(200, ge=1)  # images in val.txt
    num_test: int = _f(200, ge=0)  # images in test.txt
    width: int = _f(320, ge=32)  # image width, pixels
    height: int = _f(320, ge=32)  # image height, pixels
    max_objects: int = _f(6, ge=1)  # labelled shapes per image at most (at least 1)
    tail: float = _f(0.1, gt=0, le=1)  # frequency of the rarest class relative to the commonest
    distractors: float = _f(1.5, ge=0)  # mean count of unlabelled distractor shapes per image
    seed: int = _f(0, ge=0)  # generator seed; the set is a function of these fields


@dataclass
class LossConfig:
    iou_type: str = _f("ciou", choices=("iou", "giou", "diou", "ciou"))  # IoU variant of the location term
    box_weight: float = _f(0.05, ge=0)  # weight of the location term
    obj_weight: float = _f(5.0, ge=0)  # weight of the confidence term, scaled by input area / 416^2
    cls_weight: float = _f(1.0, ge=0)  # weight of the class term, scaled by num_classes / 80
    balance: list[float] = _f([4.0, 1.0, 0.4], ge=0, length=3)  # conf weight per stride 8/16/32 (tiny: last two)
    focal_loss: bool = _f(False)  # focal objectness: -alpha_t (1 - p_t)^gamma log(p_t) instead of BCE
    focal_alpha: float = _f(0.25, ge=0, le=1)  # weight of positives in the focal term (negatives get 1 - alpha)
    focal_gamma: float = _f(2.0, ge=0)  # focusing exponent of the focal term; 0 = alpha-weighted BCE
    focal_loss_ratio: float = _f(10.0, gt=0)  # multiplier on the focal conf term
    focal_normalize: str = _f("mean", choices=("mean", "num_pos"))  # mean over kept cells | sum / positives
    focal_form: str = _f("classic", choices=("classic", "varifocal", "quality"))  # with focal_loss: documents' | VFL | QFL
    obj_iou_target: float = _f(0.0, ge=0, le=1)  # r: positives' objectness target (1 - r) + r * IoU(box, gt); BCE and classic
    focal_cls: bool = _f(False)  # apply the same focal form to the class term
    label_smoothing: float = _f(0.0, ge=0, lt=1)  # class targets become y * (1 - eps) + eps / 2
    ignore_thresh: float = _f(0.5, ge=0, le=1)  # negatives whose box IoU with a ground truth exceeds this are ignored
    multi_anchor_iou: float | None = _f(None, gt=0, le=1)  # also assign anchors over this shape IoU (Darknet 0.213); null = off


@dataclass
class TrainConfig:
    epochs: int = _f(300, gt=0)  # total training epochs, both phases included
    freeze_epochs: int = _f(50, ge=0)  # first epochs with the backbone frozen
    freeze_batch_size: int = _f(16, gt=0)  # images per step and rank while frozen
    batch_size: int = _f(8, gt=0)  # images per step and rank after unfreezing
    nominal_batch: int = _f(64, gt=0)  # lr is scaled by batch / nominal_batch, images
    accumulate: bool = _f(True)  # accumulate gradients up to the nominal batch
    optimizer: str = _f("sgd", choices=("sgd", "adam", "adamw"))  # optimizer: sgd (nesterov) | adam | adamw
    lr: float = _f(0.01, gt=0)  # initial learning rate at the nominal batch
    min_lr: float = _f(0.0001, ge=0)  # final learning rate of the schedule
    momentum: float = _f(0.937, ge=0, lt=1)  # SGD momentum (nesterov) or Adam beta1
    weight_decay: float = _f(0.0005, ge=0)  # L2 penalty on conv weights (not on BN or biases)
    schedule: str = _f("cos", choices=("cos", "step"))  # lr decay after warmup
    lr_steps: list[float] = _f([0.8, 0.9], gt=0, lt=1)  # step schedule: decay points, fractions of the epochs
    lr_step_gamma: float = _f(0.1, gt=0, le=1)  # step schedule: factor at each decay point
    warmup_epochs: float = _f(3.0, ge=0)  # linear warmup length, epochs (fractions allowed)
    warmup_bias_lr: float = _f(0.1, ge=0)  # bias lr at the start of warmup
    warmup_momentum: float = _f(0.8, ge=0, lt=1)  # momentum at the start of warmup
    ema: bool = _f(True)  # keep an exponential moving average of the weights
    ema_decay: float = _f(0.9999, gt=0, lt=1)  # EMA decay once ramped up
    ema_tau: float = _f(2000.0, gt=0)  # EMA ramp time constant, iterations
    amp: str = _f("auto", choices=("auto", "fp16", "bf16", "off"))  # autocast: auto = fp16 on CUDA, off on the CPU
    device: str = _f("auto")  # auto | cpu | cuda | cuda:N
    sync_bn: bool = _f(False)  # SyncBatchNorm under DDP
    channels_last: bool = _f(False)  # channels_last memory format for the model and inputs
    seed: int = _f(0, ge=0)  # seed of Python, NumPy and torch RNGs
    deterministic: bool = _f(False)  # ask torch for deterministic algorithms (slower)
    save_dir: str = _f("runs/train")  # parent folder of run directories (exp, exp2, ...)
    name: str = _f("exp")  # run directory name under save_dir; taken names get 2, 3, ...
    eval_period: int = _f(10, gt=0)  # evaluate every N epochs and at the end, epochs
    save_period: int = _f(10, ge=0)  # keep a checkpoint every N epochs; 0 = only last and best
    max_bad_steps: int = _f(20, gt=0)  # this many non-finite losses in a row stop the run (last.pt is saved)
    time_limit: float = _f(0.0, ge=0)  # wall-clock budget, minutes: epochs and schedule are fitted to it; 0 = off
    grad_clip: float = _f(10.0, ge=0)  # clip the gradient norm to this before each step; 0 = off


@dataclass
class EvalConfig:
    conf_thres: float = _f(0.001, ge=0, le=1)  # score threshold before NMS (low for mAP)
    nms_iou: float = _f(0.5, gt=0, le=1)  # IoU above which NMS suppresses a box
    max_det: int = _f(300, gt=0)  # detections kept per image after NMS
    agnostic_nms: bool = _f(False)  # NMS across classes instead of per class
    match_iou: float = _f(0.5, gt=0, le=1)  # IoU for a detection to match a ground truth (VOC AP)
    score_thres: float = _f(0.5, ge=0, le=1)  # score at which precision, recall and F1 are reported
    batch_size: int = _f(16, gt=0)  # images per inference batch


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    shapes: ShapesConfig = field(default_factory=ShapesConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain dict of plain values (safe for YAML, JSON and checkpoints)."""
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = typing.get_type_hints(Config)  # section name -> dataclass


def _fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def _hints(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


def all_keys() -> list[str]:
    """Every valid dotted key, ``section.key``."""
    return [f"{s}.{k}" for s in SECTIONS for k in _fields(s)]


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


# --------------------------------------------------------------------------- paths and model_data


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
    if key not in _fields(section):
        raise ConfigError(f"{source}: unknown key '{dotted}'.{_suggest(dotted)}")
    if isinstance(value, bool) and ("off" if value is False else "on") in _fields(section)[key].metadata.get("choices", ()):
        value = "off" if value is False else "on"  # YAML 1.1 reads a bare off / on as a boolean: train.amp=off
    setattr(getattr(cfg, section), key, _coerce(value, _hints(section)[key], f"{source}: {dotted}"))


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

    for section in SECTIONS:
        for key, f in _fields(section).items():
            dotted = f"{section}.{key}"
            value = getattr(getattr(cfg, section), key)
            _check_value(value, dict(f.metadata), where(dotted))
            if f.metadata.get("file") and value and not resolve_path(value).is_file():
                raise ConfigError(f"{where(dotted)}: file not found: '{value}' (looked in the working directory and {REPO_ROOT})")

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
    return cfg


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


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named by :func:`add_config_args`; a ConfigError ends the program with its message."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
