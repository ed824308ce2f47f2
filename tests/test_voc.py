"""utils/data/ (records, images, voc, coco, splits): VOC parsing, coordinates, the cache, and every kind of bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.config.load import load_config
from utils.data import records as voc
from utils.data.coco import load_coco_split
from utils.data.images import read_image
from utils.data.records import DataError
from utils.data.splits import load_records
from utils.data.voc import load_voc_split

CLASSES = ["cat", "dog"]


def obj(name: str, xmin, ymin, xmax, ymax, difficult: int = 0) -> str:
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def xml(objects: list[str], size: tuple[int, int] | None = (64, 48)) -> str:
    s = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>x.jpg</filename>{s}{''.join(objects)}</annotation>"


def make_voc(root: Path, entries: dict[str, tuple[str | None, np.ndarray | bytes | None]], split: str = "train",
             ids: list[str] | None = None) -> Path:
    """``entries``: id -> (xml text or None, image array / raw bytes / None) in root/DS."""
    base = root / "DS"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for image_id, (text, image) in entries.items():
        if text is not None:
            (base / "Annotations" / f"{image_id}.xml").write_text(text)
        if isinstance(image, bytes):
            (base / "JPEGImages" / f"{image_id}.jpg").write_bytes(image)
        elif image is not None:
            cv2.imwrite(str(base / "JPEGImages" / f"{image_id}.jpg"), image)
    (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in (ids or list(entries))))
    return root


def img(w: int = 64, h: int = 48, value: int = 90) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def data_cfg(root: Path, *extra: str):
    return load_config("shapes.yaml", [f"data.root={root}", "data.synthetic=false", *extra]).data


def load(root: Path, split: str = "DS/train", cache: bool = False):
    return load_voc_split(root, split, CLASSES, cache=cache)


def test_coordinates_become_zero_based_extents(tmp_path: Path) -> None:
    # VOC's xmin=11..xmax=30 covers pixels 11..30 (1-based) -> x1 = 10, x2 = 30 (0-based extent)
    make_voc(tmp_path, {"a": (xml([obj("dog", 11, 6, 30, 20), obj("cat", 1, 1, 64, 48, difficult=1)]), img())})
    (rec,), report = load(tmp_path)
    assert not report
    np.testing.assert_array_equal(rec.boxes, [[10, 5, 30, 20], [0, 0, 64, 48]])
    assert rec.labels.tolist() == [1, 0] and rec.difficult.tolist() == [False, True]
    assert (rec.width, rec.height) == (64, 48)


def test_missing_image(tmp_path: Path) -> None:
    make_voc(tmp_path, {"a": (xml([obj("cat", 2, 2, 20, 20)]), img()), "b": (xml([]), None)})
    recs, report = load(tmp_path)
    assert [r.image_id for r in recs] == ["a"]
    assert report.count(voc.MISSING_IMAGE) == 1 and "b" in report.problems[voc.MISSING_IMAGE][0]


def test_missing_annotation(tmp_path: Path) -> None:
    make_voc(tmp_path, {"a": (None, img())})
    recs, report = load(tmp_path)
    assert recs == [] and report.count(voc.MISSING_XML) == 1


@pytest.mark.parametrize("kind", ["zero_byte", "truncated", "garbage"])
def test_unreadable_images_are_skipped(tmp_path: Path, kind: str) -> None:
    ok, jpg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    data = {"zero_byte": b"", "truncated": jpg.tobytes()[: len(jpg) // 2], "garbage": b"not an image at all"}[kind]
    make_voc(tmp_path, {"bad": (xml([obj("cat", 2, 2, 20, 20)]), data), "good": (xml([obj("cat", 2, 2, 20, 20)]), img())})
    recs, report = load(tmp_path)
    assert [r.image_id for r in recs] == ["good"]
    assert report.count(voc.UNREADABLE_IMAGE) == 1 and "bad.jpg" in report.problems[voc.UNREADABLE_IMAGE][0]


def test_png_saved_as_jpg_is_kept_and_reported(tmp_path: Path) -> None:
    ok, png = cv2.imencode(".png", img(value=200))
    make_voc(tmp_path, {"p": (xml([obj("cat", 2, 2, 20, 20)]), png.tobytes())})
    (rec,), report = load(tmp_path)
    assert report.count(voc.WRONG_EXTENSION) == 1
    assert read_image(rec.path).shape == (48, 64, 3)


@pytest.mark.parametrize("mode", ["gray", "rgba", "16bit"])
def test_gray_rgba_and_16_bit_images_become_8_bit_bgr(tmp_path: Path, mode: str) -> None:
    if mode == "gray":
        image, ext = np.full((48, 64), 77, np.uint8), ".jpg"
    elif mode == "rgba":
        image, ext = np.dstack([img(value=77), np.full((48, 64), 255, np.uint8)]), ".png"
    else:
        image, ext = np.full((48, 64, 3), 65535, np.uint16), ".png"
    ok, enc = cv2.imencode(ext, image)
    base = make_voc(tmp_path, {"m": (xml([obj("cat", 2, 2, 20, 20)]), None)}) / "DS"
    (base / "JPEGImages" / f"m{ext}").write_bytes(enc.tobytes())
    (rec,), report = load(tmp_path)
    out = read_image(rec.path)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    expected = 255 if mode == "16bit" else 77
    assert abs(int(out.mean()) - expected) <= 2
    assert not report


def test_malformed_xml(tmp_path: Path) -> None:
    make_voc(tmp_path, {"m": ("<annotation><object><name>cat</nam", img()), "ok": (xml([]), img())})
    recs, report = load(tmp_path)
    assert [r.image_id for r in recs] == ["ok"] and report.count(voc.MALFORMED_XML) == 1


def test_xml_without_size_takes_it_from_the_image(tmp_path: Path) -> None:
    make_voc(tmp_path, {"s": (xml([obj("cat", 2, 2, 20, 20)], size=None), img(80, 40))})
    (rec,), report = load(tmp_path)
    assert (rec.width, rec.height) == (80, 40) and report.count(voc.NO_SIZE) == 1


def test_size_mismatch_uses_the_image(tmp_path: Path) -> None:
    make_voc(tmp_path, {"s": (xml([obj("cat", 2, 2, 20, 20)], size=(500, 400)), img(64, 48))})
    (rec,), report = load(tmp_path)
    assert (rec.width, rec.height) == (64, 48) and report.count(voc.SIZE_MISMATCH) == 1


def test_unknown_class_drops_the_object_not_the_image(tmp_path: Path) -> None:
    make_voc(tmp_path, {"u": (xml([obj("horse", 2, 2, 20, 20), obj("dog", 3, 3, 30, 30)]), img())})
    (rec,), report = load(tmp_path)
    assert rec.labels.tolist() == [1] and report.count(voc.UNKNOWN_CLASS) == 1 and "'horse'" in report.summary()


def test_degenerate_and_outside_boxes(tmp_path: Path) -> None:
    objs = [obj("cat", 20, 5, 20, 30),  # xmin >= xmax after the -1: 19..20 is 1 px wide -> kept
            obj("cat", 30, 5, 10, 30),  # xmin > xmax -> empty -> dropped
            obj("cat", -10, -5, 30, 30),  # partly outside -> clipped
            obj("dog", 100, 100, 120, 130)]  # wholly outside -> empty after clipping -> dropped
    make_voc(tmp_path, {"d": (xml(objs), img())})
    (rec,), report = load(tmp_path)
    np.testing.assert_array_equal(rec.boxes, [[19, 4, 20, 30], [0, 0, 30, 30]])
    assert report.count(voc.EMPTY_BOX) == 2 and report.count(voc.CLIPPED_BOX) == 1


@pytest.mark.parametrize("bad", ["nan", "abc", ""])
def test_nan_or_text_coordinates(tmp_path: Path, bad: str) -> None:
    make_voc(tmp_path, {"n": (xml([obj("cat", bad, 2, 20, 20), obj("dog", 2, 2, 20, 20)]), img())})
    (rec,), report = load(tmp_path)
    assert rec.labels.tolist() == [1] and report.count(voc.BAD_COORDS) == 1


def test_empty_split_file(tmp_path: Path) -> None:
    make_voc(tmp_path, {}, ids=[])
    recs, report = load(tmp_path)
    assert recs == [] and report.count(voc.EMPTY_SPLIT) == 1
    with pytest.raises(DataError, match="no usable images"):
        load_records(data_cfg(tmp_path, "data.train_splits=[DS/train]"), ["DS/train"], CLASSES)


def test_id_listed_twice(tmp_path: Path) -> None:
    make_voc(tmp_path, {"a": (xml([obj("cat", 2, 2, 20, 20)]), img())}, ids=["a", "a"])
    recs, report = load(tmp_path)
    assert len(recs) == 1 and report.count(voc.DUPLICATE_ID) == 1


def test_missing_split_list_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split list not found: .*VOC2007/ImageSets/Main/trainval.txt"):
        load_voc_split(tmp_path, "VOC2007/trainval", CLASSES)
    with pytest.raises(DataError, match="FOLDER/split"):
        load_voc_split(tmp_path, "trainval", CLASSES)


def test_summary_names_kinds_counts_and_first_files(tmp_path: Path) -> None:
    entries = {f"m{i}": ("<annotation", img()) for i in range(5)}
    entries["ok"] = (xml([obj("cat", 2, 2, 20, 20)]), img())
    make_voc(tmp_path, entries)
    _, report = load(tmp_path)
    text = report.summary()
    assert "malformed XML: 5 (m0.xml" in text and "; ..." in text


def test_strict_turns_problems_into_an_error(tmp_path: Path) -> None:
    make_voc(tmp_path, {"u": (xml([obj("horse", 2, 2, 20, 20)]), img()), "ok": (xml([obj("cat", 2, 2, 9, 9)]), img())})
    recs, report = load_records(data_cfg(tmp_path), ["DS/train"], CLASSES)
    assert len(recs) == 2 and report.count(voc.UNKNOWN_CLASS) == 1
    with pytest.raises(DataError, match="(?s)data.strict is on.*unknown class name"):
        load_records(data_cfg(tmp_path, "data.strict=true"), ["DS/train"], CLASSES)


def test_cache_is_used_and_rebuilt_when_a_file_changes(tmp_path: Path) -> None:
    root = make_voc(tmp_path, {"a": (xml([obj("cat", 2, 2, 20, 20)]), img())})
    recs, _ = load(root, cache=True)
    cache_file = root / "DS" / "ImageSets" / "Main" / "train.cache.json"
    assert cache_file.is_file()
    # a cache with the right key is trusted: prove it by editing its content
    data = json.loads(cache_file.read_text())
    data["records"][0]["labels"] = [1]
    cache_file.write_text(json.dumps(data))
    assert load(root, cache=True)[0][0].labels.tolist() == [1]
    # changing the XML (new mtime and size) rebuilds it
    xml_file = root / "DS" / "Annotations" / "a.xml"
    xml_file.write_text(xml([obj("cat", 2, 2, 20, 20), obj("dog", 5, 5, 25, 25)]))
    os.utime(xml_file, ns=(1, 10**18))
    (rec,), _ = load(root, cache=True)
    assert rec.labels.tolist() == [0, 1]
    cache_file.write_text("{broken")
    assert load(root, cache=True)[0][0].labels.tolist() == [0, 1]


def test_a_cache_read_through_another_root_gives_paths_that_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_voc(tmp_path / "data", {"a": (xml([obj("cat", 2, 2, 20, 20)]), img())})
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    (rec,), _ = load(Path("data"), cache=True)  # the cache is written through the root "data"
    assert Path(rec.path).is_file()
    monkeypatch.chdir(tmp_path / "sub")  # the same dataset, another working directory and relative root
    (rec,), _ = load(Path("../data"), cache=True)
    assert Path(rec.path).is_file() and rec.path == str(Path("../data/DS/JPEGImages/a.jpg"))


def test_the_cache_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_voc(tmp_path, {"a": (xml([obj("cat", 2, 2, 20, 20)]), img())})
    load(root, cache=True)
    cache_file = root / "DS" / "ImageSets" / "Main" / "train.cache.json"
    before = cache_file.read_bytes()
    (root / "DS" / "Annotations" / "a.xml").write_text(xml([obj("dog", 2, 2, 20, 20)]))  # a new key
    real = Path.write_text

    def disk_full(self, text, *a, **k):  # half the text reaches the disk, then the write fails
        real(self, text[: len(text) // 2], *a, **k)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    (rec,), _ = load(root, cache=True)
    monkeypatch.undo()
    assert rec.labels.tolist() == [1]  # the records are right; only the cache was not written
    assert cache_file.read_bytes() == before  # the old cache is whole (and its key no longer matches)
    assert sorted(p.name for p in cache_file.parent.iterdir()) == ["train.cache.json", "train.txt"]


def test_only_the_writing_rank_writes_the_cache(tmp_path: Path) -> None:
    root = make_voc(tmp_path, {"a": (xml([obj("cat", 2, 2, 20, 20)]), img())})
    cfg = data_cfg(root)
    load_records(cfg, ["DS/train"], CLASSES, write_cache=False)  # the ranks of a distributed run but the first
    assert not (root / "DS" / "ImageSets" / "Main" / "train.cache.json").exists()
    load_records(cfg, ["DS/train"], CLASSES)
    assert (root / "DS" / "ImageSets" / "Main" / "train.cache.json").is_file()


def test_coco_reader_maps_ids_and_marks_crowd(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    cv2.imwrite(str(tmp_path / "val2017" / "1.jpg"), img())
    ann = {"images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48},
                      {"id": 2, "file_name": "missing.jpg", "width": 64, "height": 48}],
           "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
           "annotations": [{"image_id": 1, "category_id": 18, "bbox": [10, 5, 20, 15], "iscrowd": 0},
                           {"image_id": 1, "category_id": 17, "bbox": [0, 0, 64, 48], "iscrowd": 1}]}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(ann))
    recs, report = load_coco_split(tmp_path, "val2017", CLASSES)
    (rec,) = recs
    np.testing.assert_array_equal(rec.boxes, [[10, 5, 30, 20], [0, 0, 64, 48]])
    assert rec.labels.tolist() == [1, 0] and rec.difficult.tolist() == [False, True]
    assert report.count(voc.MISSING_IMAGE) == 1
