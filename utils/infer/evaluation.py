"""A model (or another detector's results) scored on a dataset's splits: what eval.py and the Python API's
``evaluate`` run.

    report = evaluate_run("runs/shapes/exp/best.pt")   # or detections="theirs.json", config="shapes.yaml"
    report.summary                                     # the dict eval.py --json writes
    print(report.heading); print(report.table)         # what eval.py prints

The metrics come from utils.train.engine.evaluate, the function training-time evaluation calls, with the same
defaults (letterboxed inputs, ``eval.conf_thres`` 0.001, the configured NMS). The run folder (``save_dir``/exp,
exp2, ...) gets detections.json (COCO results), ground_truth.json (COCO), metrics.json and, with ``plots``,
the evaluation pictures."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.config.files import read_classes, resolve_path
from utils.config.load import load_config
from utils.config.schema import ConfigError
from utils.data.splits import load_records
from utils.data.synthetic import ensure_shapes
from utils.infer.backend import load_backend
from utils.metrics.coco import ResultsFileError, coco_ground_truth, coco_results, read_coco_results
from utils.metrics.voc import format_table, per_class_table
from utils.runtime import next_run_dir, select_device
from utils.train.engine import evaluate, score_detections

LOGGER = logging.getLogger(__name__)


@dataclass
class Evaluation:
    summary: dict[str, Any]  # what eval.py --json writes (metrics.json in the run folder)
    heading: str  # "200 images of SHAPES/val, 256 px (pytorch, fp32), 3.1 s"
    table: str  # the per-class table
    out_dir: Path


def evaluate_run(weights: str | Path | None = None, detections: str | Path | None = None,
                 config: str | Path | None = None, overrides: Sequence[str] = (), splits: Sequence[str] | None = None,
                 device: str | None = None, precision: str = "auto", save_dir: str | Path = "runs/eval",
                 plots: bool = False) -> Evaluation:
    """``weights`` (a .pt checkpoint, an export.py graph, Darknet .weights with ``config``) run on ``splits``
    (default: the config's ``data.val_splits``), or ``detections`` (a COCO results file; needs ``config``)
    scored on them. ``device`` default: auto (a GPU where there is one)."""
    if (weights is None) == (detections is None):
        raise ConfigError("give weights (a model to run) or detections (results to score), one of the two")
    backend, dev = None, None
    if detections is not None:
        if config is None:
            raise ConfigError("scoring detections needs a config, for the class names and the split")
        cfg = load_config(config, overrides)
        classes = read_classes(resolve_path(cfg.data.classes_path))
    else:
        dev = select_device(device or "auto")
        backend = load_backend(weights, config, overrides, dev, precision=precision)
        cfg, classes = backend.cfg, backend.class_names
        if backend.nms is not None:
            LOGGER.warning("%s has its NMS inside, fixed at export (conf %s, iou %s, max_det %s), not eval's "
                           "(conf %s): mAP counts only what passes it", weights, backend.nms["conf"], backend.nms["iou"],
                           backend.nms["max_det"], cfg.eval.conf_thres)
        if config is None and Path(cfg.data.classes_path).exists() and read_classes(cfg.data.classes_path) != classes:
            LOGGER.info("note: %s differs from the checkpoint's class names; the checkpoint's are used",
                        cfg.data.classes_path)
    made = ensure_shapes(cfg, classes) if Path(cfg.data.classes_path).exists() else None
    if made:
        LOGGER.info("made the synthetic shapes set in %s", made)
    splits = list(splits or cfg.data.val_splits)
    records, _ = load_records(cfg.data, splits, classes)
    t0 = time.perf_counter()
    if backend is None:
        dets = read_coco_results(read_json(detections), records, len(classes), str(detections))
        result = score_detections(dets, records, len(classes), cfg.eval)
        how = f"the detections in {detections}"
    else:
        result = evaluate(backend, records, len(classes), backend.spec, backend.check_size(cfg.model.input_size),
                          cfg.eval, dev, cfg.data.workers)
        how = f"{cfg.model.input_size} px ({backend.kind}, {backend.precision})"
    seconds = time.perf_counter() - t0
    rows = per_class_table(result, records, classes)
    skipped = f" ({result['unreadable']} could not be decoded and are left out)" if result["unreadable"] else ""

    out_dir = next_run_dir(save_dir)
    (out_dir / "detections.json").write_text(json.dumps(coco_results(result["dets"])))
    (out_dir / "ground_truth.json").write_text(json.dumps(coco_ground_truth(records, classes)))
    summary = {"weights": str(weights) if weights is not None else None,
               "detections": str(detections) if detections is not None else None, "splits": splits,
               "images": len(records), "unreadable": result["unreadable"], "seconds": round(seconds, 2),
               "precision": backend.precision if backend else None,
               "map50": result["map50"], "map50_07": result["map50_07"], "map50_95": result["map50_95"],
               "coco": {k: v for k, v in result["coco"].items() if k != "per_class_AP50_95"}, "per_class": rows}
    if plots:
        from utils.plots import plot_evaluation, plot_labels, save_batch_pictures

        plot_evaluation(result, classes, out_dir, cfg.eval.score_thres, cfg.eval.match_iou)
        plot_labels(records, classes, out_dir / "labels.png")
        save_batch_pictures(records, result["dets"], classes, out_dir)
    summary = json.loads(json.dumps(summary, default=float))  # numpy numbers as plain floats, as the file has them
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return Evaluation(summary, f"{len(records)} images of {', '.join(splits)}{skipped}, {how}, {seconds:.1f} s",
                      format_table(rows, result), out_dir)


def read_json(path: str | Path):
    """A JSON file's content; a file that is missing or not JSON is a ResultsFileError."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ResultsFileError(f"{path}: {e}") from None
