"""Decode + NMS + letterbox inverse + metrics end to end, and eval.py."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import eval as eval_cli
from nets.box_coding import LevelSpec
from nets.yolo import build_model
from tests.scenes import rect_records
from utils.checkpoint import ModelCard, save_model
from utils.config.files import read_anchors
from utils.config.load import load_config
from utils.data.augment import letterbox_boxes, letterbox_info
from utils.infer.postprocess import decode_predictions, detect, non_max_suppression
from utils.train.engine import evaluate

ANCHORS = read_anchors("model_data/yolo_tiny_anchors.txt")
SPEC = LevelSpec(tuple(ANCHORS), ((1, 2, 3), (3, 4, 5)), (16, 32), (1.0, 1.0))


def encode(records, size: int, num_classes: int) -> list[torch.Tensor]:
    """Raw maps that decode exactly onto each record's boxes (letterboxed), confident, right class."""
    maps = [torch.full((len(records), 3 * (5 + num_classes), size // s, size // s), -12.0) for s in SPEC.strides]
    for b, rec in enumerate(records):
        info = letterbox_info(rec.width, rec.height, size)
        for box, label in zip(letterbox_boxes(rec.boxes, info), rec.labels, strict=True):
            lvl, slot = 0, 0
            stride = SPEC.strides[lvl]
            aw, ah = ANCHORS[SPEC.anchor_masks[lvl][slot]]
            cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
            gx, gy = int(cx // stride), int(cy // stride)
            fx, fy = (min(max(v, 1e-5), 1 - 1e-5) for v in (cx / stride - gx, cy / stride - gy))
            m = maps[lvl].view(len(records), 3, 5 + num_classes, size // stride, size // stride)
            m[b, slot, 0, gy, gx] = math.log(fx / (1 - fx))
            m[b, slot, 1, gy, gx] = math.log(fy / (1 - fy))
            m[b, slot, 2, gy, gx] = math.log(w / aw)
            m[b, slot, 3, gy, gx] = math.log(h / ah)
            m[b, slot, 4, gy, gx] = 12.0
            m[b, slot, 5 + int(label), gy, gx] = 12.0
    return maps


class Replay(nn.Module):
    """A stand-in model returning prepared maps batch after batch (evaluation keeps the order)."""

    def __init__(self, maps: list[torch.Tensor], strides=(16, 32)) -> None:
        super().__init__()
        self.maps, self.pos = maps, 0
        self.strides = strides

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [m[self.pos: self.pos + len(x)] for m in self.maps]
        self.pos += len(x)
        return out


def test_perfect_predictions_score_one(tmp_path: Path) -> None:
    records = rect_records(tmp_path, 6)
    for r in records:
        r.difficult[:] = False
    cfg = load_config("shapes.yaml", ["eval.batch_size=4"])
    model = Replay(encode(records, 320, 16))
    result = evaluate(model, records, 16, SPEC, 320, cfg.eval)
    assert result["map50"] == pytest.approx(1.0)
    assert result["map50_07"] == pytest.approx(1.0)
    assert result["map50_95"] == pytest.approx(1.0)
    for det, rec in zip(result["dets"], records, strict=True):  # boxes back in original pixels
        order = np.lexsort((det[:, 0], det[:, 5]))
        ref = np.lexsort((rec.boxes[:, 0], rec.labels))
        np.testing.assert_allclose(det[order, :4], rec.boxes[ref], atol=0.05)


def test_an_image_that_fails_to_decode_is_counted_and_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = rect_records(tmp_path, 6)
    for r in records:
        r.difficult[:] = False
    Path(records[2].path).write_bytes(b"\x89PNG\r\n\x1a\n cut short")  # it changed on disk after the split was read
    cfg = load_config("shapes.yaml", ["eval.batch_size=4"])
    good = [r for i, r in enumerate(records) if i != 2]
    model = Replay(encode(good, 320, 16))  # perfect maps for the images that do decode, in their order
    result = evaluate(model, records, 16, SPEC, 320, cfg.eval)
    assert result["unreadable"] == 1 and "1 of 6 images could not be decoded" in caplog.text
    # scored on the other five alone: perfect; counted as misses, image 2's boxes would pull mAP under 1
    assert result["map50"] == pytest.approx(1.0) and result["map50_95"] == pytest.approx(1.0)
    assert len(result["dets"]) == 6 and len(result["dets"][2]) == 0
    assert sum(result["voc"]["npos"]) == sum(len(r.labels) for r in good)


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    # decoded rows: box, objectness, class probabilities (2 classes)
    pred = torch.tensor([[[0, 0, 10, 10, 0.9, 0.9, 0.1],  # class 0, score 0.81
                          [1, 1, 10, 10, 0.8, 0.9, 0.1],  # IoU 0.81 with the first -> suppressed
                          [1, 1, 10, 10, 0.8, 0.1, 0.9],  # same place, class 1: kept (class-aware)
                          [50, 50, 60, 60, 0.5, 0.02, 0.01]]])  # score 0.01 < conf 0.05 -> dropped
    (out,) = non_max_suppression(pred, conf_thres=0.05, nms_iou=0.5)
    assert out[:, 5].tolist() == [0.0, 1.0]
    assert out[:, 4].tolist() == pytest.approx([0.81, 0.72])
    (agnostic,) = non_max_suppression(pred, conf_thres=0.05, nms_iou=0.5, agnostic=True)
    assert len(agnostic) == 1
    (capped,) = non_max_suppression(pred, conf_thres=0.0, nms_iou=0.5, max_det=1)
    assert len(capped) == 1


def test_nms_score_threshold_is_strict_and_the_class_filter_and_candidate_cap_apply() -> None:
    # score = objectness x the best class probability: 0.5 x 0.5 = 0.25 exactly in float32
    pred = torch.tensor([[[0, 0, 10, 10, 0.5, 0.5, 0.1],  # class 0, 0.25
                          [20, 20, 30, 30, 0.9, 0.1, 0.9],  # class 1, 0.81
                          [40, 40, 50, 50, 0.8, 0.9, 0.1]]])  # class 0, 0.72
    (out,) = non_max_suppression(pred, 0.25, 0.5, 300)
    assert out[:, 4].tolist() == pytest.approx([0.81, 0.72])  # 0.25 is not over 0.25
    (out,) = non_max_suppression(pred, 0.2, 0.5, 300, classes=[0])
    assert out[:, 5].tolist() == [0.0, 0.0] and out[:, 4].tolist() == pytest.approx([0.72, 0.25])
    (out,) = non_max_suppression(pred, 0.5, 0.5, 300, classes=[0])  # both filters: the score one still applies
    assert out[:, 4].tolist() == pytest.approx([0.72])
    (out,) = non_max_suppression(pred, 0.2, 0.5, 300, classes=[1, 5])
    assert out[:, 5].tolist() == [1.0]
    # the candidate cap keeps the best scores before NMS: with 2, the 0.25 box goes
    (out,) = non_max_suppression(pred, 0.2, 0.5, 300, max_candidates=2)
    assert out[:, 4].tolist() == pytest.approx([0.81, 0.72])


def test_nms_defaults_are_conf_0001_iou_05_and_300_boxes() -> None:
    # 400 boxes 20 px apart on a 20 x 20 grid (no overlap), scores 0.9 down to 0.5; then a box with IoU 0.81 beside
    # the best one (suppressed at IoU 0.5) and one scoring 0.0009 x 1 (under 0.001)
    xy = torch.stack(torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij"), -1).view(-1, 2) * 20
    grid = torch.cat([xy, xy + 10, torch.linspace(0.9, 0.5, 400)[:, None], torch.ones(400, 1)], 1)
    extra = torch.tensor([[1, 1, 10, 10, 0.85, 1.0], [500, 500, 510, 510, 0.0009, 1.0]])
    (out,) = non_max_suppression(torch.cat([grid, extra])[None])
    assert len(out) == 300  # max_det
    assert out[:, 4].tolist() == pytest.approx(grid[:300, 4].tolist())  # the best 300 of the grid, none of the extra
    (few,) = non_max_suppression(torch.cat([grid[:2], extra])[None])
    assert few[:, :4].tolist() == grid[:2, :4].tolist()  # IoU 0.81 > 0.5 suppressed, 0.0009 < 0.001 dropped


def test_decode_needs_one_spec_level_per_map() -> None:
    spec = LevelSpec(tuple(ANCHORS), ((1, 2, 3),), (16,), (1.0,))  # one level, for two maps
    with pytest.raises(ValueError, match="zip"):
        decode_predictions([torch.zeros(1, 3 * 7, 4, 4), torch.zeros(1, 3 * 7, 2, 2)], spec)


def test_detect_applies_the_configured_nms_threshold_and_limits() -> None:
    # one level, stride 16, one 32x32 anchor; logits 0 put each cell's box on the cell's centre with the anchor's
    # size. Cells (x, y) = (2, 2) and (3, 2): boxes [24, 24, 56, 56] and [40, 24, 72, 56], IoU 16*32 / (2*1024 - 512)
    # = 1/3, both class 0. Cell (6, 6): class 1, apart. Cell (2, 3): [24, 40, 56, 72], class 1, IoU 1/3 with the
    # first. Objectness logits 3, 2, 1, 0.5: scores 0.953, 0.881, 0.731, 0.622 (class logits 20: probability 1).
    spec = LevelSpec(((32.0, 32.0),), ((0,),), (16,), (1.0,))
    raw = torch.full((1, 5 + 2, 8, 8), -20.0)
    raw[0, :4] = 0.0
    for (x, y), obj, cls in (((2, 2), 3.0, 0), ((3, 2), 2.0, 0), ((6, 6), 1.0, 1), ((2, 3), 0.5, 1)):
        raw[0, 4, y, x], raw[0, 5 + cls, y, x] = obj, 20.0

    def boxes(**eval_overrides) -> list[list[float]]:
        eval_cfg = load_config("shapes.yaml", [f"eval.{k}={v}" for k, v in eval_overrides.items()]).eval
        (out,) = detect([raw], spec, eval_cfg)
        return out[:, [0, 1, 2, 3, 5]].tolist()

    first, second, apart, below = [24.0, 24, 56, 56, 0], [40.0, 24, 72, 56, 0], [88.0, 88, 120, 120, 1], [24.0, 40, 56, 72, 1]
    assert boxes(nms_iou=0.5, conf_thres=0.01) == [first, second, apart, below]  # 1/3 < 0.5: all kept
    assert boxes(nms_iou=0.3, conf_thres=0.01) == [first, apart, below]  # 1/3 > 0.3: second suppressed, per class
    assert boxes(nms_iou=0.3, conf_thres=0.01, agnostic_nms="true") == [first, apart]  # across classes: below too
    assert boxes(nms_iou=0.5, conf_thres=0.8) == [first, second]  # 0.731 and 0.622 under 0.8
    assert boxes(nms_iou=0.5, conf_thres=0.01, max_det=2) == [first, second]


def test_decode_predictions_against_the_darknet_formula_by_hand() -> None:
    # yolo_layer.c, get_yolo_box: x = (i + sigmoid(tx) * s - (s - 1) / 2) / W (in input pixels: times the stride),
    # w = exp(tw) * anchor_w; written here cell by cell, with scale_x_y 1.2 / 1.1 so that its term counts
    spec = LevelSpec(tuple(ANCHORS), ((1, 2, 3), (3, 4, 5)), (16, 32), (1.2, 1.1))
    torch.manual_seed(0)
    maps = [torch.randn(2, 3 * 9, 8, 8), torch.randn(2, 3 * 9, 4, 4)]
    pred = decode_predictions(maps, spec)
    assert pred.shape == (2, 3 * 64 + 3 * 16, 9)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    row = 0
    for raw, mask, stride, s in zip(maps, spec.anchor_masks, spec.strides, spec.scale_x_y, strict=True):
        h, w = raw.shape[2:]
        for a, anchor in enumerate(mask):  # rows are ordered anchor, then cell row, then cell column
            for gy in range(h):
                for gx in range(w):
                    for b in range(2):
                        tx, ty, tw, th, obj, *cls = raw[b, a * 9:(a + 1) * 9, gy, gx].tolist()
                        cx = (gx + sig(tx) * s - (s - 1) / 2) * stride
                        cy = (gy + sig(ty) * s - (s - 1) / 2) * stride
                        bw, bh = math.exp(tw) * ANCHORS[anchor][0], math.exp(th) * ANCHORS[anchor][1]
                        want = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, sig(obj), *map(sig, cls)]
                        assert pred[b, row].tolist() == pytest.approx(want, rel=1e-5, abs=1e-4), (stride, a, gy, gx)
                    row += 1


def test_eval_cli_writes_coco_files_that_pycocotools_agrees_with(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from utils.config.files import read_classes
    from utils.data.splits import load_records
    from utils.data.synthetic import ensure_shapes

    cfg = load_config("shapes.yaml", [f"data.root={tmp_path / 'data'}", "shapes.num_train=4", "shapes.num_val=6",
                                      "shapes.num_test=0", "model.input_size=128"])
    classes = read_classes(cfg.data.classes_path)
    ensure_shapes(cfg, classes)
    truth = load_records(cfg.data, cfg.data.val_splits, classes)[0]
    # an untrained model finds nothing, and two zeros agree: the model is replaced by raw maps that decode onto the
    # ground truth moved by a few pixels, with the class wrong one time in four, plus false alarms of middling
    # objectness on random cells; eval.py's own decode, NMS and scoring run on them
    rng = np.random.default_rng(0)
    noisy = copy.deepcopy(truth)
    for r in noisy:
        shift, grow = rng.normal(0, 2.5, (len(r.boxes), 2)), rng.normal(0, 1.5, (len(r.boxes), 2))
        centre = np.clip((r.boxes[:, :2] + r.boxes[:, 2:]) / 2 + shift, 1, [r.width - 1, r.height - 1])
        half = np.maximum((r.boxes[:, 2:] - r.boxes[:, :2]) / 2 + grow, 1.0)
        r.boxes = np.concatenate([centre - half, centre + half], 1).astype(np.float32)
        r.labels = np.where(rng.random(len(r.labels)) < 0.25, rng.integers(0, 6, len(r.labels)), r.labels)
    maps = encode(noisy, 128, 6)
    for m in maps:
        view = m.view(len(noisy), 3, 11, *m.shape[2:])
        alarm = torch.from_numpy(rng.random(view[:, :, 4].shape) < 0.08)
        view[:, :, 4][alarm] = torch.from_numpy(rng.uniform(-3.0, 0.5, int(alarm.sum()))).float()
        view[:, :, 5][alarm] = 3.0  # class 0
    from utils.infer import evaluation

    real_load = evaluation.load_backend

    def replayed(*args, **kwargs):
        backend = real_load(*args, **kwargs)
        backend.model, backend.channels_last = Replay([m.clone() for m in maps]), False
        return backend

    monkeypatch.setattr(evaluation, "load_backend", replayed)
    model = build_model("yolov4-tiny", 6)
    ckpt = tmp_path / "best.pt"
    save_model(ckpt, ModelCard("yolov4-tiny", ["circle", "square", "triangle", "diamond", "cross", "ring"], ANCHORS, 128,
                               cfg.to_dict()), model.state_dict())
    out = tmp_path / "m.json"
    assert eval_cli.main(["--weights", str(ckpt), "--plots", "--json", str(out), "--save-dir", str(tmp_path / "runs")]) == 0
    text = capsys.readouterr().out
    assert "AP50-07" in text and "COCO-style" in text
    metrics = json.loads(out.read_text())
    assert len(metrics["per_class"]) == 6 and metrics["images"] == 6
    run = tmp_path / "runs" / "exp"
    for name in ("confusion_matrix.png", "PR_curve.png", "P_curve.png", "R_curve.png", "F1_curve.png", "labels.png",
                 "val_batch0_labels.jpg", "val_batch0_pred.jpg"):
        assert (run / name).stat().st_size > 10_000, name
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(run / "ground_truth.json"))
        dets = json.loads((run / "detections.json").read_text())
        assert len(dets) > 30
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert 0.05 < ev.stats[0] < 0.95  # neither 0 nor 1: misplaced boxes, wrong classes and false positives count
    assert metrics["map50_95"] == pytest.approx(ev.stats[0], abs=1e-6)
    monkeypatch.undo()
    # a second run gets its own folder
    assert eval_cli.main(["--weights", str(ckpt), "--save-dir", str(tmp_path / "runs")]) == 0
    assert (tmp_path / "runs" / "exp2" / "metrics.json").is_file()
    # --detections scores a results file without a model (another detector's): the first run's detections give its
    # metrics, with image ids as written (1..N) or as the images' file stems
    from utils.config.load import save_config

    save_config(cfg, tmp_path / "cfg.yaml")
    by_stem = [{**d, "image_id": Path(truth[d["image_id"] - 1].path).stem} for d in dets]
    (tmp_path / "by_stem.json").write_text(json.dumps(by_stem))
    for source in (run / "detections.json", tmp_path / "by_stem.json"):
        again = tmp_path / "again.json"
        assert eval_cli.main(["--detections", str(source), "--config", str(tmp_path / "cfg.yaml"), "--json", str(again),
                              "--save-dir", str(tmp_path / "runs")]) == 0
        scored = json.loads(again.read_text())
        for key in ("map50", "map50_07", "map50_95"):
            assert scored[key] == pytest.approx(metrics[key], abs=1e-9), (source, key)


def test_eval_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = ["--config", "shapes.yaml", f"data.root={tmp_path / 'data'}", "shapes.num_train=2", "shapes.num_val=2",
           "shapes.num_test=0"]
    bad = tmp_path / "bad.json"
    for content, message in (("[{\"image_id\": 9, \"category_id\": 1, \"bbox\": [0, 0, 5, 5], \"score\": 0.5}]",
                              "entry 0 names image 9, which is not in the split"),
                             ("[{\"image_id\": 1, \"category_id\": 7, \"bbox\": [0, 0, 5, 5], \"score\": 0.5}]",
                              "entry 0 has category_id 7; the classes are 1..6"),
                             ("{\"images\": []}", "not a COCO results list"),
                             ("[{\"image_id\": 1}]", "entry 0 is not a COCO result"),
                             ("not json", "bad.json: Expecting value")):
        bad.write_text(content)
        assert eval_cli.main(["--detections", str(bad), *cfg]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit):  # argparse: both or neither
        eval_cli.main(["--detections", str(bad), "--weights", "x.pt", *cfg])
    assert "one of the two" in capsys.readouterr().err

    assert eval_cli.main(["--weights", str(tmp_path / "none.pt")]) == 1
    assert capsys.readouterr().err == f"error: weights file not found: {tmp_path / 'none.pt'}\n"
    bare = tmp_path / "bare.pt"
    torch.save(build_model("yolov4-tiny", 2).state_dict(), bare)
    assert eval_cli.main(["--weights", str(bare)]) == 1
    assert f"error: {bare}: not a checkpoint written by train.py (no model_name, class_names" in capsys.readouterr().err
