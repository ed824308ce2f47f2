"""nets/darknet.py and nets/weights.py: .weights and .pt files in and out."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nets.darknet import PUBLISHED, DarknetWeightsError, conv_order, darknet_bytes, load_darknet, save_darknet
from nets.weights import WeightsError, load_weights
from nets.yolo import build_model
from tests.darknet_cfgs import TINY3L_CFG, TINY_CFG, YOLOV4_CFG, randomize_bn


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.05)
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.1)
    randomize_bn(model, seed)
    return model.eval()


def assert_same_weights(a: nn.Module, b: nn.Module, names: list[str] | None = None) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if "num_batches_tracked" not in k]
    if names is not None:
        keys = [k for k in keys if any(k.startswith(n + ".") for n in names)]
    assert keys
    for k in keys:
        assert torch.equal(sa[k], sb[k]), k


def darknet_forward(tokens: list[str], model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Run the cfg's layer list the way Darknet does, taking conv weights in file order.

    Independent of our module wiring: routes, shortcuts and pools follow the cfg tokens.
    Returns the inputs of the [yolo] layers, in cfg order.
    """
    layers = iter(conv_order(model))
    outs: list[torch.Tensor] = []
    yolo = []
    for i, tok in enumerate(tokens):
        prev = outs[-1] if outs else x
        if tok.startswith("c") or tok == "h":
            layer = next(layers)
            conv = layer.conv
            y = F.conv2d(prev, conv.weight, conv.bias, conv.stride, conv.kernel_size[0] // 2)
            if tok != "h":
                bn = layer.bn
                y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, 1e-5)
                y = F.leaky_relu(y, 0.1) if tok.endswith("L") else F.mish(y)
        elif tok == "rh":
            y = prev[:, prev.shape[1] // 2:]
        elif tok.startswith("r"):
            y = torch.cat([outs[int(j) if int(j) >= 0 else i + int(j)] for j in tok[1:].split(",")], 1)
        elif tok == "s":
            y = prev + outs[i - 3]
        elif tok.startswith("m"):
            k = int(tok[1:])
            y = F.max_pool2d(prev, k, 1, k // 2)
        elif tok == "M":
            y = F.max_pool2d(prev, 2, 2)
        elif tok == "u":
            y = F.interpolate(prev, scale_factor=2.0, mode="nearest")
        elif tok == "y":
            yolo.append(prev)
            y = prev
        else:
            raise AssertionError(tok)
        outs.append(y)
    assert next(layers, None) is None  # every conv used exactly once
    return yolo


@pytest.mark.parametrize(("name", "tokens"), [("yolov4", YOLOV4_CFG), ("yolov4-tiny", TINY_CFG),
                                             ("yolov4-tiny-3l", TINY3L_CFG)])
def test_model_computes_what_darknet_computes(name: str, tokens: list[str]) -> None:
    # With weights taken in .weights order, Darknet's graph and ours give the same maps:
    # the conv order and the wiring (routes, halves, shortcuts, SPP order) are exact.
    model = randomize(build_model(name, 7))
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ref = darknet_forward(tokens, model, x)
        ours = model(x)
    ref = sorted(ref, key=lambda t: -t.shape[-1])  # by stride ascending (tiny lists stride 32 first)
    assert len(ref) == len(ours)
    for r, o in zip(ref, ours, strict=True):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_yolov4_round_trip_and_file_size(tmp_path: Path) -> None:
    model = randomize(build_model("yolov4", 80))
    path = save_darknet(model, tmp_path / "yolov4.weights", seen=32_032_000)
    # 20-byte header + 64,429,405 floats, the size of Darknet's yolov4.weights
    assert path.stat().st_size == 257_717_640
    again = build_model("yolov4", 80)
    report = load_darknet(again, path)
    assert report.version == (0, 2, 5) and report.seen == 32_032_000
    assert len(report.loaded) == 110 and not report.skipped and not report.missing
    assert_same_weights(model, again)
    save_darknet(again, tmp_path / "again.weights", seen=32_032_000)
    assert (tmp_path / "again.weights").read_bytes() == path.read_bytes()


def test_tiny_file_size_and_header(tmp_path: Path) -> None:
    model = randomize(build_model("yolov4-tiny", 80))
    path = save_darknet(model, tmp_path / "tiny.weights")
    assert path.stat().st_size == 24_251_276  # 20 + 4 * 6,062,814, as Darknet's yolov4-tiny.weights
    head = np.fromfile(path, dtype=np.int32, count=3)
    assert head.tolist() == [0, 2, 5]
    # the first floats are the first conv's BN beta, gamma, mean, var, then its weights
    floats = np.fromfile(path, dtype=np.float32, offset=20, count=4 * 32 + 32 * 3 * 3 * 3)
    first = model.backbone.stem[0]
    np.testing.assert_array_equal(floats[:32], first.bn.bias.detach().numpy())
    np.testing.assert_array_equal(floats[32:64], first.bn.weight.detach().numpy())
    np.testing.assert_array_equal(floats[64:96], first.bn.running_mean.numpy())
    np.testing.assert_array_equal(floats[96:128], first.bn.running_var.numpy())
    np.testing.assert_array_equal(floats[128:], first.conv.weight.detach().numpy().ravel())


def test_old_header_with_32_bit_seen(tmp_path: Path) -> None:
    model = randomize(build_model("yolov4-tiny", 2))
    path = save_darknet(model, tmp_path / "new.weights", seen=7)
    body = path.read_bytes()[20:]
    old = tmp_path / "old.weights"  # version 0.1.0: seen is a uint32, header of 16 bytes
    old.write_bytes(np.array([0, 1, 0], np.int32).tobytes() + np.array([7], np.uint32).tobytes() + body)
    again = build_model("yolov4-tiny", 2)
    report = load_darknet(again, old)
    assert report.version == (0, 1, 0) and report.seen == 7
    assert_same_weights(model, again)


def test_backbone_only_file_like_conv_137(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # yolov4.conv.137 holds cfg layers 0..136: the first 92 convs (backbone, SPP, top-down path).
    model = randomize(build_model("yolov4", 80))
    full = save_darknet(model, tmp_path / "full.weights")
    layers = conv_order(model)
    keep = sum(layer.numel() for layer in layers[:92])
    partial = tmp_path / "yolov4.conv.137"
    partial.write_bytes(full.read_bytes()[: 20 + 4 * keep])
    assert partial.stat().st_size == 170_038_676  # the size of Darknet's yolov4.conv.137
    fresh = build_model("yolov4", 20)
    before = fresh.neck.out3.conv.weight.clone()
    with caplog.at_level(logging.INFO):
        report = load_darknet(fresh, partial)
    assert len(report.loaded) == 92 and report.missing[0] == "neck.out3" and len(report.missing) == 18
    assert "ends after conv layer 92" in caplog.text
    assert_same_weights(model, fresh, ["backbone", "neck.spp_pre", "neck.td3"])
    assert torch.equal(fresh.neck.out3.conv.weight, before)  # left at its initialisation


def test_full_file_for_another_class_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = randomize(build_model("yolov4-tiny", 80))
    path = save_darknet(model, tmp_path / "coco.weights")
    voc = build_model("yolov4-tiny", 20)
    head_before = [c.weight.clone() for c in voc.head.convs]
    with caplog.at_level(logging.WARNING):
        report = load_darknet(voc, path)
    assert report.file_classes == 80
    assert sorted(report.skipped) == ["head.convs.0", "head.convs.1"]
    assert len(report.loaded) == 19
    assert "made for 80 classes, the model has 20" in caplog.text
    assert_same_weights(model, voc, ["backbone", "neck"])
    for c, b in zip(voc.head.convs, head_before, strict=True):
        assert torch.equal(c.weight, b)


def test_wrong_length_is_a_clear_error(tmp_path: Path) -> None:
    model = randomize(build_model("yolov4-tiny", 80))
    path = save_darknet(model, tmp_path / "x.weights")
    cut = tmp_path / "cut.weights"
    cut.write_bytes(path.read_bytes()[:-40])  # ends in the middle of the last layer
    with pytest.raises(DarknetWeightsError, match=r"expected 6,062,814 floats after the 20-byte header .* found 6,062,804"):
        load_darknet(build_model("yolov4-tiny", 80), cut)
    # a yolov4-tiny file is not a yolov4 file
    with pytest.raises(DarknetWeightsError, match="expected 64,429,405 floats"):
        load_darknet(build_model("yolov4", 80), path)


def test_fused_model_cannot_be_written(tmp_path: Path) -> None:
    with pytest.raises(DarknetWeightsError, match="fused"):
        save_darknet(build_model("yolov4-tiny", 3).eval().fuse(), tmp_path / "f.weights")


# ---------------------------------------------------------------- load_weights: .pt and dispatch


def test_load_weights_pt_with_other_class_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = randomize(build_model("yolov4-tiny", 80))
    path = tmp_path / "last.pt"
    torch.save({"model": src.state_dict(), "epoch": 3, "class_names": ["a"] * 80}, path)
    dst = build_model("yolov4-tiny", 20)
    with caplog.at_level(logging.WARNING):
        skipped = load_weights(dst, path)
    assert skipped == ["head.convs.0.bias", "head.convs.0.weight", "head.convs.1.bias", "head.convs.1.weight"]
    assert "skipped 4 entries" in caplog.text and "head.convs.0.weight" in caplog.text
    assert_same_weights(src, dst, ["backbone", "neck"])


def test_load_weights_prefers_ema_and_accepts_plain_state_dict(tmp_path: Path) -> None:
    a, b = randomize(build_model("yolov4-tiny", 3), 1), randomize(build_model("yolov4-tiny", 3), 2)
    torch.save({"model": a.state_dict(), "ema": b.state_dict()}, tmp_path / "ck.pt")
    dst = build_model("yolov4-tiny", 3)
    assert load_weights(dst, tmp_path / "ck.pt") == []
    assert_same_weights(b, dst)
    torch.save(a.state_dict(), tmp_path / "sd.pt")
    load_weights(dst, tmp_path / "sd.pt")
    assert_same_weights(a, dst)


def test_load_weights_dispatches_darknet(tmp_path: Path) -> None:
    src = randomize(build_model("yolov4-tiny", 3))
    path = save_darknet(src, tmp_path / "my.weights")
    dst = build_model("yolov4-tiny", 3)
    assert load_weights(dst, path) == []
    assert_same_weights(src, dst)


def test_load_weights_rejects_other_files(tmp_path: Path) -> None:
    model = build_model("yolov4-tiny", 3)
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    with pytest.raises(WeightsError, match="neither a PyTorch checkpoint"):
        load_weights(model, text)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(model, tmp_path / "missing.pt")
    obj = tmp_path / "obj.pt"
    torch.save({"model": {"x": torch.zeros(2)}, "hook": nn.ReLU()}, obj)  # a module inside: refused
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        load_weights(model, obj)
    other = tmp_path / "other.pt"
    torch.save({"model": {"x": torch.zeros(2)}}, other)
    with pytest.raises(WeightsError, match="no entry matches"):
        load_weights(model, other)


def test_the_published_backbone_size_is_its_layers(tmp_path: Path) -> None:
    # 20-byte header + float32 of the first 92 convs, whatever the class count (the output convs come later)
    conv137 = PUBLISHED["yolov4.conv.137"]
    for classes in (20, 80):
        model = build_model("yolov4", classes)
        assert darknet_bytes(model, conv137.conv_layers) == conv137.size == 170_038_676
        assert 20 + 4 * sum(layer.numel() for layer in conv_order(model)[:92]) == conv137.size
    cut = tmp_path / "yolov4.conv.137"  # a download cut short
    cut.write_bytes(np.array([0, 2, 5], np.int32).tobytes() + bytes(8) + bytes(4 * 1000))
    with pytest.raises(DarknetWeightsError, match="4,020 bytes, but yolov4.conv.137 has 170,038,676"):
        load_darknet(build_model("yolov4", 20), cut)
