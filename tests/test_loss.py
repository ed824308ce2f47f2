"""nets/loss.py: the terms against references and hand values (the assignment: tests/test_assign.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, complete_box_iou, sigmoid_focal_loss

from nets.box_coding import decode_boxes, to_per_anchor
from nets.loss import YOLOLoss
from nets.yolo import build_model
from tests.loss_cases import ANCHORS, TINY, V4, make_loss, random_maps, random_targets

# ---------------------------------------------------------------- terms against references


def kept_and_logits(loss: YOLOLoss, maps, targets):
    got = loss.assigner(maps, targets)
    out = []
    for m, tg in zip(maps, got.levels, strict=True):
        logits = to_per_anchor(m, loss.num_anchors)[..., 4]
        out.append((logits, tg.obj_mask, tg.obj_mask | ~tg.ignore_mask))
    return out, got


@pytest.mark.parametrize("normalize", ["mean", "num_pos"])
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.5, 1.0), (0.75, 0.5)])
def test_focal_conf_equals_torchvision_sigmoid_focal_loss(normalize: str, alpha: float, gamma: float) -> None:
    kw = {"box_weight": 0.0, "cls_weight": 0.0, "focal_loss": True, "focal_alpha": alpha, "focal_gamma": gamma,
          "focal_loss_ratio": 10.0, "focal_normalize": normalize, "ignore_thresh": 0.4}
    loss = make_loss(4, 128, **kw)
    targets = random_targets(2, 6, 128, 4, 7)
    maps = [m.requires_grad_() for m in random_maps(loss, 2, 128, 7)]
    ref_maps = [m.detach().clone().requires_grad_() for m in maps]
    total, terms = loss(maps, targets)

    levels, got = kept_and_logits(loss, ref_maps, targets)
    num_pos = got.stats["num_pos"].clamp(min=1)
    ref = 0.0
    for i, (logits, obj, kept) in enumerate(levels):
        if normalize == "mean":
            fl = sigmoid_focal_loss(logits[kept], obj[kept].float(), alpha, gamma, reduction="mean")
        else:
            fl = sigmoid_focal_loss(logits[kept], obj[kept].float(), alpha, gamma, reduction="sum") / num_pos
        ref = ref + fl * 10.0 * loss.balance[i] * loss.obj_weight
    torch.testing.assert_close(total, ref)
    torch.testing.assert_close(terms["conf"], ref.detach())
    total.backward()
    ref.backward()
    for m, r in zip(maps, ref_maps, strict=True):
        torch.testing.assert_close(m.grad, r.grad)


def test_classic_focal_conf_is_the_documents_expression() -> None:
    # the YoloV4 focal write-up's lines, typed here from probabilities in float64:
    #   ratio = where(obj_mask, alpha, 1 - alpha) * where(obj_mask, 1 - conf, conf) ** gamma
    #   loss_conf = mean((BCE(conf, obj_mask) * ratio)[noobj_mask | obj_mask]) * focal_loss_ratio
    alpha, gamma = 0.25, 2.0
    loss = make_loss(4, 128, box_weight=0.0, cls_weight=0.0, focal_loss=True, focal_alpha=alpha, focal_gamma=gamma,
                     focal_loss_ratio=10.0, ignore_thresh=0.4)
    targets = random_targets(2, 6, 128, 4, 11)
    maps = random_maps(loss, 2, 128, 11)
    _, terms = loss(maps, targets)
    levels, _ = kept_and_logits(loss, maps, targets)
    ref = 0.0
    for i, (logits, obj_mask, kept) in enumerate(levels):
        conf = torch.sigmoid(logits.double())
        t = obj_mask.double()
        bce = -(t * torch.log(conf) + (1 - t) * torch.log(1 - conf))
        ratio = torch.where(obj_mask, alpha, 1 - alpha) * torch.where(obj_mask, 1 - conf, conf) ** gamma
        ref += float(torch.mean((bce * ratio)[kept])) * 10.0 * loss.balance[i] * loss.obj_weight
    assert abs(float(terms["conf"]) - ref) < 1e-6 * max(1.0, ref)


def test_conf_term_on_extreme_logits_is_finite_and_equals_torchvision() -> None:
    # logits from -100 to 100 on positives and negatives: where sigmoid rounds to 0 or 1 the term and its
    # gradient stay finite and equal torchvision's sigmoid_focal_loss (and, focal off, the BCE) on the kept cells
    from nets.loss import LevelTargets

    logits = torch.cat((torch.linspace(-100, 100, 41), torch.randn(199, generator=torch.Generator().manual_seed(0)) * 4))
    logits = logits.view(1, 3, 8, 10)
    obj = (torch.arange(240) % 3 == 0).view(1, 3, 8, 10)
    ignore = (torch.arange(240) % 7 == 1).view(1, 3, 8, 10) & ~obj
    empty = torch.zeros(0, dtype=torch.long)
    tg = LevelTargets(obj, ignore, empty, empty, empty, empty, torch.zeros(0, 4), empty)
    kept = obj | ~ignore
    for focal in (True, False):
        loss = make_loss(4, 416, TINY, focal_loss=focal, focal_alpha=0.25, focal_gamma=2.0, focal_loss_ratio=1.0,
                         balance=[1.0, 1.0, 1.0])
        x, ref_x = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        got = loss.conf_term([x], [tg], torch.tensor(80.0))
        if focal:
            ref = sigmoid_focal_loss(ref_x[kept], obj[kept].float(), 0.25, 2.0, reduction="mean") * loss.obj_weight
        else:
            ref = F.binary_cross_entropy_with_logits(ref_x[kept], obj[kept].float()) * loss.obj_weight
        got.backward()
        ref.backward()
        assert torch.isfinite(got) and torch.isfinite(x.grad).all()
        torch.testing.assert_close(got, ref)
        torch.testing.assert_close(x.grad, ref_x.grad)


def test_varifocal_and_quality_focal_on_hand_computed_cells() -> None:
    from nets.loss import quality_focal_loss, varifocal_loss

    # a positive at logit 0 (p = 0.5) with IoU target q = 0.8: BCE(0.5, 0.8) = -(0.8 ln 0.5 + 0.2 ln 0.5) = ln 2;
    #   varifocal: q * ln 2 = 0.554518; quality (beta 2): |0.8 - 0.5|^2 ln 2 = 0.09 ln 2 = 0.062383
    # a negative at logit ln 3 (p = 0.75), q = 0: BCE = -ln 0.25 = ln 4 = 1.386294;
    #   varifocal (alpha 0.75, gamma 2): 0.75 * 0.75^2 * ln 4 = 0.584843; quality: 0.75^2 ln 4 = 0.779791
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)
    q = torch.tensor([0.8, 0.0], dtype=torch.float64)
    torch.testing.assert_close(varifocal_loss(logits, q, 0.75, 2.0),
                               torch.tensor([0.8 * math.log(2), 0.75 * 0.5625 * math.log(4)], dtype=torch.float64))
    torch.testing.assert_close(quality_focal_loss(logits, q, 2.0),
                               torch.tensor([0.09 * math.log(2), 0.5625 * math.log(4)], dtype=torch.float64))


def test_objectness_losses_pass_gradcheck() -> None:
    from nets.loss import LevelTargets, quality_focal_loss, varifocal_loss

    g = torch.Generator().manual_seed(3)
    x = (torch.randn(12, generator=g, dtype=torch.float64) * 2).requires_grad_()
    q = torch.where(torch.arange(12) % 3 == 0, torch.rand(12, generator=g, dtype=torch.float64) * 0.6 + 0.3, 0.0)
    assert torch.autograd.gradcheck(lambda v: varifocal_loss(v, q, 0.75, 2.0), (x,))
    assert torch.autograd.gradcheck(lambda v: quality_focal_loss(v, q, 2.0), (x,))
    # the whole conf term of each form on float64 logits (in training they are float32)
    obj = (torch.arange(12) % 3 == 0).view(1, 3, 2, 2)
    empty = torch.zeros(0, dtype=torch.long)
    tg = LevelTargets(obj, torch.zeros_like(obj), empty, empty, empty, empty, torch.zeros(0, 4), empty)
    for kw in ({}, {"focal_loss": True}, {"focal_loss": True, "focal_form": "varifocal"},
               {"focal_loss": True, "focal_form": "quality"}, {"obj_iou_target": 0.5}):
        loss = make_loss(4, 416, TINY, **kw)
        qmap = q.view(1, 3, 2, 2)
        assert torch.autograd.gradcheck(
            lambda v, loss=loss, qmap=qmap: loss.conf_term([v.view(1, 3, 2, 2)], [tg], torch.tensor(4.0, dtype=torch.float64),
                                                           [qmap]), (x,))


def positives_iou(loss: YOLOLoss, maps, got) -> list[torch.Tensor]:
    """Per level ``[B, A, H, W]``: each positive's IoU (torchvision) of its decoded box with its ground truth."""
    out = []
    for m, tg, stride, sxy in zip(maps, got.levels, loss.strides, loss.scale_x_y, strict=True):
        boxes = decode_boxes(to_per_anchor(m.detach(), loss.num_anchors), loss.assigner.level_anchors(len(out)), stride, sxy)
        q = torch.zeros(tg.obj_mask.shape)
        pred = boxes[tg.b, tg.a, tg.gy, tg.gx]
        q[tg.b, tg.a, tg.gy, tg.gx] = box_iou(pred, tg.boxes).diagonal().clamp(min=0) if len(pred) else q.new_zeros(0)
        out.append(q)
    return out


