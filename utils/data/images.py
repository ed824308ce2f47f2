"""Image files: decoding whatever a dataset holds, and a header probe that finds broken files cheaply."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


class ImageReadError(OSError):
    pass


def read_image(path: str | Path) -> np.ndarray:
    """An image as ``[H, W, 3]`` uint8 BGR, whatever it was stored as (gray, RGBA, 16-bit, PNG named .jpg)."""
    data = np.fromfile(str(path), dtype=np.uint8)  # also works for non-ASCII paths
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ImageReadError(f"cannot decode image {path}")
    return img


def _image_ends(path: Path, fmt: str) -> bool:
    """JPEG and PNG files end with a marker; a truncated download does not."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 1024))
        tail = fh.read()
    if fmt == "JPEG":
        return b"\xff\xd9" in tail
    if fmt == "PNG":
        return b"IEND" in tail
    return True


def probe_image(path: Path) -> tuple[int, int, str]:
    """(width, height, format) from the header, without decoding; raises ImageReadError."""
    try:
        with Image.open(path) as im:
            w, h, fmt = im.size[0], im.size[1], im.format or "?"
    except Exception as e:  # PIL raises several types for bad files
        raise ImageReadError(f"{type(e).__name__}: {e}") from None
    if w <= 0 or h <= 0:
        raise ImageReadError(f"image size {w}x{h}")
    if not _image_ends(path, fmt):
        raise ImageReadError(f"{fmt} file is truncated")
    return w, h, fmt


def find_image(folder: Path, image_id: str) -> Path | None:
    """``folder/<image_id>.<suffix>`` for the first image suffix that exists, or None."""
    for suffix in IMAGE_SUFFIXES:
        p = folder / f"{image_id}{suffix}"
        if p.is_file():
            return p
    return None
