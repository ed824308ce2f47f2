"""The toolkit from Python: load a trained detector, predict on images, train, evaluate.

    import cv2
    from detector import Detector, evaluate, train

    model = Detector("runs/shapes/exp/best.pt", conf=0.25)      # a .pt, an export.py .onnx, Darknet .weights + config
    for r in model.predict(["photo.jpg", cv2.imread("b.jpg")]):  # paths, folders, BGR arrays, or a list of them
        for (x1, y1, x2, y2), score, name in zip(r.boxes, r.scores, r.names):
            print(f"{name} {score:.2f} at {x1:.0f},{y1:.0f} {x2:.0f},{y2:.0f}")   # the image's own pixels
    result = train("shapes.yaml", train={"epochs": 3})         # the dict `train.py --json` writes
    metrics = evaluate(f"{result['run_dir']}/best.pt")           # the dict `eval.py --json` writes

predict.py, eval.py and train.py call the same code (utils/infer/predictor.py, utils/infer/evaluation.py,
utils/train/fit.py). Config keys are given as sections of typed values (``train={"epochs": 3}``) or as the
command line's ``section.key=value`` strings (``overrides=["train.epochs=3"]``). Errors are the library's typed
exceptions (ConfigError, WeightsError, BackendError, SourceError, PredictError, ...), all ValueErrors or
OSErrors with a one-line message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from utils.data.images import read_image
from utils.infer.backend import Backend, load_backend
from utils.infer.draw import draw_detections
from utils.infer.predictor import PredictError, Predictor
from utils.infer.sources import frames, resolve_source
from utils.runtime import select_device

__all__ = ["Detections", "Detector", "evaluate", "train"]

Image = str | Path | np.ndarray


@dataclass
class Detections:
    """One image's detections, in its own pixels, best score first."""

    boxes: np.ndarray  # [N, 4] float32: x1, y1, x2, y2
    scores: np.ndarray  # [N] float32: objectness x class probability
    classes: np.ndarray  # [N] int64: class indices
    names: list[str]  # [N]: the class name of each box
    shape: tuple[int, int]  # the image's (height, width)
    path: str | None  # the file it was read from; None for an array
    class_names: list[str]  # the model's classes, by index

    def __len__(self) -> int:
        return len(self.scores)

    def to_array(self) -> np.ndarray:
        """``[N, 6]`` float32 rows (x1, y1, x2, y2, score, class), as predict.py's pipeline returns them."""
        return np.concatenate([self.boxes, self.scores[:, None], self.classes[:, None].astype(np.float32)], 1)

    def draw(self, image: np.ndarray) -> np.ndarray:
        """A copy of the BGR ``image`` with the boxes and their "name score" labels, as predict.py draws them."""
        return draw_detections(image, self.to_array(), self.class_names)


class Detector:
    """A trained detector: ``Detector(weights)`` then ``predict(images)``.

    ``weights``: a ``.pt`` checkpoint of train.py (its card gives classes, anchors, model and input size), a file
    of export.py (``.onnx``, OpenVINO ``.xml`` or its folder, ``.torchscript``), or Darknet ``.weights`` with
    ``config``. ``device``: auto | cpu | cuda |
    cuda:N; ``precision``: auto | fp32 | bf16 | fp16 (PyTorch weights; auto follows the machine: fp16 on CUDA,
    bf16 on a CPU with bfloat16 instructions, else fp32); ``img_size``: the input size (default: the model's);
    ``conf``, ``iou``, ``max_det``, ``classes`` (names or indices), ``agnostic_nms``: as predict.py's options;
    ``batch``: images per forward pass.
    """

    def __init__(self, weights: str | Path, config: str | Path | None = None, overrides: Sequence[str] = (),
                 device: str = "auto", precision: str = "auto", img_size: int | None = None, conf: float = 0.25,
                 iou: float = 0.45, max_det: int = 300, classes: Sequence[int | str] | None = None,
                 agnostic_nms: bool = False, batch: int = 8) -> None:
        if batch < 1:
            raise PredictError(f"batch must be at least 1, got {batch}")
        self.backend: Backend = load_backend(weights, config, overrides, select_device(device), precision=precision)
        self.predictor = Predictor(self.backend, conf, iou, max_det, classes, agnostic_nms, img_size)
        self.batch = batch
        self.skipped: list[str] = []  # files of a folder that could not be decoded (left out, as predict.py does)

    @property
    def class_names(self) -> list[str]:
        return list(self.backend.class_names)

    @property
    def img_size(self) -> int:
        return self.predictor.size

    @property
    def precision(self) -> str:
        return self.backend.precision

    @property
    def device(self) -> str:
        return str(self.backend.device)

    def __call__(self, images: Image | Sequence[Image]) -> list[Detections]:
        return self.predict(images)

    def predict(self, images: Image | Sequence[Image]) -> list[Detections]:
        """Detections per image, in order: ``images`` is a path (an image, or a folder: its images, recursively,
        sorted), a BGR ``[H, W, 3]`` uint8 array (as ``cv2.imread`` gives; ``[H, W]`` gray and ``[H, W, 4]`` BGRA
        are converted), or a list of these; a path may also be a glob, a .txt list of images, an http(s) image URL
        or a video file (each frame an image). An image file named alone that cannot be decoded is an
        ImageReadError; one of a folder, glob or list is left out and named in ``self.skipped``."""
        items = _expand(images, self.skipped)
        out: list[Detections] = []
        for start in range(0, len(items), self.batch):
            chunk = items[start:start + self.batch]
            found = self.predictor([img for img, _ in chunk])
            out += [self._detections(d, img, path) for d, (img, path) in zip(found, chunk, strict=True)]
        return out

    def _detections(self, d: np.ndarray, img: np.ndarray, path: str | None) -> Detections:
        classes = d[:, 5].astype(np.int64)
        return Detections(d[:, :4].astype(np.float32), d[:, 4].astype(np.float32), classes,
                          [self.backend.class_names[c] for c in classes], img.shape[:2], path, self.class_names)


