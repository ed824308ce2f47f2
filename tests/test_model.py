"""nets/: exactness to Darknet's yolov4.cfg / yolov4-tiny.cfg, shapes, FLOPs, fusion, priors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nets.common import ConvBNAct
from nets.darknet import conv_order
from nets.yolo import build_model, count_parameters, model_summary
from tests.darknet_cfgs import TINY3L_CFG, TINY_CFG, YOLOV4_CFG, randomize_bn


def cfg_convs(tokens: list[str], head_filters: int) -> list[tuple[int, int, int, int, bool, str]]:
    """(in, out, kernel, stride, has BN, activation) of every conv, channels followed through routes."""
    channels: list[int] = []
    convs = []
    for i, tok in enumerate(tokens):
        c_prev = channels[-1] if channels else 3
        if tok.startswith("c"):
            filters, rest = tok[1:].split("_")
            k = int(rest.split("/")[0].rstrip("L"))
            convs.append((c_prev, int(filters), k, 2 if "/2" in tok else 1, True, "leaky" if tok.endswith("L") else "mish"))
            channels.append(int(filters))
        elif tok == "h":
            convs.append((c_prev, head_filters, 1, 1, False, "linear"))
            channels.append(head_filters)
        elif tok == "rh":
            channels.append(c_prev // 2)
        elif tok.startswith("r"):
            idx = [int(v) for v in tok[1:].split(",")]
            channels.append(sum(channels[j if j >= 0 else i + j] for j in idx))
        else:  # s, m, M, u, y keep the channel count
            channels.append(c_prev)
    return convs


def model_convs(model: nn.Module) -> list[tuple[int, int, int, int, bool, str]]:
    out = []
    for layer in conv_order(model):
        c = layer.conv
        act = "linear"
        if not layer.is_head:
            block = next(m for m in model.modules() if isinstance(m, ConvBNAct) and m.conv is c)
            act = {nn.Mish: "mish", nn.LeakyReLU: "leaky"}[type(block.act)]
        out.append((c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], layer.bn is not None, act))
    return out


@pytest.fixture(scope="module")
def yolov4_80() -> nn.Module:
    return build_model("yolov4", 80)


@pytest.fixture(scope="module")
def tiny_80() -> nn.Module:
    return build_model("yolov4-tiny", 80)


def test_yolov4_conv_sequence_matches_cfg(yolov4_80: nn.Module) -> None:
    expected = cfg_convs(YOLOV4_CFG, 255)
    assert len(YOLOV4_CFG) == 162  # layers 0..161 of yolov4.cfg
    assert len(expected) == 110
    assert model_convs(yolov4_80) == expected


def test_tiny_conv_sequence_matches_cfg(tiny_80: nn.Module) -> None:
    expected = cfg_convs(TINY_CFG, 255)
    assert len(TINY_CFG) == 38
    assert len(expected) == 21
    assert model_convs(tiny_80) == expected


def test_tiny3l_conv_sequence_matches_cfg() -> None:
    expected = cfg_convs(TINY3L_CFG, 255)
    assert len(TINY3L_CFG) == 45  # layers 0..44 of yolov4-tiny-3l.cfg
    assert len(expected) == 24
    assert model_convs(build_model("yolov4-tiny-3l", 80)) == expected


def test_parameter_counts_match_darknet(yolov4_80: nn.Module, tiny_80: nn.Module) -> None:
    # Darknet's counts for yolov4.cfg and yolov4-tiny.cfg with 80 classes.
    assert count_parameters(yolov4_80) == 64_363_101
    assert count_parameters(tiny_80) == 6_056_606
    # tiny-3l adds, by hand: 1x1 256->64 with BN (16,384 + 128), 3x3 192->128 with BN (221,184 + 256),
    # and an output conv 128->255 with bias (32,640 + 255)
    assert count_parameters(build_model("yolov4-tiny-3l", 80)) == 6_056_606 + 16_512 + 221_440 + 32_895


@pytest.mark.parametrize(("name", "size", "darknet_bflops"), [
    ("yolov4", 416, 60.1), ("yolov4", 608, 128.4), ("yolov4-tiny", 416, 6.9)])
def test_gflops_match_darknet(name: str, size: int, darknet_bflops: float, yolov4_80: nn.Module,
                              tiny_80: nn.Module) -> None:
    model = yolov4_80 if name == "yolov4" else tiny_80
    summary = model_summary(model, size)
    assert summary["gflops"] == pytest.approx(darknet_bflops, rel=0.01)


def test_gflops_by_hand_for_one_conv() -> None:
    # 3x3 conv, 3 -> 32 channels at 416x416, stride 1: 2 * 3*3*3 * 32 * 416*416 FLOPs.
    from torch.utils.flop_counter import FlopCounterMode

    conv = ConvBNAct(3, 32, 3).eval()
    with FlopCounterMode(display=False) as counter:
        conv(torch.zeros(1, 3, 416, 416))
    assert counter.get_total_flops() == 2 * 27 * 32 * 416 * 416


@pytest.mark.parametrize(("name", "strides"), [("yolov4", (8, 16, 32)), ("yolov4-tiny", (16, 32)),
                                               ("yolov4-tiny-3l", (8, 16, 32))])
def test_output_shapes(name: str, strides: tuple[int, ...]) -> None:
    num_classes = 20
    model = build_model(name, num_classes).eval()
    with torch.no_grad():
        for size in (416, 320) if name.startswith("yolov4-tiny") else (416,):
            outs = model(torch.zeros(2, 3, size, size))
            assert [tuple(o.shape) for o in outs] == [(2, 3 * (5 + num_classes), size // s, size // s) for s in strides]
        outs = model(torch.zeros(1, 3, 96, 160))  # any multiple of 32, not only square
        assert [tuple(o.shape[-2:]) for o in outs] == [(96 // s, 160 // s) for s in strides]
    assert model.strides == strides


def test_input_not_multiple_of_32_is_a_clear_error() -> None:
    model = build_model("yolov4-tiny", 3)
    with pytest.raises(ValueError, match="multiples of 32, got 100x96"):
        model(torch.zeros(1, 3, 100, 96))


def test_build_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model 'yolov5'"):
        build_model("yolov5", 80)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("yolov4-tiny", 0)


def test_head_bias_starts_at_priors() -> None:
    model = build_model("yolov4-tiny", 4, obj_prior=0.01)
    for conv in model.head.convs:
        b = conv.bias.view(3, 9)
        torch.testing.assert_close(torch.sigmoid(b[:, 4]), torch.full((3,), 0.01))
        torch.testing.assert_close(torch.sigmoid(b[:, 5:]), torch.full((3, 4), 1 / 5))  # 1 / (C + 1)
        assert torch.all(b[:, :4] == 0)
    model = build_model("yolov4-tiny", 4, obj_prior=0.05, cls_prior=0.3)
    b = model.head.convs[0].bias.view(3, 9)
    assert b[0, 4].item() == pytest.approx(math.log(0.05 / 0.95))
    assert b[0, 5].item() == pytest.approx(math.log(0.3 / 0.7))
    # at start the objectness of a zero image is close to the prior everywhere
    with torch.no_grad():
        out = model.eval()(torch.rand(1, 3, 64, 64))[0].view(1, 3, 9, 4, 4)
    assert torch.sigmoid(out[:, :, 4]).mean().item() == pytest.approx(0.05, abs=0.02)




@pytest.mark.parametrize("name", ["yolov4", "yolov4-tiny", "yolov4-tiny-3l"])
def test_fused_matches_unfused(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 20).eval()
    randomize_bn(model)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        ref = model(x)
        fused = model.fuse()
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        got = fused(x)
        got_cl = fused.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    for r, g, c in zip(ref, got, got_cl, strict=True):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(c, r, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_bench_model_runs_and_reports(tmp_path) -> None:
    # A smoke run at a tiny input: the JSON has the fields the README quotes (no timing asserts).
    import json

    from bench.bench_model import main

    out = tmp_path / "b.json"
    result = main(["--size", "64", "--runs", "1", "--models", "yolov4-tiny", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    (m,) = result["models"]
    assert m["params"] == 6_056_606
    assert m["gflops"] == pytest.approx(6.908 * (64 / 416) ** 2, rel=0.01)
    assert m["forward_ms_median"] > 0 and max(result["matmul_gflops_per_s"].values()) > 0
