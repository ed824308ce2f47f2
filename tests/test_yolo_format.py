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
    from tests.scenes import rect_records
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


def test_label_lines_each_reported_with_its_number(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images/a.png"), np.zeros((10, 20, 3), np.uint8))
    (root / "labels/a.txt").write_text(
        "\n"                            # 1: blank, skipped silently
        "2 0.5 0.5 0.2 0.2\n"           # 2: class 2 of classes 0..1
        "0 0.5 0.5 0.2 0.2 0.9\n"       # 3: six fields (a segment or a score), not a box
        "0 0.5 0.5 inf 0.2\n"           # 4: not finite
        "1\n"                           # 5: too few
        "1 0.25 0.5 0.5 1\n")           # 6: the one good line, after the bad ones -> x 0..10, y 0..10
    (root / "data.yaml").write_text("train: images\nnames: [a, b]\n")
    records, report = load_yolo_split(root, "train", ["a", "b"])
    np.testing.assert_allclose(records[0].boxes, [[0, 0, 10, 10]])
    assert records[0].labels.tolist() == [1] and records[0].image_id == "images/a"
    assert report.problems[UNKNOWN_CLASS] == ["a.txt:2: class 2"]
    assert report.problems[BAD_COORDS] == ["a.txt:3", "a.txt:4", "a.txt:5"]


def test_splits_as_lists_text_files_and_a_path_key(tmp_path: Path) -> None:
    root = tmp_path / "d"
    data = root / "data"  # the yaml's path: key points here
    for sub in ("images/a", "images/b", "labels/a", "labels/b"):
        (data / sub).mkdir(parents=True)
    for name in ("a/1.jpg", "a/2.jpg", "b/3.jpg"):
        cv2.imwrite(str(data / "images" / name), np.zeros((8, 8, 3), np.uint8))
    outside = tmp_path / "elsewhere" / "images"
    outside.mkdir(parents=True)
    cv2.imwrite(str(outside / "4.jpg"), np.zeros((8, 8, 3), np.uint8))
    (data / "list.txt").write_text(f"images/b/3.jpg\n\n  {outside / '4.jpg'}  \n")  # relative to path:, absolute
    (root / "data.yaml").write_text("path: data\ntrain: [images/a, list.txt]\nval: images/b\nnames: [x]\n")
    records, _ = load_yolo_split(root / "data.yaml", "train", ["x"])
    assert [r.path for r in records] == [str(data / "images/a/1.jpg"), str(data / "images/a/2.jpg"),
                                         str(data / "images/b/3.jpg"), str(outside / "4.jpg")]
    assert [r.image_id for r in records] == ["images/a/1", "images/a/2", "images/b/3", "4"]  # outside: the stem


def test_the_data_yaml_errors_say_what_is_wrong(tmp_path: Path) -> None:
    from utils.data.yolo import read_data_yaml

    (tmp_path / "images").mkdir()
    yaml_path = tmp_path / "data.yaml"
    with pytest.raises(DataError, match=rf"^data.root = {tmp_path}: cannot read the YOLO data.yaml \(.*No such file"):
        read_data_yaml(tmp_path)
    for text in ("train: images\n", "- names\n", "names: [a\n"):
        yaml_path.write_text(text)
        with pytest.raises(DataError, match="needs at least 'names' and the split keys|cannot read the YOLO data.yaml"):
            read_data_yaml(yaml_path)
    yaml_path.write_text("train: images\nval: nowhere\nnames: {0: a, 1: b}\n")
    assert read_data_yaml(yaml_path) == (tmp_path.resolve(), {"train": "images", "val": "nowhere",
                                                              "names": {0: "a", 1: "b"}})
    with pytest.raises(DataError, match=r"the data.yaml's names \(a, b\) differ from data.classes_path's \(b, a\)$"):
        load_yolo_split(yaml_path, "train", ["b", "a"])
    with pytest.raises(DataError, match=r"no split 'test' in the data.yaml \(it has train, val\)$"):
        load_yolo_split(yaml_path, "test", ["a", "b"])
    with pytest.raises(DataError, match=rf"^YOLO split 'nowhere': {tmp_path / 'nowhere'} is neither a folder of images "
                                        r"nor a .txt list$"):
        load_yolo_split(yaml_path, "val", ["a", "b"])
    (tmp_path / "notes.md").write_text("images/1.jpg\n")  # a file, but not a .txt list
    yaml_path.write_text("val: notes.md\nnames: [a, b]\n")
    with pytest.raises(DataError, match="notes.md is neither a folder of images nor a .txt list"):
        load_yolo_split(yaml_path, "val", ["a", "b"])


def test_written_dataset_copies_where_links_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from utils.data.records import Record
    from utils.data.yolo import write_yolo_dataset

    image = tmp_path / "src" / "p.jpg"
    image.parent.mkdir()
    cv2.imwrite(str(image), np.full((20, 40, 3), 90, np.uint8))
    rec = Record("p", str(image), 40, 20, np.array([[4, 2, 24, 12]], np.float32), np.array([1]), np.array([False]))

    def refuse(self, target):
        raise OSError("no links here")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    (tmp_path / "out").mkdir()  # an empty folder is fine
    data_yaml = write_yolo_dataset({"val": [rec], "train": [rec]}, ["a", "b"], tmp_path / "out")
    copy = tmp_path / "out/images/val/p.jpg"
    assert not copy.is_symlink() and copy.read_bytes() == image.read_bytes()
    # cx = 14/40, cy = 7/20, w = 20/40, h = 10/20
    assert (tmp_path / "out/labels/train/p.txt").read_text() == "1 0.350000 0.350000 0.500000 0.500000\n"
    assert data_yaml.read_text().splitlines()[1:] == ["val: images/val", "train: images/train", "names:", "- a", "- b"]
    assert yaml.safe_load(data_yaml.read_text())["path"] == str((tmp_path / "out").resolve())