def _expand(images: Image | Sequence[Image], skipped: list[str]) -> list[tuple[np.ndarray, str | None]]:
    """(BGR image, its path or None) for each image ``images`` names, in order: arrays as they are, paths as
    predict.py's ``--source`` reads them (utils.infer.sources: files, folders, globs, .txt lists, URLs, videos)."""
    if isinstance(images, (str, Path, np.ndarray)):
        images = [images]
    if not isinstance(images, (list, tuple)):
        raise PredictError(f"images: a path, a numpy array or a list of them, got {type(images).__name__}")
    out: list[tuple[np.ndarray, str | None]] = []
    for item in images:
        if isinstance(item, np.ndarray):
            out.append((_bgr(item), None))
            continue
        if not isinstance(item, (str, Path)):
            raise PredictError(f"images: a path, a numpy array or a list of them, got a list holding {type(item).__name__}")
        source = resolve_source(str(item))
        if source.kind in ("stream", "webcam"):
            raise PredictError(f"{item}: a live source has no end; read its frames with predict.py, or with OpenCV "
                               "and pass them as arrays")
        single = source.kind == "images" and len(source.files) == 1 and str(source.files[0]) == str(item)
        if single and isinstance(source.files[0], Path):  # one named file: unreadable is an error, not a skip
            out.append((read_image(source.files[0]), str(item)))
            continue
        for batch in frames(source, 64, skipped, show_progress=False):
            out += [(f.image, f.path or None) for f in batch]
    return out


def _bgr(img: np.ndarray) -> np.ndarray:
    """A uint8 ``[H, W, 3]`` BGR image from an array as OpenCV gives them (gray and BGRA converted)."""
    if img.dtype != np.uint8:
        raise PredictError(f"an image array must be uint8 (as cv2.imread gives it), got {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise PredictError(f"an image array must be [H, W, 3] BGR, [H, W] gray or [H, W, 4] BGRA, got shape {img.shape}")


def train(config: str | Path | None = "shapes.yaml", resume: str | Path | None = None, overrides: Sequence[str] = (),
          **sections: dict[str, Any]) -> dict[str, Any]:
    """Train as ``train.py --config config`` does and return the dict ``train.py --json`` writes (run_dir, epochs,
    seconds, map50, map50_95, ...). ``sections``: config keys by section, ``train={"epochs": 3}``; ``overrides``:
    ``section.key=value`` strings. ``resume``: a checkpoint to continue, as ``train.py --resume`` (``config`` is
    then unused, and ``sections`` may change only what resume lets change: where the data is, the device, ...)."""
    from utils.config.load import load_config
    from utils.train.fit import fit
    from utils.train.resume import resume_config
    from utils.train.setup import float32_recipe

    overrides = [*overrides, *_as_overrides(sections)]
    if resume is not None:
        return fit(resume_config(resume, overrides), resume)
    return fit(float32_recipe(load_config(config, overrides), overrides))


def evaluate(weights: str | Path, config: str | Path | None = None, overrides: Sequence[str] = (),
             split: Sequence[str] | None = None, device: str | None = None, precision: str = "auto",
             save_dir: str | Path = "runs/eval", plots: bool = False, **sections: dict[str, Any]) -> dict[str, Any]:
    """Evaluate ``weights`` as ``eval.py`` does (VOC mAP50, 07 and all-point; COCO-style mAP50-95) and return the
    dict ``eval.py --json`` writes. ``sections`` (``eval={"nms_iou": 0.6}``) and ``overrides`` change the config."""
    from utils.infer.evaluation import evaluate_run

    overrides = [*overrides, *_as_overrides(sections)]
    return evaluate_run(weights, None, config, overrides, split, device, precision, save_dir, plots).summary


def _as_overrides(sections: dict[str, dict[str, Any]]) -> list[str]:
    """``{"eval": {"nms_iou": 0.6}}`` -> ``["eval.nms_iou=0.6"]``: the command line's form, each value written as
    YAML (which reads it back as it was), so that one code path checks every key and type."""
    import yaml

    out = []
    for section, keys in sections.items():
        if not isinstance(keys, dict):
            raise PredictError(f"{section}=: config keys as a dict, e.g. {section}={{'key': value}}, "
                               f"got {type(keys).__name__}")
        for key, value in keys.items():
            text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()  # a scalar ends "\n...\n"
            out.append(f"{section}.{key}={text.removesuffix('...').strip()}")
    return out