@pytest.mark.parametrize("form", ["varifocal", "quality", "iou_target"])
def test_iou_aware_conf_terms_equal_their_formulas(form: str) -> None:
    alpha, gamma, r = 0.75, 2.0, 0.7
    kw = {"box_weight": 0.0, "cls_weight": 0.0, "focal_alpha": alpha, "focal_gamma": gamma, "ignore_thresh": 0.4}
    kw.update({"obj_iou_target": r} if form == "iou_target" else {"focal_loss": True, "focal_form": form})
    loss = make_loss(4, 128, **kw)
    targets = random_targets(2, 6, 128, 4, 12)
    maps = random_maps(loss, 2, 128, 12, scale=0.5)
    _, terms = loss(maps, targets)
    levels, got = kept_and_logits(loss, maps, targets)
    quality = positives_iou(loss, maps, got)
    assert sum(float(q.sum()) for q in quality) > 0.5  # some positives overlap their boxes: q is not all zero
    num_pos = float(got.stats["num_pos"])
    ref = 0.0
    for i, ((logits, obj, kept), q) in enumerate(zip(levels, quality, strict=True)):
        p = logits.sigmoid()
        if form == "varifocal":  # VarifocalNet eq. 2, normalized by the sum of the positives' q
            vfl = -(q * torch.log(p) + (1 - q) * torch.log(1 - p)) * torch.where(q > 0, q, alpha * p**gamma)
            ref += float(vfl[kept].sum()) / max(sum(float(v.sum()) for v in quality), 1.0) * loss.balance[i]
        elif form == "quality":  # GFL eq. 5, beta = gamma, normalized by the number of positives
            qfl = (q - p).abs() ** gamma * -(q * torch.log(p) + (1 - q) * torch.log(1 - p))
            ref += float(qfl[kept].sum()) / num_pos * loss.balance[i]
        else:  # BCE against (1 - r) + r * IoU on positives, 0 on negatives; the mean over the kept cells
            t = torch.where(obj, (1 - r) + r * q, 0.0)
            ref += float(F.binary_cross_entropy(p[kept], t[kept])) * loss.balance[i]
    torch.testing.assert_close(float(terms["conf"]), ref * loss.obj_weight, rtol=1e-5, atol=1e-7)


