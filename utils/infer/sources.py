"""What ``--source`` names, and its frames in batches.

    source = resolve_source("photos/")                 # a SourceError where there is nothing to read
    for batch in frames(source, batch=8, skipped=[]):  # lists of Frame: the image, its name, its stream
        ...

A source is an image file, a folder (its images, recursively), a glob (``"data/**/*.jpg"``), a ``.txt`` list
of image paths (one per line; relative ones from the list's folder), an ``http(s)://`` image URL, a video
file or URL, an ``rtsp://``, ``rtmp://`` or ``http(s)://`` stream (through OpenCV's FFmpeg), or a webcam index.
An image that cannot be read is skipped (named in ``skipped``, with a line on stderr), never fatal. A live
stream that drops is opened again a few times (``STREAM_RETRIES``); then a SourceError, after the frames
already read have been handed on."""

from __future__ import annotations

import glob
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from utils.console import progress
from utils.data.images import ImageReadError, read_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
STREAM_RETRIES = 3  # a live stream that drops is opened again this many times before the run ends
URL_TIMEOUT_S = 30.0


class SourceError(ValueError):
    """A source that cannot be read: missing, empty, of an unknown kind, or a stream that does not open."""


@dataclass
class Source:
    """What ``--source`` names: image files or URLs, a video (file or URL), a live stream, or a webcam."""

    kind: str  # "images" | "video" | "stream" | "webcam"
    path: Path | None = None  # images: the folder their names are made relative to; video: the file
    files: list[Path | str] = field(default_factory=list)  # images: paths, or http(s) URLs
    camera: int = 0
    url: str = ""  # a video or stream URL

    @property
    def stream(self) -> bool:
        """Frames of one video (written to one mp4), not separate images."""
        return self.kind != "images"


@dataclass
class Frame:
    """One image to predict on, and where its results go."""

    image: np.ndarray  # [H, W, 3] uint8 BGR
    name: str  # unique within the source: an image's path under its folder ("a__b" for a/b.jpg), a frame "clip_12"
    suffix: str = ""  # an image file's extension, kept for its drawn copy
    stream: str = ""  # a video's or a webcam's name, for the frames written to <stream>.mp4
    fps: float = 0.0  # the stream's frames per second
    index: int = 0  # 1-based position in the source
    path: str = ""  # the image's file or URL


def _images(files: list[Path], what: str) -> list[Path]:
    files = sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SourceError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) {what}")
    return files


