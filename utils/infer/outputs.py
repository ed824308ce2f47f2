"""What predict.py writes for each frame, in its run folder: the drawn image (or the frame into ``<stream>.mp4``),
label files, crops, and the rows of ``predictions.json``.

- ``labels/<name>.txt`` (``--save-txt``): YOLO format, a line ``class cx cy w h`` per box, normalized by the
  image's width and height (``--save-conf`` appends the score), as YOLO-format datasets and Ultralytics write;
- ``labels_voc/<name>.txt`` (``--save-txt-voc``): ``name score x1 y1 x2 y2`` in the image's pixels, the
  detection-results form that VOC mAP tools read;
- ``crops/<class>/<name>_<k>.jpg`` (``--save-crop``): each box cut from the original image;
- ``predictions.json`` (``--save-json``): COCO results (``category_id`` = class + 1, ``bbox`` [x, y, w, h])."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from utils.infer.draw import draw_detections, overlay_heatmap
from utils.infer.sources import Frame


class Outputs:
    """The files of one predict.py run under ``save_dir`` (None: nothing is written)."""

    def __init__(self, save_dir: Path | None, class_names: Sequence[str], images: bool = True, txt: bool = False,
                 conf: bool = False, txt_voc: bool = False, crops: bool = False, json_rows: bool = False) -> None:
        on = save_dir is not None
        self.save_dir, self.names = save_dir, list(class_names)
        self.images, self.txt, self.conf, self.txt_voc = on and images, on and txt, conf, on and txt_voc
        self.crops, self.json = on and crops, on and json_rows
        self.rows: list[dict] = []
        self.writers: dict[str, cv2.VideoWriter] = {}
        for flag, folder in ((self.txt, "labels"), (self.txt_voc, "labels_voc")):
            if flag:
                (save_dir / folder).mkdir(parents=True, exist_ok=True)

    def add(self, frame: Frame, dets: np.ndarray, heat: np.ndarray | None = None, info=None) -> np.ndarray:
        """Write what is asked for one frame's detections ``[K, 6]`` (x1, y1, x2, y2, score, class in its pixels);
        return the frame drawn."""
        rows = dets.tolist()
        if self.txt:
            (self.save_dir / "labels" / f"{frame.name}.txt").write_text(yolo_lines(dets, frame.image.shape, self.conf))
        if self.txt_voc:
            lines = [f"{self.names[int(c)]} {s:.4f} {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}\n" for x1, y1, x2, y2, s, c in rows]
            (self.save_dir / "labels_voc" / f"{frame.name}.txt").write_text("".join(lines))
        if self.crops:
            self._crops(frame, rows)
        if self.json:
            for x1, y1, x2, y2, s, c in rows:
                self.rows.append({"image_id": frame.index, "file_name": frame.name, "category_id": int(c) + 1,
                                  "category": self.names[int(c)],
                                  "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                  "score": round(s, 5)})
        drawn = draw_detections(frame.image, dets, self.names)
        if self.images:
            if frame.stream:
                self._video(frame).write(drawn)
            else:
                cv2.imwrite(str(self.save_dir / f"{frame.name}{frame.suffix}"), drawn)
                if heat is not None:
                    cv2.imwrite(str(self.save_dir / f"{frame.name}_heatmap.jpg"), overlay_heatmap(frame.image, heat, info))
        return drawn

    def _crops(self, frame: Frame, rows: list[list[float]]) -> None:
        """Each box's pixels (rounded outwards, clipped to the image) as crops/<class>/<name>_<k>.jpg."""
        h, w = frame.image.shape[:2]
        for k, (x1, y1, x2, y2, _, c) in enumerate(rows, 1):
            x1, y1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
            x2, y2 = min(int(np.ceil(x2)), w), min(int(np.ceil(y2)), h)
            if x2 <= x1 or y2 <= y1:
                continue
            folder = self.save_dir / "crops" / self.names[int(c)]
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{frame.name}_{k}.jpg"), frame.image[y1:y2, x1:x2])

    def _video(self, frame: Frame) -> cv2.VideoWriter:
        """The mp4 writer of the frame's stream, made at its first frame with the input's size and fps."""
        if frame.stream not in self.writers:
            h, w = frame.image.shape[:2]
            path = self.save_dir / f"{frame.stream}.mp4"
            self.writers[frame.stream] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), frame.fps, (w, h))
        return self.writers[frame.stream]

    def close(self) -> None:
        """Finish the videos and write predictions.json."""
        for writer in self.writers.values():
            writer.release()
        self.writers.clear()
        if self.json:
            (self.save_dir / "predictions.json").write_text(json.dumps(self.rows))


def yolo_lines(dets: np.ndarray, shape: tuple[int, ...], conf: bool = False) -> str:
    """YOLO-format label lines for detections ``[K, 6]`` in an image of ``shape`` (H, W, ...): ``class cx cy w h``
    normalized to 0..1 (``conf``: and the score), numbers written with %g as Ultralytics writes them."""
    h, w = shape[:2]
    out = []
    for x1, y1, x2, y2, s, c in dets.tolist():
        row = [int(c), (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h] + ([s] if conf else [])
        out.append(" ".join(f"{v:g}" for v in row) + "\n")
    return "".join(out)
