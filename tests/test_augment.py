"""utils/data/augment.py: solid rectangles pushed through every transform still match their boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.scenes import PALETTE, assert_boxes_match_pixels, rect_image
from utils.data.augment import (
    AugmentParams,
    filter_boxes,
    hsv_jitter,
    letterbox,
    letterbox_boxes,
    mixup,
    mosaic,
    random_place,
    unletterbox_boxes,
)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("size", [416, 320])
def test_letterbox(seed: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    image, boxes, labels = rect_image(rng, [0, 1, 2, 3], w=int(rng.integers(120, 300)), h=int(rng.integers(90, 260)))
    out, info = letterbox(image, size)
    assert out.shape == (size, size, 3)
    assert_boxes_match_pixels(out, letterbox_boxes(boxes, info), labels)


@pytest.mark.parametrize("seed", range(6))
def test_letterbox_inverse_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(50, 1000)), int(rng.integers(50, 1000))
    xy = rng.uniform(0, 1, (20, 2)) * [w, h]
    boxes = np.concatenate([xy, xy + rng.uniform(1, 100, (20, 2))], 1).clip(0, [w, h, w, h]).astype(np.float32)
    img, info = letterbox(np.zeros((h, w, 3), np.uint8), 416)
    # forward, by hand: the longer side to 416 (nw x nh, rounded), centred (the odd pixel of the padding at the end)
    scale = min(416 / w, 416 / h)
    nw, nh = round(w * scale), round(h * scale)
    want = boxes * [nw / w, nh / h, nw / w, nh / h] + [(416 - nw) // 2, (416 - nh) // 2] * 2
    forward = letterbox_boxes(boxes, info)
    np.testing.assert_allclose(forward, want, rtol=0, atol=1e-3)  # float32 round-off on coordinates up to ~1100 px
    assert (img[(416 - nh) // 2: (416 - nh) // 2 + nh, (416 - nw) // 2: (416 - nw) // 2 + nw] == 0).all()  # the image
    back = unletterbox_boxes(forward, info, w, h)
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-3)


@pytest.mark.parametrize("seed", range(8))
def test_random_place_scale_jitter_translate_flip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image, boxes, labels = rect_image(rng, [0, 1, 2, 3, 4])
    p = AugmentParams(scale=(0.6, 1.6), jitter=0.3, translate=0.5, flip=0.5, min_box_size=6, min_box_area=0.3)
    out, b, lab = random_place(image, boxes, labels, 416, np.random.default_rng(seed + 100), p)
    assert out.shape == (416, 416, 3)
    assert_boxes_match_pixels(out, b, lab)


def test_flip_moves_boxes_to_the_mirror_position() -> None:
    rng = np.random.default_rng(1)
    image, boxes, labels = rect_image(rng, [0, 1, 2], w=208, h=208)
    p = AugmentParams(scale=(1.0, 1.0), jitter=0.0, translate=0.0, flip=1.0)
    out, b, lab = random_place(image, boxes, labels, 416, rng, p)
    # longer side 416 = 2 x 208, no placement offset: x1' = 416 - 2 * x2
    expected = np.stack([416 - 2 * boxes[:, 2], 2 * boxes[:, 1], 416 - 2 * boxes[:, 0], 2 * boxes[:, 3]], 1)
    np.testing.assert_allclose(b, expected, atol=0.01)
    assert_boxes_match_pixels(out, b, lab)


@pytest.mark.parametrize("seed", range(8))
def test_mosaic(seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = [rect_image(rng, [4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3]) for k in range(4)]  # unique colours
    p = AugmentParams(flip=0.5, jitter=0.3, min_box_size=6, min_box_area=0.3)
    out, b, lab = mosaic(items, 416, np.random.default_rng(seed + 7), p)
    assert out.shape == (416, 416, 3) and len(b) > 0
    assert_boxes_match_pixels(out, b, lab)


def test_mixup_keeps_both_box_sets_and_averages_pixels() -> None:
    rng = np.random.default_rng(3)
    a = rect_image(rng, [0, 1], 100, 100)
    b = rect_image(rng, [2, 3], 100, 100)
    img, boxes, labels = mixup(a, b)
    np.testing.assert_array_equal(boxes, np.concatenate([a[1], b[1]]))
    np.testing.assert_array_equal(labels, [0, 1, 2, 3])
    expected = (a[0].astype(int) + b[0].astype(int)) / 2
    assert np.abs(img.astype(int) - expected).max() <= 1


def test_hsv_jitter_changes_colours_only() -> None:
    rng = np.random.default_rng(5)
    image, boxes, labels = rect_image(rng, [0, 1, 2])
    out = hsv_jitter(image, np.random.default_rng(0), (0.0, 0.0, 0.0))
    np.testing.assert_array_equal(out, image)  # zero gains: identity
    out = hsv_jitter(image, np.random.default_rng(0), (0.1, 0.7, 0.4))
    assert out.shape == image.shape and not np.array_equal(out, image)
    # geometry intact: each rectangle is still one uniform block at the same place
    for (x1, y1, x2, y2) in boxes.astype(int):
        block = out[y1:y2, x1:x2].reshape(-1, 3)
        assert (block.max(0).astype(int) - block.min(0)).max() <= 2


@pytest.mark.parametrize("seed", range(4))
def test_hsv_jitter_equals_the_formula(seed: int) -> None:
    # the gains drawn as the docstring says, 1 + U(-1, 1) * gain per channel; then per pixel in OpenCV's HSV
    # (hue 0..179): hue * gain modulo 180, saturation and value * gain clipped to 0..255, each truncated
    gains = (0.5, 0.7, 0.4)
    image = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    r = np.random.default_rng(seed + 10).uniform(-1, 1, 3) * gains + 1
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float64)
    want = np.stack([(hsv[..., 0] * r[0]) % 180, np.clip(hsv[..., 1] * r[1], 0, 255),
                     np.clip(hsv[..., 2] * r[2], 0, 255)], -1).astype(np.uint8)
    out = hsv_jitter(image, np.random.default_rng(seed + 10), gains)
    np.testing.assert_array_equal(out, cv2.cvtColor(want, cv2.COLOR_HSV2BGR))


def test_augment_params_from_the_config() -> None:
    from utils.config.load import load_config

    cfg = load_config("shapes.yaml", ["data.scale=[0.5, 1.5]", "data.jitter=0.2", "data.translate=0.25",
                                      "data.flip=0.1", "data.hsv=[0.05, 0.6, 0.3]", "data.min_box_size=3",
                                      "data.min_box_area=0.4"])
    assert AugmentParams.from_config(cfg.data) == AugmentParams(scale=(0.5, 1.5), jitter=0.2, translate=0.25,
                                                                flip=0.1, hsv=(0.05, 0.6, 0.3), min_box_size=3.0,
                                                                min_box_area=0.4)


def colour_extent(img: np.ndarray, colour: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero((img == colour).all(2))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_mosaic_puts_a_corner_of_each_image_on_one_centre() -> None:
    # four solid images, each boxed whole: image k's corner sits on the centre (bottom-right for 0, bottom-left
    # for 1, top-right for 2, top-left for 3), the centre in the middle 40 % of the canvas, and each box is
    # exactly its image's pixels
    size, centres, whole = 320, [], 0
    p = AugmentParams(flip=0.0, jitter=0.0, min_box_size=0, min_box_area=0)
    for seed in range(24):
        rng = np.random.default_rng(seed)
        items = []
        for k in range(4):
            w, h = int(rng.integers(60, 300)), int(rng.integers(60, 300))
            items.append((np.full((h, w, 3), PALETTE[k], np.uint8), np.array([[0, 0, w, h]], np.float32),
                          np.array([k])))
        out, boxes, labels = mosaic(items, size, np.random.default_rng(seed + 50), p)
        np.testing.assert_array_equal(labels, [0, 1, 2, 3])
        ext = [colour_extent(out, PALETTE[k]) for k in range(4)]
        np.testing.assert_allclose(boxes, ext, rtol=0, atol=1e-3)  # float32 round-off of the scaling
        cx, cy = ext[0][2], ext[0][3]
        assert (ext[1][0], ext[1][3]) == (cx, cy) and (ext[2][2], ext[2][1]) == (cx, cy)
        assert (ext[3][0], ext[3][1]) == (cx, cy)
        centres += [cx / size, cy / size]
        whole += ext[0][0] > 0 and ext[0][1] > 0  # image 0 seen whole: its longer side short of the centre
    assert 0.3 <= min(centres) and max(centres) <= 0.7 and max(centres) - min(centres) > 0.25
    assert whole > 0


@pytest.mark.parametrize(("size", "method"), [(64, cv2.INTER_AREA), (256, cv2.INTER_LINEAR)])
def test_random_place_resamples_as_opencv_does(size: int, method: int) -> None:
    # smaller: INTER_AREA (averages, no aliasing); larger: INTER_LINEAR. Scale 1, no jitter, centred, no flip
    image = np.random.default_rng(0).integers(0, 256, (100, 128, 3), dtype=np.uint8)
    p = AugmentParams(scale=(1.0, 1.0), jitter=0.0, translate=0.0, flip=0.0, hsv=(0, 0, 0))
    out, _, _ = random_place(image, np.zeros((0, 4), np.float32), np.zeros(0, int), size, np.random.default_rng(1), p)
    nw, nh = size, round(size * 100 / 128)
    dy = round((size - nh) / 2)
    np.testing.assert_array_equal(out[dy:dy + nh], cv2.resize(image, (nw, nh), interpolation=method))
    assert (out[:dy] == 114).all() and (out[dy + nh:] == 114).all()


def test_filter_boxes_by_size_and_lost_area() -> None:
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 1.5, 10]], np.float32)
    after = np.array([[0, 0, 10, 10], [0, 0, 10, 1.5], [0, 0, 1.5, 10]], np.float32)
    # second: 15% of its area left (< 20%); third: 1.5 px wide (< 2 px)
    assert filter_boxes(before, after, 2.0, 0.2).tolist() == [True, False, False]