def resolve_source(source: str) -> Source:
    """The source ``source`` names (see the module's docstring); a SourceError where there is nothing to read."""
    if source.isdigit():
        return Source("webcam", camera=int(source))
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in STREAM_SCHEMES:
        suffix = Path(urllib.parse.urlsplit(source).path).suffix.lower()
        if suffix in IMAGE_EXTENSIONS and scheme in ("http", "https"):
            return Source("images", files=[source])
        return Source("video" if suffix in VIDEO_EXTENSIONS else "stream", url=source)
    if any(c in source for c in "*?["):
        matched = [Path(p) for p in glob.glob(source, recursive=True)]
        return Source("images", _glob_root(source), _images(matched, f"match {source}"))
    path = Path(source)
    if path.is_dir():
        return Source("images", path, _images(list(path.rglob("*")), f"under {path}"))
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if path.suffix.lower() == ".txt":
        return Source("images", None, _listed(path))
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return Source("video", path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return Source("images", path.parent, [path])
    raise SourceError(f"{path} is neither an image ({', '.join(IMAGE_EXTENSIONS)}), a video "
                      f"({', '.join(VIDEO_EXTENSIONS)}) nor a .txt list of images")


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob, before its first wildcard (the images' names are made relative to it)."""
    head = []
    for part in Path(pattern).parts:
        if any(c in part for c in "*?["):
            break
        head.append(part)
    return Path(*head) if head else Path(".")


def _listed(list_file: Path) -> list[Path | str]:
    """The images a ``.txt`` list names, one per line (blank lines and ``#`` comments skipped); a relative
    path is taken from the list's folder where it is not found from the working directory."""
    out: list[Path | str] = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if urllib.parse.urlsplit(line).scheme in ("http", "https"):
            out.append(line)
            continue
        p = Path(line)
        out.append(p if p.is_absolute() or p.exists() else list_file.parent / p)
    if not out:
        raise SourceError(f"{list_file} lists no images")
    return out


def frames(source: Source, batch: int, skipped: list[str], show_progress: bool = True,
           wait: Callable[[float], None] | None = None) -> Iterator[list[Frame]]:
    """The source's frames, ``batch`` at a time (a webcam's and a live stream's one at a time, as they come).
    ``wait``: how the pause between a dropped stream's tries is spent (tests pass one that returns at once)."""
    if source.kind == "images":
        yield from _image_batches(source, batch, skipped, show_progress)
    else:
        yield from _stream_batches(source, batch if source.kind == "video" else 1, show_progress, wait or time.sleep)


def _image_names(files: list[Path | str], root: Path | None) -> list[str]:
    """A unique name per image: its path under ``root`` with "__" for "/" (a folder's files keep distinct names
    however deep they sit); a URL's file name; a repeated name gets _2, _3, ..."""
    local = [Path(os.path.abspath(f)) for f in files if isinstance(f, Path)]
    if root is None:  # a .txt list: the paths under their common folder
        root = Path(os.path.commonpath(local)) if len(local) > 1 else (local[0].parent if local else Path("."))
    root = Path(os.path.abspath(root))
    names, seen, paths = [], {}, iter(local)
    for f in files:
        if isinstance(f, str):
            name = Path(urllib.parse.urlsplit(f).path).stem or "image"
        else:
            p = next(paths)
            rel = p.relative_to(root) if p.is_relative_to(root) else Path(p.name)
            name = "__".join(rel.with_suffix("").parts)
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return names


def read_url_image(url: str) -> np.ndarray:
    """An image fetched over http(s) and decoded, as ``[H, W, 3]`` uint8 BGR; an ImageReadError says why not."""
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            data = np.frombuffer(response.read(), np.uint8)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ImageReadError(f"cannot fetch {url}: {getattr(e, 'reason', e)}") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ImageReadError(f"cannot decode the image at {url}")
    return img


def _image_batches(source: Source, batch: int, skipped: list[str], show_progress: bool) -> Iterator[list[Frame]]:
    files = source.files
    names = _image_names(files, source.path)
    bar = progress(total=len(files), desc="images", unit="img", enabled=len(files) > 1 and show_progress)
    index = 0
    try:
        for start in range(0, len(files), batch):
            out = []
            for f, name in zip(files[start:start + batch], names[start:start + batch], strict=True):
                try:
                    img = read_url_image(f) if isinstance(f, str) else read_image(f)
                except ImageReadError as e:
                    skipped.append(str(f))
                    tqdm.write(f"skipped {f}: {e}", file=sys.stderr)
                    continue
                index += 1
                suffix = Path(urllib.parse.urlsplit(f).path if isinstance(f, str) else f).suffix or ".jpg"
                out.append(Frame(img, name, suffix, index=index, path=str(f)))
            bar.update(len(files[start:start + batch]))
            if out:
                yield out
    finally:
        bar.close()


def _open(source: Source) -> cv2.VideoCapture:
    what = source.camera if source.kind == "webcam" else (source.url or str(source.path))
    return cv2.VideoCapture(what)


def _stream_batches(source: Source, batch: int, show_progress: bool,
                    wait: Callable[[float], None]) -> Iterator[list[Frame]]:
    """A video (file or URL), a live stream or a webcam through OpenCV, frame by frame. A video ends where its
    frames end; a live stream or a webcam that stops giving frames is opened again up to STREAM_RETRIES times
    (1, 2, 4 s apart), then it is a SourceError (the frames read before it have been yielded)."""
    label = f"webcam {source.camera}" if source.kind == "webcam" else (source.url or str(source.path))
    cap = _open(source)
    if not cap.isOpened():
        raise SourceError(f"cannot open {label}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    fps = fps if 0 < fps < 1000 else 30.0  # some streams report 0 or 90000
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if source.kind == "video" else 0
    if source.kind == "webcam":
        stem = f"webcam{source.camera}"
    else:
        stem = Path(urllib.parse.urlsplit(source.url).path).stem if source.url else source.path.stem
        stem = stem or "stream"
    live = source.kind in ("stream", "webcam")
    bar = progress(total=max(total, 0) or None, desc=stem, unit="frame", enabled=show_progress)
    index, tries = 0, 0
    try:
        while True:
            out = []
            while len(out) < batch:
                ok, img = cap.read()
                if not ok:
                    break
                tries = 0  # frames again: a later drop gets its full tries
                index += 1
                out.append(Frame(img, f"{stem}_{index}", stream=stem, fps=fps, index=index))
            if out:
                bar.update(len(out))
                yield out
                continue
            if not live:
                return
            if tries == STREAM_RETRIES:
                raise SourceError(f"{label} stopped giving frames and did not come back after {STREAM_RETRIES} "
                                  f"tries; the {index} frames before are kept")
            cap.release()
            wait(2.0 ** tries)
            tries += 1
            tqdm.write(f"{label} dropped; opening it again (try {tries} of {STREAM_RETRIES})", file=sys.stderr)
            cap = _open(source)
    finally:
        bar.close()
        cap.release()
