"""utils/data/yolo.py: an Ultralytics-style data.yaml with labels/*.txt, boxes against a hand computation, problems."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.config.load import load_config
from utils.data.records import BAD_COORDS, CLIPPED_BOX, UNKNOWN_CLASS, UNREADABLE_IMAGE, DataError
from utils.data.splits import load_records
from utils.data.yolo import label_path, load_yolo_split


def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    for sub in ("images/train", "images/val", "labels/train", "labels/val"):
        (root / sub).mkdir(parents=True)
    cv2.imwrite(str(root / "images/train/a.jpg"), np.zeros((100, 200, 3), np.uint8))  # 200 wide, 100 high
    cv2.imwrite(str(root / "images/train/b.png"), np.zeros((50, 80, 3), np.uint8))
    cv2.imwrite(str(root / "images/val/c.jpg"), np.zeros((64, 64, 3), np.uint8))  # no label file: background
    (root / "images/train/broken.jpg").write_bytes(b"not an image")
    (root / "labels/train/a.txt").write_text(
        "0 0.5 0.5 0.5 0.25\n"   # -> x 50..150, y 37.5..62.5
        "1 0.95 0.1 0.2 0.4\n"   # -> x 170..210 clipped to 200, y -10..30 clipped to 0
        "7 0.5 0.5 0.1 0.1\n"    # no class 7
        "1 0.5 oops 0.1 0.1\n")  # not a number
    (root / "labels/train/b.txt").write_text("1 0.25 0.5 0.5 1.0\n")  # -> x 0..40, y 0..50
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n")
    return root


def test_boxes_labels_and_problems(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    records, report = load_yolo_split(root / "data.yaml", "train", ["cat", "dog"])
    by_id = {r.image_id: r for r in records}
    assert sorted(by_id) == ["images/train/a", "images/train/b"]
    a, b = by_id["images/train/a"], by_id["images/train/b"]
    np.testing.assert_allclose(a.boxes, [[50, 37.5, 150, 62.5], [170, 0, 200, 30]])
    assert a.labels.tolist() == [0, 1] and (a.width, a.height) == (200, 100)
    np.testing.assert_allclose(b.boxes, [[0, 0, 40, 50]])
    for kind in (UNKNOWN_CLASS, BAD_COORDS, CLIPPED_BOX, UNREADABLE_IMAGE):
        assert report.count(kind) == 1, kind
    val, _ = load_yolo_split(root, "val", ["cat", "dog"])  # the folder that holds data.yaml works too
    assert len(val) == 1 and len(val[0].boxes) == 0


def test_the_config_reads_it_and_names_must_agree(tmp_path: Path) -> None:
    root = dataset(tmp_path)
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    cfg = load_config("shapes.yaml", ["data.format=yolo", f"data.root={root / 'data.yaml'}", "data.synthetic=false",
                                      "data.train_splits=[train]", "data.val_splits=[val]", f"data.classes_path={classes}"])
    records, _ = load_records(cfg.data, cfg.data.train_splits, ["cat", "dog"])
    assert len(records) == 2
    with pytest.raises(DataError, match="differ from data.classes_path"):
        load_yolo_split(root, "train", ["dog", "cat"])
    with pytest.raises(DataError, match="no split 'test'"):
        load_yolo_split(root, "test", ["cat", "dog"])


def test_label_path_takes_the_last_images_folder() -> None:
    assert label_path(Path("/d/images/x/images/train/a.jpg")) == Path("/d/images/x/labels/train/a.txt")
    assert label_path(Path("/d/flat/a.png")) == Path("/d/flat/a.txt")


def test_written_yolo_labels_read_back_as_the_records(tmp_path: Path) -> None:
    from tests.test_dataset import rect_records
    from utils.data.yolo import write_yolo_dataset

    (tmp_path / "voc").mkdir()
    records = rect_records(tmp_path / "voc", 4)  # every other image has a difficult third object
    names = [f"c{i}" for i in range(16)]
    data_yaml = write_yolo_dataset({"train": records[:3], "val": records[3:]}, names, tmp_path / "yolo")
    for split, originals in (("train", records[:3]), ("val", records[3:])):
        back, report = load_yolo_split(data_yaml, split, names)
        assert not report and [r.path for r in back] == [str(tmp_path / "yolo" / "images" / split / Path(r.path).name)
                                                                  for r in originals]
        for got, rec in zip(back, originals, strict=True):
            keep = ~rec.difficult  # YOLO labels have no difficult flag: those objects are left out
            assert got.labels.tolist() == rec.labels[keep].tolist() and (got.width, got.height) == (rec.width, rec.height)
            np.testing.assert_allclose(got.boxes, rec.boxes[keep], atol=1e-6 * max(rec.width, rec.height) * 4)
            assert cv2.imread(got.path).shape == cv2.imread(rec.path).shape
    with pytest.raises(FileExistsError, match="not empty"):  # nothing already there is overwritten
        write_yolo_dataset({"train": records}, names, tmp_path / "yolo")
