"""nets/assign.py: the assignment against a plain per-box loop, the fast ignore mask against the dense
definition, and the assignment's edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from nets.box_coding import decode_boxes, to_per_anchor
from nets.loss import YOLOLoss
from tests.loss_cases import ANCHORS as ANCHORS_V4
from tests.loss_cases import TINY, V4, make_loss, random_maps, random_targets


def plant(loss: YOLOLoss, maps: list[torch.Tensor], targets: torch.Tensor, shift: float = 2.0) -> None:
    """Set logits so that, on every level, one anchor of each target's centre cell decodes onto the
    target box moved by ``shift`` px: predictions that overlap ground truths, for the ignore mask."""
    for lvl, m in enumerate(maps):
        p = to_per_anchor(m, loss.num_anchors)  # a view: writes go to the map
        s, sxy = loss.strides[lvl], loss.scale_x_y[lvl]
        anchors = loss.assigner.level_anchors(lvl)
        for i, (b, _c, x1, y1, x2, y2) in enumerate(targets.tolist()):
            a = i % loss.num_anchors
            cx, cy = (x1 + x2) / 2 + shift, (y1 + y2) / 2
            gx, gy = min(int(cx / s), p.shape[3] - 1), min(int(cy / s), p.shape[2] - 1)
            for j, (c, g) in enumerate(((cx, gx), (cy, gy))):
                sig = min(max((c / s - g + (sxy - 1) / 2) / sxy, 0.01), 0.99)
                p[int(b), a, gy, gx, j] = math.log(sig / (1 - sig))
            p[int(b), a, gy, gx, 2] = math.log((x2 - x1) / anchors[a, 0])
            p[int(b), a, gy, gx, 3] = math.log((y2 - y1) / anchors[a, 1])


def per_anchor(loss: YOLOLoss, maps: list[torch.Tensor]) -> list[torch.Tensor]:
    return [to_per_anchor(m, loss.num_anchors) for m in maps]


def decoded(loss: YOLOLoss, maps: list[torch.Tensor]) -> list[torch.Tensor]:
    preds = per_anchor(loss, maps)
    return [decode_boxes(p, loss.assigner.level_anchors(i), loss.strides[i], loss.scale_x_y[i]) for i, p in enumerate(preds)]


def loop_assign(loss: YOLOLoss, boxes: list[torch.Tensor], targets: torch.Tensor):
    """The classic per-box algorithm, written plainly: returns {(lvl, b, a, gy, gx): (box, cls)} and ignore sets."""
    used = sorted({k for m in loss.assigner.anchor_masks for k in m})
    anchors = loss.assigner.anchors.tolist()
    owner: dict[tuple, tuple[float, int]] = {}
    rows = targets.tolist()
    for m, (b, _c, x1, y1, x2, y2) in enumerate(rows):
        w, h = x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            continue
        ious = []
        for aw, ah in anchors:
            inter = min(w, aw) * min(h, ah)
            ious.append(inter / (w * h + aw * ah - inter))
        best = max(used, key=lambda k: (ious[k], -k))  # first maximum
        chosen = {best}
        if loss.assigner.multi_anchor_iou is not None:
            chosen |= {k for k in used if ious[k] > loss.assigner.multi_anchor_iou}
        for lvl, mask in enumerate(loss.assigner.anchor_masks):
            s = loss.strides[lvl]
            hh, ww = boxes[lvl].shape[2:4]
            for a, k in enumerate(mask):
                if k not in chosen:
                    continue
                gx = min(int((x1 + x2) / 2 / s), ww - 1)
                gy = min(int((y1 + y2) / 2 / s), hh - 1)
                key = (lvl, int(b), a, gy, gx)
                if key not in owner or ious[k] > owner[key][0]:
                    owner[key] = (ious[k], m)
    positives = {key: (rows[m][2:], int(rows[m][1])) for key, (_, m) in owner.items()}
    ignored = set()
    for lvl, bx in enumerate(boxes):
        batch, n_a, hh, ww, _ = bx.shape
        for b in range(batch):
            gts = torch.tensor([r[2:] for r in rows if int(r[0]) == b and r[4] > r[2] and r[5] > r[3]]).view(-1, 4)
            if not len(gts):
                continue
            best = box_iou(bx[b].reshape(-1, 4).double(), gts.double()).amax(1).view(n_a, hh, ww)
            for a, gy, gx in (best > loss.assigner.ignore_thresh).nonzero().tolist():
                if (lvl, b, a, gy, gx) not in positives:
                    ignored.add((lvl, b, a, gy, gx))
    return positives, ignored


@pytest.mark.parametrize("arch", [V4, TINY], ids=["yolov4", "tiny"])
@pytest.mark.parametrize("multi", [None, 0.213])
@pytest.mark.parametrize("ignore", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("sxy", [(1.0, 1.0, 1.0), (1.2, 1.1, 1.05)], ids=["s1", "darknet_s"])
def test_assignment_equals_plain_loop(arch: dict, multi: float | None, ignore: float, seed: int, sxy) -> None:
    # ignore < 0.5 takes the dense path, >= 0.5 the path that only decodes cells near boxes
    size, batch = 128, 3
    loss = make_loss(4, size, arch, multi_anchor_iou=multi, ignore_thresh=ignore, scale_x_y=sxy)
    maps = random_maps(loss, batch, size, seed, scale=0.5)
    targets = random_targets(batch, 8, size, 4, seed)
    plant(loss, maps, targets)
    boxes = decoded(loss, maps)
    got = loss.assigner(maps, targets)
    positives, ignored = loop_assign(loss, boxes, targets)

    got_pos, got_ign = {}, set()
    for lvl, tg in enumerate(got.levels):
        assert tg.obj_mask.sum() == len(tg.b)  # one positive per cell
        for i in range(len(tg.b)):
            key = (lvl, int(tg.b[i]), int(tg.a[i]), int(tg.gy[i]), int(tg.gx[i]))
            assert tg.obj_mask[key[1:]]
            got_pos[key] = (tg.boxes[i].tolist(), int(tg.classes[i]))
        got_ign |= {(lvl, *k) for k in tg.ignore_mask.nonzero().tolist()}
    assert got_pos.keys() == positives.keys()
    for key, (box, c) in positives.items():
        assert got_pos[key][1] == c
        assert got_pos[key][0] == pytest.approx(box, abs=1e-4)
    assert got_ign == ignored
    assert len(ignored) > 0 and got.stats["collisions"] > 0  # the cases were exercised
    assert got.stats["num_pos"] == len(positives)
    assert got.stats["ignored"] == len(ignored)


@pytest.mark.parametrize("ignore", [0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_ignore_mask_equals_the_dense_definition(ignore: float, seed: int) -> None:
    # nets/assign.py's two definitions: every cell against every ground truth, and the fast path
    loss = make_loss(4, 256, ignore_thresh=ignore, scale_x_y=(1.2, 1.1, 1.05))
    maps = random_maps(loss, 3, 256, seed, scale=0.5)
    targets = random_targets(3, 8, 256, 4, seed)
    a = loss.assigner
    preds = [to_per_anchor(m, a.num_anchors).permute(0, 1, 4, 2, 3) for m in maps]  # [B, A, 5 + C, H, W]
    t = targets[(targets[:, 4:] > targets[:, 2:4]).all(1)]
    img = t[:, 0].long()
    fast = a._overlapping(preds, t, img)
    dense = torch.cat([a._overlapping_dense(i, p, t, img).reshape(-1) for i, p in enumerate(preds)])
    assert dense.sum() > 0 and torch.equal(fast, dense)


def test_assignment_is_order_independent() -> None:
    loss = make_loss(4, 128)
    maps = random_maps(loss, 2, 128, 5)
    targets = random_targets(2, 10, 128, 4, 5)
    a = loss.assigner(maps, targets)
    b = loss.assigner(maps, targets.flip(0))
    for la, lb in zip(a.levels, b.levels, strict=True):
        assert torch.equal(la.obj_mask, lb.obj_mask)
        assert torch.equal(la.ignore_mask, lb.ignore_mask)
        ka = sorted(zip(la.b.tolist(), la.a.tolist(), la.gy.tolist(), la.gx.tolist(), la.boxes.tolist(), strict=True))
        kb = sorted(zip(lb.b.tolist(), lb.a.tolist(), lb.gy.tolist(), lb.gx.tolist(), lb.boxes.tolist(), strict=True))
        # same cells; equal-IoU ties may pick either duplicate, otherwise the same boxes
        assert [k[:4] for k in ka] == [k[:4] for k in kb]
    assert a.stats["collisions"] == b.stats["collisions"]


def positives_of(loss: YOLOLoss, targets: torch.Tensor, size: int = 416, batch: int = 1):
    maps = random_maps(loss, batch, size, 0, scale=0.0)
    got = loss.assigner(maps, targets)
    return [(lvl, int(tg.b[i]), int(tg.a[i]), int(tg.gy[i]), int(tg.gx[i]))
            for lvl, tg in enumerate(got.levels) for i in range(len(tg.b))], got


def test_box_lands_on_known_level_anchor_and_cell() -> None:
    loss = make_loss(20, 416)
    # a 36x75 box is anchor 3 exactly (yolov4 anchors 12,16 19,36 40,28 36,75 ...): level 1
    # (stride 16, mask 3,4,5), slot 0; centre (100, 60) -> cell x 100 // 16 = 6, y 60 // 16 = 3
    t = torch.tensor([[0, 7, 100 - 18, 60 - 37.5, 100 + 18, 60 + 37.5]])
    pos, got = positives_of(loss, t)
    assert pos == [(1, 0, 0, 3, 6)]
    assert got.levels[1].classes.tolist() == [7]
    # a 12x16 box on the border: centre (410, 8) -> level 0, anchor 0, cell x 51, y 1
    pos, _ = positives_of(loss, torch.tensor([[0, 0, 404.0, 0, 416, 16]]))
    assert pos == [(0, 0, 0, 1, 51)]
    # tiny: anchor 0 (10x14) is in no mask, so a 10x14 box goes to the best used anchor, 1 (23x27)
    tiny = make_loss(20, 416, TINY)
    pos, _ = positives_of(tiny, torch.tensor([[0, 0, 100.0, 100, 110, 114]]))
    assert pos == [(0, 0, 0, 6, 6)]  # level stride 16, mask (1, 2, 3) slot 0, cell 105 // 16, 107 // 16
    # tiny: anchor 3 (81x82) is in both masks, so the box is positive on both levels
    pos, _ = positives_of(tiny, torch.tensor([[0, 0, 100.0, 100, 181, 182]]))
    assert pos == [(0, 0, 2, 8, 8), (1, 0, 0, 4, 4)]


def test_multi_anchor_threshold_adds_anchors() -> None:
    # 30x30 box: shape IoUs with 19x36 = 570/(900+684-570) = 0.562, with 40x28 = 840/(900+1120-840) = 0.712,
    # with 12x16 = 192/900 = 0.213, 36x75: 900/2700 = 0.333 -> best anchor 2; > 0.3 adds 1 and 3.
    t = torch.tensor([[0, 1, 100.0, 100, 130, 130]])
    pos, _ = positives_of(make_loss(4, 416), t)
    assert [(p[0], p[2]) for p in pos] == [(0, 2)]
    pos, _ = positives_of(make_loss(4, 416, multi_anchor_iou=0.3), t)
    assert sorted((p[0], p[2]) for p in pos) == [(0, 1), (0, 2), (1, 0)]


def test_collision_keeps_the_better_shape() -> None:
    loss = make_loss(4, 416)
    # both centred in cell (6, 6) of stride 16 with best anchor 3 (36x75); the second is
    # exactly 36x75 (IoU 1), the first 34x70 (IoU 2380/2700 = 0.88): the second wins
    t = torch.tensor([[0, 1, 100 - 17, 100 - 35, 100 + 17, 100 + 35], [0, 2, 100 - 18, 100 - 37.5, 100 + 18, 100 + 37.5]])
    pos, got = positives_of(loss, t)
    assert pos == [(1, 0, 0, 6, 6)]
    assert got.levels[1].classes.tolist() == [2]
    assert got.stats["collisions"] == 1
    _, flipped = positives_of(loss, t.flip(0))
    assert flipped.levels[1].classes.tolist() == [2]


def test_invalid_targets_are_counted_not_assigned() -> None:
    loss = make_loss(4, 416)
    t = torch.tensor([[0, 1, 10.0, 10, 10, 40],  # zero width
                      [0, 9, 10.0, 10, 50, 40],  # class out of range
                      [5, 1, 10.0, 10, 50, 40],  # image index out of range
                      [0, 1, 10.0, 10, 50, float("nan")],
                      [0, 1, 10.0, 10, 50, 40]])
    pos, got = positives_of(loss, t)
    assert len(pos) == 1 and got.stats["invalid_targets"] == 4


def test_nan_predictions_do_not_leak_into_assignment() -> None:
    loss = make_loss(4, 128)
    maps = random_maps(loss, 2, 128, 3)
    targets = random_targets(2, 6, 128, 4, 3)
    clean = loss.assigner(maps, targets)
    bad = [m.clone() for m in maps]
    bad[0][0, 2, 3, 4] = float("nan")  # a w logit
    bad[1][1, 3, 0, 0] = float("inf")
    dirty = loss.assigner(bad, targets)
    for c, d in zip(clean.levels, dirty.levels, strict=True):
        assert torch.equal(c.obj_mask, d.obj_mask)
        assert torch.equal(c.boxes, d.boxes)
    # box logits of cells that are not positives do not enter the loss at all ...
    assert torch.isfinite(loss(bad, targets)[0])
    # ... while a NaN objectness logit makes the loss NaN, for the training loop to stop on
    bad[0][0, 4, 0, 0] = float("nan")
    assert not torch.isfinite(loss(bad, targets)[0])


def test_huge_wh_logit_stays_finite() -> None:
    loss = make_loss(4, 128)
    maps = random_maps(loss, 1, 128, 1)
    maps[0][0, 2] = 500.0  # exp(500) is inf without the clamp
    total, terms = loss(maps, random_targets(1, 5, 128, 4, 1))
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())


def test_boxes_far_outside_the_input_match_the_loop() -> None:
    # boxes far outside the input (finite, positive size, so valid) land on the border cells. The
    # first spans x / 8 = 2.125e9 to 2.15e9, across the int32 limit (2.147e9): the ignore test's cell
    # ranges are clamped before the int32 cast, or its right end would wrap below its left
    loss = make_loss(4, 128)
    maps = random_maps(loss, 2, 128, 5, scale=0.5)
    targets = torch.cat([random_targets(2, 4, 128, 4, 5),
                         torch.tensor([[0, 1, 1.7e10, 10.0, 1.72e10, 60.0], [1, 2, -1e11 - 1e5, -30.0, -1e11, 40.0]])])
    got = loss.assigner(maps, targets)
    positives, ignored = loop_assign(loss, decoded(loss, maps), targets)
    assert got.stats["num_pos"] == len(positives)
    assert {(lvl, *k) for lvl, tg in enumerate(got.levels) for k in tg.ignore_mask.nonzero().tolist()} == ignored
    assert torch.isfinite(loss(maps, targets)[0])


@pytest.mark.parametrize("thresh", [0.5, 0.75])
def test_an_iou_exactly_at_the_ignore_threshold_is_not_ignored(thresh: float) -> None:
    # "overlaps by more than ignore_thresh": IoU == thresh stays a negative, on the fast path (thresh >= 0.5) and in
    # the dense definition. One level, stride 8, 8 x 8 cells; anchors 16x16 (slot 0) and 16 x 16*thresh (slot 1).
    # All logits 0: each cell's box is centred on the cell (sigmoid 0 = 0.5), with its anchor's size (exp 0 = 1).
    # The ground truth is 16x16 centred on cell (3, 3)'s centre (28, 28): it goes to slot 0 there, and slot 1 of
    # the same cell decodes onto a 16 x 16*thresh box with the same centre: IoU = 16*16*thresh / (16*16) = thresh,
    # exact in float32 (8 x 16 / 256 = 0.5, 12 x 16 / 256 = 0.75; the 1e-7 in the union is below 256's ulp).
    from nets.assign import TargetAssigner

    def ignored_at(ignore_thresh: float) -> tuple[bool, bool]:
        a = TargetAssigner(1, [(16.0, 16.0), (16.0, 16.0 * thresh)], [8], [(0, 1)], ignore_thresh=ignore_thresh)
        maps = [torch.zeros(1, 2 * 6, 8, 8)]
        t = torch.tensor([[0, 0, 20.0, 20.0, 36.0, 36.0]])
        got = a(maps, t).levels[0]
        assert got.obj_mask[0, 0, 3, 3] and not got.obj_mask[0, 1, 3, 3]
        preds = [maps[0].view(1, 2, 6, 8, 8)]
        dense = a._overlapping_dense(0, preds[0], t, t[:, 0].long())
        return bool(got.ignore_mask[0, 1, 3, 3]), bool(dense[0, 1, 3, 3])

    assert ignored_at(thresh) == (False, False)  # at the threshold: not more than it
    below = thresh - 1e-3  # a hair under the IoU: ignored (the fast path still, as 0.499 < 0.5 is dense: same answer)
    assert ignored_at(below) == (True, True)


@pytest.mark.parametrize("ignore", [0.3, 0.5])  # the dense definition, the fast path
def test_ignore_mask_equals_darknet_formula_with_wide_scale_and_uneven_images(ignore: float) -> None:
    # scale_x_y 2 lets a cell's prediction centre reach half a cell beyond its neighbours, so the fast path's window
    # must widen by (s - 1) / 2 cells; maps 96 x 128 (H != W); images with 4, 1 and 0 ground truths (padding in the
    # dense definition). Reference: every cell decoded with Darknet's formula, written here, against torchvision's IoU.
    from nets.assign import TargetAssigner

    a = TargetAssigner(4, ANCHORS_V4, (8, 16, 32), scale_x_y=(2.0, 2.0, 2.0), ignore_thresh=ignore)
    g = torch.Generator().manual_seed(3)
    maps = [torch.randn(3, 3 * 9, 96 // s, 128 // s, generator=g) * 0.7 for s in (8, 16, 32)]
    targets = torch.tensor([[0, 1, 10.0, 20, 60, 70], [0, 2, 30, 5, 110, 90], [0, 0, 70, 40, 90, 60], [0, 3, 5, 5, 20, 30],
                            [1, 1, 40, 30, 100, 80]])
    got = a(maps, targets)
    for lvl, (m, stride) in enumerate(zip(maps, (8, 16, 32), strict=True)):
        b_, _, h, w = m.shape
        p = m.view(b_, 3, 9, h, w)
        gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        anchors = torch.tensor(ANCHORS_V4[3 * lvl: 3 * lvl + 3])[None, :, :, None, None]  # [1, A, 2, 1, 1]
        cx = (gx + torch.sigmoid(p[:, :, 0]) * 2.0 - 0.5) * stride
        cy = (gy + torch.sigmoid(p[:, :, 1]) * 2.0 - 0.5) * stride
        bw, bh = torch.exp(p[:, :, 2]) * anchors[:, :, 0], torch.exp(p[:, :, 3]) * anchors[:, :, 1]
        boxes = torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), -1)  # [B, A, H, W, 4]
        for b in range(b_):
            gt = targets[targets[:, 0] == b, 2:]
            over = box_iou(boxes[b].reshape(-1, 4), gt).amax(1) > ignore if len(gt) else torch.zeros(3 * h * w, dtype=bool)
            want = over.view(3, h, w) & ~got.levels[lvl].obj_mask[b]
            assert torch.equal(got.levels[lvl].ignore_mask[b], want), (lvl, b)
    assert sum(int(tg.ignore_mask.sum()) for tg in got.levels) > 5  # ignored cells there are


def test_default_anchor_masks_bad_masks_and_no_saved_buffers() -> None:
    from nets.assign import TargetAssigner

    default = TargetAssigner(4, ANCHORS_V4, (8, 16, 32))
    assert default.anchor_masks == ((0, 1, 2), (3, 4, 5), (6, 7, 8))  # consecutive groups, smallest first
    assert TargetAssigner(4, ANCHORS_V4[:6], (16, 32)).anchor_masks == ((0, 1, 2), (3, 4, 5))
    with pytest.raises(ValueError, match=r"need one anchor mask of equal length per stride, got \(\(0, 1, 2\), \(3, 4\)\)"):
        TargetAssigner(4, ANCHORS_V4, (8, 16), ((0, 1, 2), (3, 4)))
    with pytest.raises(ValueError, match="need one anchor mask of equal length per stride"):
        TargetAssigner(4, ANCHORS_V4, (8, 16, 32), ((0, 1, 2), (3, 4, 5)))
    # the anchors come from the card, never from a state_dict: a model's checkpoint holds no assigner buffers
    assert default.state_dict() == {} and make_loss().state_dict() == {}
