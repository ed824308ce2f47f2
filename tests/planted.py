"""A stand-in model with one planted detection, for the tests of predict.py, its sources and outputs, and the
Python API: its raw maps decode, for a W x H image letterboxed to SIZE, onto BOX with class 2 ("triangle"),
so that every path from an image to the written box can be checked against known pixels. The ``planted``
fixture (tests/conftest.py) makes predict.py and detector.py load it whatever ``--weights`` says."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from nets.box_coding import LevelSpec
from utils.config.files import read_anchors
from utils.config.load import load_config
from utils.infer.backend import Backend

CLASSES = ["circle", "square", "triangle", "diamond", "cross", "ring"]
ANCHORS = read_anchors("model_data/yolo_tiny_anchors.txt")
SPEC = LevelSpec(tuple(ANCHORS), ((1, 2, 3), (3, 4, 5)), (16, 32), (1.0, 1.0))
SIZE = 128
W, H = 200, 120  # a wide image: letterboxed to 128 x 77, padded by 25 px above
BOX = (42.0, 30.0, 110.0, 90.0)  # planted box in original pixels, class "triangle"


class Planted(torch.nn.Module):
    """A stand-in model whose maps decode, for a W x H image letterboxed to SIZE, onto BOX with class 2."""

    strides = (16, 32)
    anchor_masks = ((1, 2, 3), (3, 4, 5))

    def __init__(self) -> None:
        super().__init__()
        scale = min(SIZE / W, SIZE / H)
        nw, nh = round(W * scale), round(H * scale)
        px, py = (SIZE - nw) // 2, (SIZE - nh) // 2
        sx, sy = nw / W, nh / H
        x1, y1, x2, y2 = BOX[0] * sx + px, BOX[1] * sy + py, BOX[2] * sx + px, BOX[3] * sy + py
        self.maps = [torch.full((1, 3 * (5 + 6), SIZE // s, SIZE // s), -12.0) for s in self.strides]
        m = self.maps[0].view(1, 3, 11, SIZE // 16, SIZE // 16)
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        gx, gy = int(cx // 16), int(cy // 16)
        aw, ah = ANCHORS[1]
        fx, fy = cx / 16 - gx, cy / 16 - gy
        m[0, 0, 0, gy, gx], m[0, 0, 1, gy, gx] = math.log(fx / (1 - fx)), math.log(fy / (1 - fy))
        m[0, 0, 2, gy, gx], m[0, 0, 3, gy, gx] = math.log(w / aw), math.log(h / ah)
        m[0, 0, 4, gy, gx], m[0, 0, 5 + 2, gy, gx] = 12.0, 12.0

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [m.expand(len(x), -1, -1, -1).clone() for m in self.maps]


def image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    cv2.rectangle(img, (40, 30), (110, 90), (0, 200, 0), -1)
    return img


def planted_backend() -> Backend:
    cfg = load_config("shapes.yaml", [f"model.input_size={SIZE}"])
    return Backend("pytorch", cfg, CLASSES, ANCHORS, SPEC, SIZE, torch.device("cpu"), model=Planted())


def read_txt(path: Path) -> list[tuple[str, float, list[float]]]:
    rows = []
    for line in path.read_text().splitlines():
        name, score, *box = line.split()
        rows.append((name, float(score), [float(v) for v in box]))
    return rows