def test_bce_conf_equals_masked_bce_by_hand() -> None:
    loss = make_loss(4, 128, box_weight=0.0, cls_weight=0.0, ignore_thresh=0.4)
    targets = random_targets(2, 6, 128, 4, 8)
    maps = random_maps(loss, 2, 128, 8)
    total, _ = loss(maps, targets)
    levels, _ = kept_and_logits(loss, maps, targets)
    ref = sum(F.binary_cross_entropy_with_logits(lg[k], o[k].float()) * loss.balance[i] * loss.obj_weight
              for i, (lg, o, k) in enumerate(levels))
    torch.testing.assert_close(total, ref)
    maps = [m.requires_grad_() for m in maps]
    ref_maps = [m.detach().clone().requires_grad_() for m in maps]
    loss(maps, targets)[0].backward()
    levels, _ = kept_and_logits(loss, ref_maps, targets)
    sum(F.binary_cross_entropy_with_logits(lg[k], o[k].float()) * loss.balance[i] * loss.obj_weight
        for i, (lg, o, k) in enumerate(levels)).backward()
    for m, r in zip(maps, ref_maps, strict=True):
        torch.testing.assert_close(m.grad, r.grad)


def test_gamma_zero_alpha_half_is_half_bce() -> None:
    common = {"box_weight": 0.0, "cls_weight": 0.0}
    bce = make_loss(4, 128, **common)
    focal = make_loss(4, 128, focal_loss=True, focal_gamma=0.0, focal_alpha=0.5, focal_loss_ratio=1.0, **common)
    targets = random_targets(2, 6, 128, 4, 9)
    maps = random_maps(loss=bce, batch=2, size=128, seed=9)
    _, t_bce = bce(maps, targets)
    _, t_focal = focal(maps, targets)
    torch.testing.assert_close(t_focal["conf"], 0.5 * t_bce["conf"])


