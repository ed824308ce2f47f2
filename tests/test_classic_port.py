"""A state_dict of the classic PyTorch port (bubbliiiing/yolov4-pytorch's YoloBody) loads into build_model("yolov4")
and computes the same maps: checked against that project's own model code in ../shared/reference (MIT licence)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torchvision.ops import batched_nms

from nets.box_coding import LevelSpec
from nets.weights import load_weights
from nets.yolo import build_model
from utils.infer.backend import load_model
from utils.infer.postprocess import detect

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "bubbliiiing-yolov4" / "nets"
pytestmark = pytest.mark.skipif(not (REFERENCE / "yolo.py").is_file(),
                                reason=f"the classic port's model code is not at {REFERENCE}")


def reference_body(num_classes: int, monkeypatch: pytest.MonkeyPatch):
    """That project's YoloBody, its modules loaded under other names (its package is also called nets)."""
    def load(name: str, file: str):
        spec = importlib.util.spec_from_file_location(name, REFERENCE / file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    monkeypatch.setitem(sys.modules, "nets.CSPdarknet", load("classic_cspdarknet", "CSPdarknet.py"))
    yolo = load("classic_yolo", "yolo.py")
    return yolo.YoloBody([[6, 7, 8], [3, 4, 5], [0, 1, 2]], num_classes)


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # BN statistics away from 0 / 1, so that a swap shows
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.slow
def test_their_state_dict_loads_and_gives_the_same_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    theirs = randomized(reference_body(20, monkeypatch))
    path = tmp_path / "yolo4_voc_weights.pth"
    torch.save(theirs.state_dict(), path)
    ours = build_model("yolov4", 20).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    skipped = load_weights(ours, path)
    assert skipped == []
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out0, out1, out2 = theirs(x)  # strides 32, 16, 8
        mine = ours(x)  # strides 8, 16, 32
    for a, b in zip(mine, (out2, out1, out0), strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # eval.py and predict.py take it with --config (VOC's 20 classes; that port decodes without scale_x_y)
    model, cfg, classes, _ = load_model(path, "voc.yaml", ["model.scale_x_y=[1.0,1.0,1.0]"])
    assert len(classes) == 20 and cfg.model.scale_x_y == [1.0, 1.0, 1.0]
    with torch.no_grad():
        torch.testing.assert_close(model(x)[2], out0, atol=1e-5, rtol=1e-4)


def test_another_class_count_skips_only_the_output_convs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = reference_body(80, monkeypatch)  # yolo4_weights.pth: COCO
    path = tmp_path / "yolo4_weights.pth"
    torch.save(theirs.state_dict(), path)
    ours = build_model("yolov4", 3)
    skipped = load_weights(ours, path)
    assert sorted(skipped) == [f"head.convs.{i}.{k}" for i in range(3) for k in ("bias", "weight")]


def their_detections(outputs, anchors, masks, size: int, num_classes: int, conf: float, nms_iou: float):
    """That port's decoding, written here from its conventions: per head (stride 32, 16, 8 with anchor masks
    6-8, 3-5, 0-2) x = (sigmoid(tx) + grid x) * stride (no scale_x_y), w = exp(tw) * anchor w; score =
    objectness x the best class probability; class-wise NMS."""
    boxes, scores, classes = [], [], []
    for out, mask in zip(outputs, masks, strict=True):
        b, _, h, w = out.shape
        stride = size / h
        p = out.view(b, len(mask), 5 + num_classes, h, w).permute(0, 1, 3, 4, 2)[0]  # [A, H, W, 5 + C]
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        aw = torch.tensor([anchors[i][0] for i in mask]).view(-1, 1, 1)
        ah = torch.tensor([anchors[i][1] for i in mask]).view(-1, 1, 1)
        cx, cy = (p[..., 0].sigmoid() + gx) * stride, (p[..., 1].sigmoid() + gy) * stride
        bw, bh = p[..., 2].exp() * aw, p[..., 3].exp() * ah
        prob, cls = p[..., 5:].sigmoid().max(-1)
        boxes.append(torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), -1).reshape(-1, 4))
        scores.append((p[..., 4].sigmoid() * prob).reshape(-1))
        classes.append(cls.reshape(-1))
    boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
    keep = scores > conf
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    idx = batched_nms(boxes, scores, classes, nms_iou)
    return boxes[idx], scores[idx], classes[idx]


def test_same_detections_as_that_ports_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    theirs = randomized(reference_body(20, monkeypatch))
    path = tmp_path / "yolo4_voc_weights.pth"
    torch.save(theirs.state_dict(), path)
    model, cfg, _, anchors = load_model(path, "voc.yaml", ["model.scale_x_y=[1.0,1.0,1.0]", "eval.conf_thres=0.2",
                                                          "eval.nms_iou=0.45", "eval.max_det=10000"])
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref_boxes, ref_scores, ref_cls = their_detections(theirs(x), anchors, [[6, 7, 8], [3, 4, 5], [0, 1, 2]], 160, 20,
                                                          0.2, 0.45)
        mine = detect(model(x), LevelSpec.for_model(model, anchors, cfg.model.scale_x_y), cfg.eval)[0]
    assert len(ref_boxes) > 5 and len(mine) == len(ref_boxes)
    # the same detections in the same score order, up to near-equal scores (a random model gives some 1e-7 apart,
    # which the two sides' rounding may order either way): each of mine is paired with the nearest of theirs
    ref = torch.cat([ref_boxes, ref_scores[:, None], ref_cls[:, None].float()], 1)
    pair = torch.cdist(mine, ref).argmin(1)
    assert sorted(pair.tolist()) == list(range(len(ref)))  # one to one
    torch.testing.assert_close(mine[:, :4], ref_boxes[pair], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(mine[:, 4], ref_scores[pair], atol=1e-5, rtol=1e-4)
    assert mine[:, 5].long().tolist() == ref_cls[pair].tolist()
    assert (mine[:, 4].diff() <= 0).all()  # highest score first, as the reference's argsort
