"""Images to detections in their own pixels: letterbox, the backend, decoding and NMS, the boxes mapped back.

    predictor = Predictor(load_backend("best.pt"), conf=0.25)
    dets = predictor([cv2.imread("a.jpg")])   # per image [K, 6] = (x1, y1, x2, y2, score, class), numpy

predict.py and the Python API (detector.py) both call it; ``predict.py --benchmark`` times it by stage."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from utils.data.augment import letterbox, unletterbox_boxes
from utils.data.dataset import to_chw_rgb
from utils.infer.backend import Backend
from utils.infer.draw import objectness_heatmap

LOGGER = logging.getLogger(__name__)


class PredictError(ValueError):
    """A prediction setting that cannot be used (a class the model does not have, a batch below 1)."""


class Timer:
    """Accumulated seconds per stage (pre-processing, model, post-processing)."""

    def __init__(self, sync: bool) -> None:
        self.total: Counter[str] = Counter()
        self.sync = sync

    def __call__(self, stage: str, t0: float) -> float:
        if self.sync:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        self.total[stage] += t1 - t0
        return t1


class Predictor:
    """Batches of BGR images -> per image ``[K, 6]`` detections (x1, y1, x2, y2, score, class) in its own pixels.

    ``conf``: score threshold (objectness x class probability); ``iou``: the NMS IoU; ``max_det``: boxes per
    image at most; ``classes``: keep only these (names or indices); ``agnostic``: NMS across classes;
    ``img_size``: the input size (default: the model's); ``heatmap``: keep each batch's objectness heatmap
    in ``self.heat``. Counts per class and the time per stage add up over calls (``counts``, ``timer``)."""

    def __init__(self, backend: Backend, conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
                 classes: Sequence[int | str] | None = None, agnostic: bool = False, img_size: int | None = None,
                 heatmap: bool = False) -> None:
        self.backend = backend
        self.size = backend.check_size(img_size or backend.input_size)
        self.eval_cfg = dataclasses.replace(backend.cfg.eval, conf_thres=conf, nms_iou=iou, max_det=max_det,
                                            agnostic_nms=agnostic or backend.cfg.eval.agnostic_nms)
        self.keep_classes = None if classes is None else class_indices(classes, backend.class_names)
        if backend.nms is not None:
            if heatmap:
                raise PredictError("an --nms graph gives detections, not the objectness maps a heatmap needs")
            fixed = backend.nms
            if (conf, iou, max_det) != (fixed["conf"], fixed["iou"], fixed["max_det"]):
                LOGGER.warning("this graph has its NMS inside, fixed at export (conf %s, iou %s, max_det %s); conf, iou "
                               "and max_det here are not used", fixed["conf"], fixed["iou"], fixed["max_det"])
        self.heatmap = heatmap
        self.heat: tuple[np.ndarray, list] | None = None
        self.timer = Timer(backend.device.type == "cuda")
        self.counts: Counter[str] = Counter()
        self.images = 0

    @property
    def class_names(self) -> list[str]:
        return self.backend.class_names

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        t0 = time.perf_counter()
        boxed = [letterbox(f, self.size) for f in images]
        batch = torch.stack([to_chw_rgb(b) for b, _ in boxed]).float().div_(255)
        t0 = self.timer("pre", t0)
        outputs = self.backend(batch)
        t0 = self.timer("model", t0)
        found = self.backend.detections(outputs, self.eval_cfg)
        out = []
        for d, img, (_, info) in zip(found, images, boxed, strict=True):
            d = d.cpu().numpy()
            if self.keep_classes is not None:
                d = d[np.isin(d[:, 5].astype(int), self.keep_classes)]
            d[:, :4] = unletterbox_boxes(d[:, :4], info, img.shape[1], img.shape[0])
            out.append(d)
        self.timer("post", t0)
        self.images += len(images)
        for d in out:
            self.counts.update(self.class_names[int(c)] for c in d[:, 5])
        if self.heatmap:
            self.heat = (objectness_heatmap(outputs, len(self.backend.spec.anchor_masks[0]), self.size), [i for _, i in boxed])
        return out


def class_indices(classes: Sequence[int | str], names: Sequence[str]) -> list[int]:
    """Class names or indices (as numbers or digit strings) -> sorted indices; a PredictError names the unknown ones."""
    def index(c: int | str) -> int | None:
        if isinstance(c, int) or (isinstance(c, str) and c.isdigit()):
            return int(c) if 0 <= int(c) < len(names) else None
        return names.index(c) if c in names else None

    bad = [str(c) for c in classes if index(c) is None]
    if bad:
        raise PredictError(f"classes {' '.join(bad)}: not among the model's classes ({', '.join(names)})")
    return sorted({index(c) for c in classes})


def benchmark(predictor: Predictor, images: list[np.ndarray], runs: int = 20) -> dict:
    """Latency per stage (median ms per batch) and images per second on ``images`` as one batch."""
    for _ in range(3):
        predictor(images)
    per_run: dict[str, list[float]] = {"pre": [], "model": [], "post": []}
    for _ in range(runs):
        predictor.timer.total.clear()
        predictor(images)
        for k in per_run:
            per_run[k].append(predictor.timer.total[k] * 1e3)
    med = {k: float(np.median(v)) for k, v in per_run.items()}
    total = sum(med.values())
    return {"batch": len(images), "img_size": predictor.size, "backend": predictor.backend.kind, "ms_per_batch": {
        **{k: round(v, 2) for k, v in med.items()}, "total": round(total, 2)}, "fps": round(len(images) * 1e3 / total, 1)}
