"""Every configuration key, its type, its default and its rules, read top to bottom.

A run is described by one YAML file (``configs/*.yaml``) with the sections ``model``, ``data``,
``loss``, ``train``, ``eval`` and ``shapes`` (the synthetic demo set). Each key below is one
``_f(default, rules)`` line with a comment that says what it means and in which unit; the rules
(``choices``, bounds, ``file``, ...) are checked by ``utils.config.load.validate``.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

MODEL_NAMES = ("yolov4", "yolov4-tiny", "yolov4-tiny-3l")
NUM_ANCHORS = {"yolov4": 9, "yolov4-tiny": 6, "yolov4-tiny-3l": 9}  # yolov4.cfg, yolov4-tiny.cfg, yolov4-tiny-3l.cfg


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
    name: str = _f("yolov4", choices=MODEL_NAMES)  # architecture: yolov4 | yolov4-tiny | yolov4-tiny-3l
    input_size: int = _f(416, gt=0, multiple_of=32)  # network input side, pixels (square, multiple of 32)
    anchors_path: str = _f("model_data/yolo_anchors.txt", file=True)  # anchor (w, h) pairs in input pixels, smallest first
    weights: str = _f("")  # weights to start from: .pt or Darknet .weights / .conv.137; "" = none (checked as training starts)
    scale_x_y: list[float] = _f([1.0, 1.0, 1.0], gt=0, length=3)  # xy decode scale per stride 8/16/32 (Darknet: 1.2/1.1/1.05)
    obj_prior: float = _f(0.01, gt=0, lt=1)  # initial objectness probability of the head bias (Lin et al. 2017, 3.3)
    cls_prior: float | None = _f(None, gt=0, lt=1)  # initial class probability of the head bias; null = 1 / (num_classes + 1)


@dataclass
class DataConfig:
    format: str = _f("voc", choices=("voc", "coco", "yolo"))  # annotation format of the dataset under root
    root: str = _f("VOCdevkit")  # dataset: VOCdevkit for voc, the COCO folder for coco, the data.yaml for yolo
    # voc: YEAR/split (VOC2007/trainval); coco: train2017; yolo: a key of the data.yaml (train)
    train_splits: list[str] = _f(["VOC2007/trainval", "VOC2012/trainval"], nonempty=True)  # splits to train on
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
    focal_loss_ratio: float = _f(10.0, gt=0)  # multiplier on the focal conf term (classic form only)
    focal_normalize: str = _f("mean", choices=("mean", "num_pos"))  # classic form: mean over kept cells | sum / positives
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
    amp: str = _f("auto", choices=("auto", "fp16", "bf16", "off"))  # auto: CUDA fp16, CPU with AMX/AVX512-BF16 bf16, else off
    float32_overrides: list[str] = _f([])  # section.key=value applied when a new run trains in float32 on a CPU
    device: str = _f("auto")  # auto | cpu | cuda | cuda:N
    sync_bn: bool = _f(False)  # SyncBatchNorm under DDP
    channels_last: str = _f("auto", choices=("auto", "on", "off"))  # channels_last model and inputs: auto = on for the CPU
    seed: int = _f(0, ge=0)  # seed of Python, NumPy and torch RNGs
    deterministic: bool = _f(False)  # ask torch for deterministic algorithms (slower)
    save_dir: str = _f("runs/train")  # parent folder of run directories (exp, exp2, ...)
    name: str = _f("exp")  # run directory name under save_dir; taken names get 2, 3, ...
    eval_period: int = _f(10, gt=0)  # evaluate every N epochs and at the end, epochs
    patience: int = _f(0, ge=0)  # stop after N epochs without a better fitness (seen at evaluations); 0 = off
    save_period: int = _f(10, ge=0)  # keep a checkpoint every N epochs; 0 = only last and best
    keep_last_state: bool = _f(False)  # keep last.pt resumable at the run's end; false strips it like best.pt (card + EMA)
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


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def section_types(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


def all_keys() -> list[str]:
    """Every valid dotted key, ``section.key``."""
    return [f"{s}.{k}" for s in SECTIONS for k in section_fields(s)]

