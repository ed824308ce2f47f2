"""utils/boxes.py: the IoU family against torchvision.ops, gradients included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import ops

from utils.boxes import bbox_iou, box_iou_np, coco_iou_np, shape_iou, shape_iou_np, xywh_to_xyxy, xyxy_to_xywh


def random_boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 300
    wh = torch.rand(n, 2, generator=g) * 150 + 1
    return torch.cat([xy, xy + wh], 1).double()


REFERENCE = {
    "iou": ops.box_iou,
    "giou": ops.generalized_box_iou,
    "diou": ops.distance_box_iou,
    "ciou": ops.complete_box_iou,
}
REFERENCE_LOSS = {
    "giou": ops.generalized_box_iou_loss,
    "diou": ops.distance_box_iou_loss,
    "ciou": ops.complete_box_iou_loss,
}


@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_family_matches_torchvision_pairwise(kind: str, seed: int) -> None:
    a, b = random_boxes(40, seed), random_boxes(30, seed + 100)
    ours = bbox_iou(a[:, None], b[None], kind)  # broadcast -> [40, 30]
    torch.testing.assert_close(ours, REFERENCE[kind](a, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["giou", "diou", "ciou"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iou_loss_and_gradient_match_torchvision(kind: str, dtype: torch.dtype) -> None:
    a, b = random_boxes(64, 3).to(dtype), random_boxes(64, 4).to(dtype)
    a1, a2 = a.clone().requires_grad_(), a.clone().requires_grad_()
    ours = (1 - bbox_iou(a1, b, kind)).sum()
    ref = REFERENCE_LOSS[kind](a2, b, reduction="sum")
    ours.backward()
    ref.backward()
    tol = 1e-4 if dtype == torch.float32 else 1e-7
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(a1.grad, a2.grad, rtol=tol, atol=tol)


def test_hand_computed_values() -> None:
    # a = [0,0,2,2], b = [1,1,3,3]: inter 1, union 7 -> IoU 1/7; enclosing [0,0,3,3] area 9
    # -> GIoU = 1/7 - (9 - 7)/9; centres (1,1),(2,2): d^2 = 2, diagonal c^2 = 18 -> DIoU = 1/7 - 1/9;
    # equal aspect ratios -> v = 0, CIoU = DIoU.
    a, b = torch.tensor([0.0, 0, 2, 2], dtype=torch.float64), torch.tensor([1.0, 1, 3, 3], dtype=torch.float64)
    assert bbox_iou(a, b, "iou").item() == pytest.approx(1 / 7)
    assert bbox_iou(a, b, "giou").item() == pytest.approx(1 / 7 - 2 / 9)
    assert bbox_iou(a, b, "diou").item() == pytest.approx(1 / 7 - 1 / 9)
    assert bbox_iou(a, b, "ciou").item() == pytest.approx(1 / 7 - 1 / 9)
    with pytest.raises(ValueError, match="unknown IoU kind 'eiou'"):
        bbox_iou(a, b, "eiou")


def test_shape_iou_by_hand() -> None:
    # 10x20 against 20x10 on a common centre: inter 10*10 = 100, union 200 + 200 - 100 -> 1/3
    got = shape_iou(torch.tensor([[10.0, 20.0]]), torch.tensor([[20.0, 10.0], [10.0, 20.0], [5.0, 5.0]]))
    torch.testing.assert_close(got, torch.tensor([[1 / 3, 1.0, 25 / 200]]))


def test_format_round_trip() -> None:
    boxes = random_boxes(10, 5)
    torch.testing.assert_close(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)
    torch.testing.assert_close(xyxy_to_xywh(torch.tensor([[1.0, 2, 5, 10]])), torch.tensor([[3.0, 6, 4, 8]]))


def test_the_numpy_forms_match_torchvision_and_the_torch_forms() -> None:
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(7, 2, generator=g) * 50
    a = torch.cat([xy, xy + 1 + torch.rand(7, 2, generator=g) * 30], 1).double()
    shift, grow = torch.rand(5, 2, generator=g).double() * 6, torch.rand(5, 2, generator=g).double() * 6
    b = a[torch.randperm(7, generator=g)[:5]] + torch.cat([shift, shift + grow], 1)  # overlapping, valid boxes
    np.testing.assert_allclose(box_iou_np(a.numpy()[:, None], b.numpy()[None]), ops.box_iou(a, b).numpy(), rtol=1e-12)
    wh_a, wh_b = a[:, 2:] - a[:, :2], b[:, 2:] - b[:, :2]
    np.testing.assert_allclose(shape_iou_np(wh_a.numpy(), wh_b.numpy()), shape_iou(wh_a, wh_b).numpy(), rtol=1e-12)
    # pycocotools' form takes xywh; without crowd boxes it is the plain IoU, against a crowd box the union is the
    # detection's area: a 10 x 10 detection half inside a 10 x 20 crowd box -> 50 / 100
    crowd = np.zeros(5, bool)
    corner = ops.box_convert(a, "xyxy", "xywh").numpy(), ops.box_convert(b, "xyxy", "xywh").numpy()  # COCO: x, y, w, h
    np.testing.assert_allclose(coco_iou_np(*corner, crowd),
                               ops.box_iou(a, b).numpy(), rtol=1e-12)
    d, c = np.array([[0.0, 0, 10, 10]]), np.array([[5.0, 0, 10, 20]])
    assert coco_iou_np(d, c, np.array([True]))[0, 0] == pytest.approx(0.5)
    assert coco_iou_np(d, c, np.array([False]))[0, 0] == pytest.approx(50 / 250)