def test_focal_off_is_the_bce_term_and_on_differs() -> None:
    targets = random_targets(2, 6, 128, 4, 2)
    maps = random_maps(make_loss(), 2, 128, 2)
    off = make_loss(4, 128, focal_loss=False)(maps, targets)[1]
    on = make_loss(4, 128, focal_loss=True)(maps, targets)[1]
    assert on["conf"] != off["conf"]
    torch.testing.assert_close(on["loc"], off["loc"])
    torch.testing.assert_close(on["cls"], off["cls"])


def test_empty_batch_gives_only_a_finite_conf_term() -> None:
    loss = make_loss(4, 128, focal_loss=True, focal_normalize="num_pos")
    maps = [m.requires_grad_() for m in random_maps(loss, 2, 128, 0)]
    total, terms = loss(maps, torch.zeros(0, 6))
    assert torch.isfinite(total) and terms["conf"] > 0
    assert terms["loc"] == 0 and terms["cls"] == 0
    total.backward()
    assert all(torch.isfinite(m.grad).all() for m in maps)
    assert terms["num_pos"] == 0


def test_loc_term_by_hand_with_exact_prediction() -> None:
    # logits that decode exactly onto the target give 1 - CIoU = 0
    loss = make_loss(4, 416, cls_weight=0.0, obj_weight=0.0)
    maps = random_maps(loss, 1, 416, 0, scale=0.0)
    # target 36x75 at centre (104, 56): level 1 (stride 16), anchor slot 0, cell (6, 3);
    # sigmoid(tx) = 104/16 - 6 = 0.5 -> tx = 0, sigmoid(ty) = 56/16 - 3 = 0.5 -> ty = 0; tw = th = 0
    t = torch.tensor([[0, 1, 104 - 18, 56 - 37.5, 104 + 18, 56 + 37.5]])
    _, terms = loss(maps, t)
    assert terms["loc"].item() == pytest.approx(0.0, abs=1e-6)
    maps[1][0, 2, 3, 6] = math.log(2.0)  # width twice the anchor: 72x75 vs 36x75 -> IoU 0.5, same centre
    _, terms = loss(maps, t)
    # CIoU = IoU - d^2/c^2 - alpha v with d = 0; v = 4/pi^2 (atan(36/75) - atan(72/75))^2
    v = 4 / math.pi**2 * (math.atan(36 / 75) - math.atan(72 / 75)) ** 2
    alpha = v / (1 - 0.5 + v)
    assert terms["loc"].item() == pytest.approx((1 - (0.5 - alpha * v)) * 0.05, rel=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_label_smoothing_changes_class_targets(eps: float) -> None:
    loss = make_loss(4, 416, box_weight=0.0, obj_weight=0.0, label_smoothing=eps)
    maps = random_maps(loss, 1, 416, 4)
    t = torch.tensor([[0, 2, 104 - 18, 56 - 37.5, 104 + 18, 56 + 37.5]])
    _, terms = loss(maps, t)
    logits = to_per_anchor(maps[1], 3)[0, 0, 3, 6, 5:]
    # targets: 1 - eps/2 for the true class, eps/2 for the others (0.95 and 0.025 at eps = 0.1)
    y = torch.full((4,), eps / 2)
    y[2] = 1 - eps / 2
    ref = F.binary_cross_entropy_with_logits(logits, y) * (4 / 80)
    torch.testing.assert_close(terms["cls"], ref)


def test_focal_cls_applies_focal_to_the_class_term() -> None:
    kw = {"box_weight": 0.0, "obj_weight": 0.0, "focal_cls": True, "focal_alpha": 0.25, "focal_gamma": 2.0}
    loss = make_loss(4, 416, **kw)
    maps = random_maps(loss, 1, 416, 4)
    t = torch.tensor([[0, 2, 104 - 18, 56 - 37.5, 104 + 18, 56 + 37.5]])
    _, terms = loss(maps, t)
    logits = to_per_anchor(maps[1], 3)[0, 0, 3, 6, 5:]
    ref = sigmoid_focal_loss(logits, F.one_hot(torch.tensor(2), 4).float(), 0.25, 2.0, reduction="mean") * (4 / 80)
    torch.testing.assert_close(terms["cls"], ref)


def test_weights_scale_with_input_area_and_classes() -> None:
    loss = make_loss(20, 608, obj_weight=5.0, cls_weight=1.0)
    assert loss.obj_weight == pytest.approx(5.0 * 608**2 / 416**2)
    assert loss.cls_weight == pytest.approx(20 / 80)
    tiny = make_loss(20, 416, TINY, balance=(4.0, 1.0, 0.4))
    assert tiny.balance == [1.0, 0.4]  # strides 16 and 32


def test_loss_under_autocast_is_float32() -> None:
    loss = make_loss(4, 128, focal_loss=True)
    maps = [m.to(torch.bfloat16) for m in random_maps(loss, 2, 128, 1)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, terms = loss(maps, random_targets(2, 4, 128, 4, 1))
    assert total.dtype == torch.float32 and torch.isfinite(total)


def test_map_gradients_keep_the_layout_and_dtype_of_the_maps() -> None:
    # channels_last maps (train.channels_last) give the NCHW total and gradients, and each map's
    # gradient comes back in its own memory format; bfloat16 maps (train.amp=bf16) get bfloat16 gradients
    loss = make_loss(4, 128, focal_loss=True)
    targets = random_targets(2, 4, 128, 4, 3)
    nchw = [m.requires_grad_() for m in random_maps(loss, 2, 128, 3)]
    cl = [m.detach().contiguous(memory_format=torch.channels_last).requires_grad_() for m in nchw]
    ref, _ = loss(nchw, targets)
    got, _ = loss(cl, targets)
    ref.backward()
    got.backward()
    torch.testing.assert_close(got, ref)
    for a, b in zip(cl, nchw, strict=True):
        assert a.grad.is_contiguous(memory_format=torch.channels_last) and not a.grad.is_contiguous()
        torch.testing.assert_close(a.grad, b.grad)
        assert (b.grad != 0).any()
    half = [m.detach().to(torch.bfloat16).requires_grad_() for m in nchw]
    loss(half, targets)[0].backward()
    assert all(m.grad.dtype == torch.bfloat16 and torch.isfinite(m.grad.float()).all() for m in half)


def test_from_config_builds_the_configured_loss() -> None:
    from utils.config.load import load_config

    cfg = load_config("voc.yaml", ["loss.focal_gamma=1.5", "loss.label_smoothing=0.05", "loss.iou_type=giou"])
    loss = YOLOLoss.from_config(cfg, 20, ANCHORS, (8, 16, 32), V4["anchor_masks"])
    assert (loss.objectness.name, loss.objectness.gamma, loss.label_smoothing, loss.iou_type) == ("classic", 1.5, 0.05, "giou")


@pytest.mark.slow
def test_small_model_overfits_two_images() -> None:
    # yolov4-tiny at 64 px on a 2-image batch: the total loss falls by over 90%
    # (last 5 steps' mean against the first step).
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", 3)
    loss = make_loss(3, 64, TINY, focal_loss=True)
    images = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 0, 5.0, 6, 30, 35], [0, 2, 35, 20, 60, 50], [1, 1, 15, 15, 45, 55]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(60):
        total, _ = loss(model(images), targets)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    assert sum(history[-5:]) / 5 < 0.1 * history[0], history


@pytest.mark.parametrize("seed", [0, 1])
def test_loc_and_cls_terms_equal_a_plain_loop_over_the_positives(seed: int) -> None:
    # per level the mean over its positives of (1 - CIoU) and of the mean class BCE, summed over the levels; each
    # positive's box decoded cell by cell with Darknet's formula (scale_x_y 1.2 / 1.1 / 1.05, so that its term counts)
    sxy = (1.2, 1.1, 1.05)
    loss = make_loss(4, 128, scale_x_y=sxy, label_smoothing=0.1)
    maps = random_maps(loss, 2, 128, seed, scale=0.5)
    targets = random_targets(2, 5, 128, 4, seed)
    _, terms = loss(maps, targets)
    got = loss.assigner(maps, targets)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    loc_ref, cls_ref, counts = 0.0, 0.0, []
    for lvl, tg in enumerate(got.levels):
        if not len(tg.b):
            continue
        counts.append(len(tg.b))
        p = to_per_anchor(maps[lvl], 3)  # [B, A, H, W, 5 + C]
        stride, s = loss.strides[lvl], sxy[lvl]
        loc_l, cls_l = 0.0, 0.0
        for i in range(len(tg.b)):
            b, a, gy, gx = int(tg.b[i]), int(tg.a[i]), int(tg.gy[i]), int(tg.gx[i])
            tx, ty, tw, th = p[b, a, gy, gx, :4].tolist()
            aw, ah = loss.assigner.level_anchors(lvl)[a].tolist()
            cx, cy = (gx + sig(tx) * s - (s - 1) / 2) * stride, (gy + sig(ty) * s - (s - 1) / 2) * stride
            w, h = math.exp(tw) * aw, math.exp(th) * ah
            box = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
            loc_l += 1 - float(complete_box_iou(box, tg.boxes[i:i + 1])[0, 0])
            y = torch.full((4,), 0.05)
            y[int(tg.classes[i])] = 0.95
            cls_l += float(F.binary_cross_entropy_with_logits(p[b, a, gy, gx, 5:], y))
        loc_ref += loc_l / len(tg.b)
        cls_ref += cls_l / len(tg.b)
    assert len(counts) >= 2 and len(set(counts)) >= 2  # levels with different positive counts: the weights matter
    assert terms["loc"].item() == pytest.approx(loc_ref * 0.05, rel=1e-4)
    assert terms["cls"].item() == pytest.approx(cls_ref * 4 / 80, rel=1e-4)


def test_the_loss_defaults_are_the_schemas() -> None:
    # YOLOLoss built without a config behaves as the config's defaults say
    from utils.config.schema import LossConfig

    direct = YOLOLoss.build(4, ANCHORS, (8, 16, 32), 416)
    configured = YOLOLoss.build(4, ANCHORS, (8, 16, 32), 416, **dataclasses.asdict(LossConfig()))
    for key in ("iou_type", "box_weight", "obj_weight", "cls_weight", "balance", "objectness", "class_focal",
                "label_smoothing"):
        assert getattr(direct, key) == getattr(configured, key), key
    assert direct.assigner.ignore_thresh == configured.assigner.ignore_thresh == 0.5
    assert direct.assigner.multi_anchor_iou == configured.assigner.multi_anchor_iou


def test_bad_loss_settings_are_refused_with_the_value() -> None:
    for kw, message in (({"iou_type": "xiou"}, "iou_type must be one of .*got 'xiou'"),
                        ({"focal_normalize": "sum"}, "focal_normalize must be 'mean' or 'num_pos', got 'sum'"),
                        ({"focal_form": "nope"}, "focal_form must be one of classic, varifocal, quality, got 'nope'"),
                        ({"obj_iou_target": 1.5}, r"obj_iou_target must be in \[0, 1\], got 1.5"),
                        ({"obj_iou_target": -0.1}, r"obj_iou_target must be in \[0, 1\], got -0.1")):
        with pytest.raises(ValueError, match=message):
            make_loss(**kw)
    assert make_loss(obj_iou_target=1.0).objectness.iou_target == 1.0  # the ends of the range are allowed
    with pytest.raises(ValueError, match=r"expected 3 maps \(strides \(8, 16, 32\)\), got 2"):
        make_loss()(random_maps(make_loss(), 1, 128)[:2], torch.zeros(0, 6))


def test_the_focal_form_counts_only_with_focal_loss_on() -> None:
    # focal_form picks among the focal forms; with focal_loss off the term is BCE whatever it says
    targets = random_targets(2, 6, 128, 4, 3)
    maps = random_maps(make_loss(), 2, 128, 3)
    bce = make_loss(focal_loss=False)(maps, targets)[1]["conf"]
    for form in ("varifocal", "quality"):
        torch.testing.assert_close(make_loss(focal_loss=False, focal_form=form)(maps, targets)[1]["conf"], bce)


def test_one_positive_normalizes_by_one() -> None:
    # focal_normalize num_pos with a single positive: each level's sum over its kept cells, divided by 1
    loss = make_loss(4, 128, focal_loss=True, focal_normalize="num_pos")
    maps = random_maps(loss, 1, 128, 7)
    t = torch.tensor([[0, 1, 30.0, 30, 70, 80]])
    levels = loss.assigner(maps, t).levels
    assert sum(int(tg.obj_mask.sum()) for tg in levels) == 1
    ref = 0.0
    for lvl, tg in enumerate(levels):
        logits = to_per_anchor(maps[lvl], 3)[..., 4]
        p = logits.sigmoid()
        bce = F.binary_cross_entropy_with_logits(logits, tg.obj_mask.float(), reduction="none")
        ratio = torch.where(tg.obj_mask, 0.25, 0.75) * torch.where(tg.obj_mask, 1 - p, p) ** 2
        ref += float((bce * ratio)[~tg.ignore_mask | tg.obj_mask].sum()) * loss.balance[lvl]
    assert loss(maps, t)[1]["conf"].item() == pytest.approx(ref * loss.objectness.ratio * loss.obj_weight, rel=1e-4)
