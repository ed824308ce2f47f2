"""utils/plots.py: the batch pictures leave out an image that does not decode, instead of ending a run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from utils.plots import save_batch_pictures


def test_an_undecodable_image_is_left_out_of_the_batch_pictures(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((50, 60, 3), 200, np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    records = [SimpleNamespace(path=str(tmp_path / n), boxes=np.array([[1.0, 1, 20, 20]]), labels=np.array([0]))
               for n in ("a.jpg", "b.jpg")]
    dets = [np.array([[2.0, 2, 18, 18, 0.9, 0]]), np.zeros((0, 6))]
    paths = save_batch_pictures(records, dets, ["box"], tmp_path)
    assert [p.name for p in paths] == ["val_batch0_labels.jpg", "val_batch0_pred.jpg"]
    grid = cv2.imread(str(paths[1]))
    assert grid.shape == (160, 4 * 160, 3)  # one row of four cells of 160 px: one image drawn, three left white
    assert grid[:, 170:].min() > 240  # white (JPEG blurs the edge of the drawn cell a little)
