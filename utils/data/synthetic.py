"""A synthetic detection set in real VOC layout: coloured shapes on textured backgrounds.

    make_shapes(root / "SHAPES", classes, spec)   # JPEGImages/, Annotations/, ImageSets/Main/{train,val,test}.txt

Deterministic: every image is a function of (seed, split, index) and the spec. What makes it a
detection problem rather than a toy: class frequencies with a long tail (``tail`` = frequency
of the rarest class over the commonest, geometric in between), sizes log-uniform from 8 px to
half the image, textured backgrounds, shapes occluding each other (a box covers the visible
part, as VOC's guidelines ask), shapes cut by the border (``truncated``), unlabelled
distractor shapes of other kinds (hard negatives for objectness), and mostly hidden or very
small objects marked ``difficult``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

from utils.data.records import DataError

LOGGER = logging.getLogger(__name__)
GENERATOR_VERSION = 2
MARKER = "shapes.json"  # written first and last by make_shapes: the folder is the generator's own
SHAPE_KINDS = ("circle", "square", "triangle", "diamond", "cross", "ring")  # drawable class names
DISTRACTOR_KINDS = ("hexagon", "star", "bar", "crescent")  # never labelled


def class_frequencies(num_classes: int, tail: float) -> np.ndarray:
    """Geometric frequencies from 1 down to ``tail`` (the rarest over the commonest), summing to 1."""
    ratio = tail ** (1 / max(num_classes - 1, 1))
    f = ratio ** np.arange(num_classes)
    return f / f.sum()


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if kind == "diamond":  # a rhombus, taller than wide
        t = angle + math.pi / 2 * np.arange(4)
        rad = np.where(np.arange(4) % 2 == 0, r * 0.62, r)
        return np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1)
    if kind == "square":
        k, rot = 4, angle + math.pi / 4
    elif kind == "triangle":
        k, rot = 3, angle - math.pi / 2
    elif kind == "hexagon":
        k, rot = 6, angle
    else:
        raise ValueError(kind)
    t = rot + 2 * math.pi * np.arange(k) / k
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def draw_shape(mask: np.ndarray, kind: str, cx: float, cy: float, r: float, angle: float, rng: np.random.Generator) -> None:
    """Draw ``kind`` of radius ``r`` into the uint8 ``mask`` (255 = shape).

    ``angle`` in [0, 2 pi) turns the shape freely, except squares and diamonds, which only
    tilt by +-10 degrees: a freely turned square would be a diamond.
    """
    if kind in ("square", "diamond"):
        angle = (angle / (2 * math.pi) - 0.5) * math.radians(20)
    c = (int(round(cx)), int(round(cy)))
    thick = max(1, int(round(r * (0.3 if kind == "ring" else 0.35))))
    if kind == "circle":
        cv2.circle(mask, c, max(1, int(round(r))), 255, -1, cv2.LINE_AA)
    elif kind == "ring":
        cv2.circle(mask, c, max(1, int(round(r - thick / 2))), 255, thick, cv2.LINE_AA)
    elif kind == "cross":
        for a in (angle, angle + math.pi / 2):
            dx, dy = r * math.cos(a), r * math.sin(a)
            cv2.line(mask, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 255, thick, cv2.LINE_AA)
    elif kind == "star":
        t = angle + math.pi * np.arange(10) / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255, cv2.LINE_AA)
    elif kind == "bar":
        dx, dy = r * math.cos(angle), r * math.sin(angle) * 0.3
        cv2.line(mask, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 255, max(1, thick // 2), cv2.LINE_AA)
    elif kind == "crescent":
        cv2.circle(mask, c, max(1, int(r)), 255, -1, cv2.LINE_AA)
        off = (int(cx + r * 0.5 * math.cos(angle)), int(cy + r * 0.5 * math.sin(angle)))
        cv2.circle(mask, off, max(1, int(r * 0.85)), 0, -1, cv2.LINE_AA)
    else:
        pts = _polygon(kind, cx, cy, r, angle)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255, cv2.LINE_AA)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-frequency colour gradients, blotches, thin lines and noise, in muted colours (float32 [H, W, 3])."""
    base = rng.uniform(40, 200, 3).astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(a) * np.arange(w, dtype=np.float32)[None] + np.sin(a) * np.arange(h, dtype=np.float32)[:, None]) / max(h, w)
    img = base + ramp[..., None] * rng.uniform(-60, 60, 3).astype(np.float32)
    small = rng.uniform(-35, 35, (max(2, h // 40), max(2, w // 40), 3)).astype(np.float32)
    img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 8)):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        colour = tuple(int(v) for v in np.clip(base + rng.uniform(-50, 50, 3), 0, 255))
        cv2.line(img, p1, p2, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
    return img.astype(np.float32) + rng.standard_normal(img.shape, dtype=np.float32) * 6  # float32, unclipped


def _colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(120, 256), rng.integers(130, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def render_image(rng: np.random.Generator, spec, classes: list[str], freqs: np.ndarray):
    """One image and its objects: (BGR image, [(class, x1, y1, x2, y2, truncated, difficult)])."""
    w, h = spec.width, spec.height
    img = _background(rng, h, w)
    n_obj = int(rng.integers(1, spec.max_objects + 1))
    n_dis = int(rng.poisson(spec.distractors))
    items = [("obj", int(rng.choice(len(classes), p=freqs))) for _ in range(n_obj)]
    items += [("dis", int(rng.integers(len(DISTRACTOR_KINDS)))) for _ in range(n_dis)]
    rng.shuffle(items)  # drawing order: later shapes occlude earlier ones
    masks, labels = [], []
    lo, hi = math.log(8), math.log(min(w, h) / 2)
    for what, k in items:
        size = math.exp(rng.uniform(lo, hi))  # shape extent, pixels
        r = size / 2
        cx, cy = rng.uniform(-0.15 * size, w + 0.15 * size), rng.uniform(-0.15 * size, h + 0.15 * size)
        mask = np.zeros((h, w), np.uint8)
        kind = classes[k] if what == "obj" else DISTRACTOR_KINDS[k]
        draw_shape(mask, kind, cx, cy, r, rng.uniform(0, 2 * math.pi), rng)
        x, y, bw, bh = cv2.boundingRect(mask)  # work inside the shape's rectangle only
        if bw == 0:
            continue
        roi = (slice(y, y + bh), slice(x, x + bw))
        alpha = (mask[roi].astype(np.float32) / 255)[..., None]
        shade = _colour(rng) * np.float32(rng.uniform(0.85, 1.0))
        img[roi] = img[roi] * (1 - alpha) + alpha * shade
        solid = mask[roi] > 127
        for m in masks:  # earlier shapes lose what this one covers
            m[roi][solid] = 0
        full = int(solid.sum())
        masks.append((mask > 127).astype(np.uint8))
        labels.append((what, k, full, cx - r < 0 or cy - r < 0 or cx + r > w or cy + r > h))
    objects = []
    for m, (what, k, full, truncated) in zip(masks, labels, strict=True):
        if what != "obj":
            continue
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            continue
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        visible = len(xs) / max(full, 1)
        difficult = visible < 0.35 or max(x2 - x1, y2 - y1) < 6
        objects.append((k, int(x1), int(y1), int(x2), int(y2), bool(truncated), bool(difficult)))
    img += rng.standard_normal(img.shape, dtype=np.float32) * 3
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _xml(image_id: str, w: int, h: int, objects, classes: list[str]) -> str:
    parts = [f"<annotation><folder>SHAPES</folder><filename>{image_id}.jpg</filename>",
             f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]
    for k, x1, y1, x2, y2, truncated, difficult in objects:
        # 1-based inclusive pixel indices, as VOC stores them
        parts.append(f"<object><name>{escape(classes[k])}</name><pose>Unspecified</pose>"
                     f"<truncated>{int(truncated)}</truncated><difficult>{int(difficult)}</difficult>"
                     f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    parts.append("</annotation>\n")
    return "".join(parts)


class ShapesFolderError(DataError):
    """The synthetic set's folder holds something the generator did not make."""


def _clear_own_folder(folder: Path) -> None:
    """Empty ``folder`` when the generator made it (its marker is there) or it is empty; otherwise raise.

    The folder comes from a config (``data.root / shapes.name``): a name such as ``VOC2007``, or an
    empty one that leaves ``data.root`` itself, must never delete a user's dataset.
    """
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ShapesFolderError(f"{folder} is a file, not a folder; choose another shapes.name")
    if (folder / MARKER).is_file():
        shutil.rmtree(folder)  # the generator's own folder (marker present): safe to replace
    elif any(folder.iterdir()):
        raise ShapesFolderError(f"{folder} exists and was not made by the shapes generator (no {MARKER} in it); "
                                "it is left untouched: choose another shapes.name or data.root")


def make_shapes(folder: str | Path, classes: list[str], spec) -> Path:
    """Write the set described by ``spec`` (utils.config.schema.ShapesConfig) into ``folder``.

    ``folder`` is replaced only when it is the generator's own (its ``shapes.json`` is there) or
    empty; anything else raises ShapesFolderError and is left as it is.
    """
    unknown = [c for c in classes if c not in SHAPE_KINDS]
    if unknown:
        raise ValueError(f"the shapes generator draws {', '.join(SHAPE_KINDS)}; cannot draw {unknown}")
    folder = Path(folder)
    _clear_own_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # the marker comes first, so that a set cut short by a kill is still known as the generator's own and
    # is remade next time; its content (no spec) never matches a config, so ensure_shapes remakes it
    (folder / MARKER).write_text(json.dumps({"version": GENERATOR_VERSION, "complete": False}))
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    kinds = [SHAPE_KINDS.index(c) for c in classes]
    freqs = class_frequencies(len(classes), spec.tail)
    for split_no, (split, n) in enumerate((("train", spec.num_train), ("val", spec.num_val), ("test", spec.num_test))):
        ids = []
        for i in range(n):
            rng = np.random.default_rng([spec.seed, split_no, i, GENERATOR_VERSION])
            img, objects = render_image(rng, spec, [SHAPE_KINDS[k] for k in kinds], freqs)
            image_id = f"{split}_{i:05d}"
            cv2.imwrite(str(folder / "JPEGImages" / f"{image_id}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
            (folder / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, spec.width, spec.height, objects, classes))
            ids.append(image_id)
        (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (folder / MARKER).write_text(json.dumps(_meta(classes, spec), indent=1))
    return folder


def _meta(classes: list[str], spec) -> dict:
    return {"version": GENERATOR_VERSION, "classes": classes, "spec": asdict(spec)}


def ensure_shapes(cfg, classes: list[str]) -> Path | None:
    """Make the synthetic set under ``data.root`` when ``data.synthetic`` is on and it is missing or stale.

    Returns the folder when it was (re)made, else None.
    """
    if not cfg.data.synthetic:
        return None
    folder = Path(cfg.data.root) / cfg.shapes.name
    meta = folder / MARKER
    try:
        if json.loads(meta.read_text()) == _meta(classes, cfg.shapes):
            return None
    except (OSError, ValueError):
        pass
    LOGGER.info("making the synthetic shapes set in %s (%d train, %d val, %d test images)", folder,
                cfg.shapes.num_train, cfg.shapes.num_val, cfg.shapes.num_test)
    return make_shapes(folder, classes, cfg.shapes)
