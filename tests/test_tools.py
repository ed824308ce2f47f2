"""tools/: dataset report, anchors by k-means, the shapes maker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools import check_dataset, kmeans_anchors, make_shapes, make_splits
from tools.kmeans_anchors import anchor_fitness, kmeans_iou
from utils.boxes import shape_iou_np
from utils.config.files import read_classes
from utils.data.voc import load_voc_split

SMALL = ["shapes.num_train=30", "shapes.num_val=6", "shapes.num_test=0"]


def test_kmeans_recovers_clusters_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[10, 14], [40, 30], [120, 200]], float)
    wh = np.concatenate([c * rng.uniform(0.9, 1.1, (200, 2)) for c in centres])
    a = kmeans_iou(wh, 3, seed=1)
    np.testing.assert_allclose(a, centres, rtol=0.05)
    np.testing.assert_array_equal(a, kmeans_iou(wh, 3, seed=1))
    with pytest.raises(ValueError, match="at least 9 boxes"):
        kmeans_iou(wh[:5], 9)


def test_fitness_by_hand() -> None:
    # 10x20 vs anchors 20x10 (IoU 100/300 = 1/3) and 10x10 (IoU 100/200 = 1/2): best 1/2;
    # 10x10 vs 20x10 (100/200 = 1/2) and 10x10 (1): best 1. Mean (0.5 + 1) / 2 = 0.75; recall at 0.5: both.
    wh = np.array([[10, 20], [10, 10]], float)
    anchors = np.array([[20, 10], [10, 10]], float)
    np.testing.assert_allclose(shape_iou_np(wh, anchors), [[1 / 3, 0.5], [0.5, 1.0]])
    assert anchor_fitness(wh, anchors, 0.5) == (pytest.approx(0.75), 1.0)
    assert anchor_fitness(wh, anchors, 0.6) == (pytest.approx(0.75), 0.5)


def test_kmeans_tool_on_the_shapes_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "anchors.txt"
    assert kmeans_anchors.main(["--config", "shapes.yaml", f"data.root={tmp_path}", *SMALL,
                                "model.anchors_path=model_data/yolo_anchors.txt", "--out", str(out),
                                "--json", str(tmp_path / "k.json")]) == 0
    result = json.loads((tmp_path / "k.json").read_text())
    assert len(result["anchors"]) == 9 and result["boxes"] > 30  # yolov4-tiny-3l, the demo's model: 9 anchors
    assert result["mean_iou"] >= result["current_mean_iou"]  # fitted to the data, never worse here
    written = [int(v) for v in out.read_text().replace(",", " ").split()]
    assert written == [v for pair in result["anchors"] for v in pair]
    assert "best possible recall" in capsys.readouterr().out


def test_check_dataset_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert check_dataset.main(["--config", "shapes.yaml", f"data.root={tmp_path}", *SMALL,
                               "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "made the synthetic shapes set" in text and "imbalance: commonest / rarest class" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["train"]["images"] == 30 and sum(report["train"]["per_class"].values()) == report["train"]["objects"]
    # a config pointing at nothing is one clear error, not a traceback
    assert check_dataset.main(["--config", "voc.yaml", f"data.root={tmp_path / 'none'}"]) == 1
    assert "split list not found" in capsys.readouterr().err


def test_make_shapes_tool(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert make_shapes.main(["--config", "shapes.yaml", f"data.root={tmp_path}", "shapes.name=T05", "shapes.tail=0.5",
                             *SMALL]) == 0
    assert (tmp_path / "T05" / "ImageSets" / "Main" / "train.txt").read_text().count("\n") == 30
    assert "tail 0.5" in capsys.readouterr().out


def _a_users_dataset(root: Path) -> dict[Path, bytes]:
    """A VOC-like folder with files that the generator did not make; returns each file's bytes."""
    files = {root / "VOC2007" / "Annotations" / "000001.xml": b"<annotation/>",
             root / "VOC2007" / "JPEGImages" / "000001.jpg": b"\xff\xd8 not really a jpeg",
             root / "README.md": b"my notes"}
    for p, data in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


@pytest.mark.parametrize("name", ["VOC2007", ""])
def test_make_shapes_never_deletes_a_users_folder(tmp_path: Path, capsys: pytest.CaptureFixture, name: str) -> None:
    # shapes.name=VOC2007 points at a real dataset; shapes.name= (an unset shell variable) at data.root itself
    files = _a_users_dataset(tmp_path)
    try:  # a config error ends the tool with SystemExit("error: ..."), a data error returns 1 after printing it
        status = make_shapes.main(["--config", "shapes.yaml", f"data.root={tmp_path}", f"shapes.name={name}", *SMALL])
        err = capsys.readouterr().err
    except SystemExit as e:
        status, err = 2, f"{e.code}\n"
    assert status != 0
    assert err.startswith("error:") and err.count("\n") == 1, err
    assert ("VOC2007" in err and "not made by the shapes generator" in err) if name else "shapes.name" in err
    for p, data in files.items():
        assert p.read_bytes() == data, p
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(files)


def test_make_shapes_refuses_a_foreign_folder_even_when_named_by_a_valid_name(tmp_path: Path) -> None:
    # the library call, below any config check: a folder without the generator's marker is never emptied
    from utils.config.files import read_classes
    from utils.config.load import load_config
    from utils.data.synthetic import ShapesFolderError
    from utils.data.synthetic import make_shapes as make

    files = _a_users_dataset(tmp_path)
    cfg = load_config("shapes.yaml", SMALL)
    with pytest.raises(ShapesFolderError, match="VOC2007 exists and was not made by the shapes generator"):
        make(tmp_path / "VOC2007", read_classes(cfg.data.classes_path), cfg.shapes)
    with pytest.raises(ShapesFolderError, match="README.md is a file"):
        make(tmp_path / "README.md", read_classes(cfg.data.classes_path), cfg.shapes)
    assert all(p.read_bytes() == data for p, data in files.items())


def test_make_shapes_replaces_its_own_folder_and_fills_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "EMPTY").mkdir()
    assert make_shapes.main(["--config", "shapes.yaml", f"data.root={tmp_path}", "shapes.name=EMPTY", *SMALL]) == 0
    own = tmp_path / "EMPTY"
    (own / "JPEGImages" / "stale.jpg").write_bytes(b"from an earlier set")
    assert make_shapes.main(["--config", "shapes.yaml", f"data.root={tmp_path}", "shapes.name=EMPTY",
                             "shapes.num_train=5", "shapes.num_val=2", "shapes.num_test=0"]) == 0
    assert not (own / "JPEGImages" / "stale.jpg").exists()  # its own folder was replaced whole
    assert (own / "ImageSets" / "Main" / "train.txt").read_text().count("\n") == 5


def test_a_set_cut_short_is_still_the_generators_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # killed half-way (here: the third image write fails), the folder keeps its marker, so the next run remakes it
    import cv2

    from utils.config.files import read_classes
    from utils.config.load import load_config
    from utils.data import synthetic as shapes

    cfg = load_config("shapes.yaml", [f"data.root={tmp_path}", *SMALL])
    classes = read_classes(cfg.data.classes_path)
    real, calls = cv2.imwrite, []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(cv2, "imwrite", failing)
    with pytest.raises(KeyboardInterrupt):
        shapes.ensure_shapes(cfg, classes)
    monkeypatch.setattr(cv2, "imwrite", real)
    assert shapes.ensure_shapes(cfg, classes) == tmp_path / "SHAPES"
    assert (tmp_path / "SHAPES" / "ImageSets" / "Main" / "train.txt").read_text().count("\n") == 30


def test_objectness_histograms_of_two_models(tmp_path: Path) -> None:
    # two models whose objectness is a constant (the head's objectness weights zeroed, its bias set): every
    # positive and kept negative scores sigmoid(bias), so the medians and shares are known by hand
    import math

    import torch

    from nets.yolo import build_model
    from tools import objectness_hist
    from utils.checkpoint import ModelCard, save_model
    from utils.config.files import read_anchors
    from utils.config.load import load_config

    cfg = load_config("shapes.yaml", [f"data.root={tmp_path / 'data'}", "model.input_size=128", *SMALL])
    paths = []
    for name, bias in (("low", -3.0), ("high", 1.0)):
        model = build_model("yolov4-tiny", 6)
        with torch.no_grad():
            for conv in model.head.convs:
                conv.weight.view(3, 11, -1)[:, 4] = 0.0
                conv.bias.view(3, 11)[:, 4] = bias
        path = tmp_path / name / "best.pt"
        save_model(path, ModelCard("yolov4-tiny", ["circle", "square", "triangle", "diamond", "cross", "ring"],
                                   read_anchors(cfg.model.anchors_path), 128, cfg.to_dict()), model.state_dict())
        paths.append(str(path))
    from utils.config.files import read_classes
    from utils.data.synthetic import ensure_shapes

    ensure_shapes(cfg, read_classes(cfg.data.classes_path))
    out = tmp_path / "hist.png"
    assert objectness_hist.main(["--weights", *paths, "--labels", "low", "high", "--out", str(out)]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["low"]["positives"] == summary["high"]["positives"] > 0  # the same assignment for both
    assert summary["low"]["positive_median"] == pytest.approx(1 / (1 + math.exp(3.0)), abs=1e-6)  # 0.0474
    assert summary["high"]["positive_median"] == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-6)  # 0.7311
    assert summary["high"]["negative_share_above_0.5"] == 1.0 and summary["low"]["negative_share_above_0.1"] == 0.0
    assert out.stat().st_size > 5000


def test_make_splits_from_a_folder_of_xmls_and_images(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # the shapes set made as a user's folder: its XMLs and images, without its lists, plus four bad pairs
    assert make_shapes.main([f"data.root={tmp_path}", "shapes.name=MYDATA", "shapes.num_train=40", "shapes.num_val=10",
                             "shapes.num_test=0"]) == 0
    root = tmp_path / "MYDATA"
    for p in (root / "ImageSets" / "Main").glob("*"):
        p.unlink()
    (root / "shapes.json").unlink()
    ann, img = root / "Annotations", root / "JPEGImages"
    good = sorted(p.stem for p in ann.glob("*.xml"))
    (ann / "broken.xml").write_text("<annotation><object>")  # malformed, with an image
    (img / "broken.jpg").write_bytes((img / f"{good[0]}.jpg").read_bytes())
    (ann / "lonely.xml").write_text((ann / f"{good[0]}.xml").read_text())  # no image
    (img / "orphan.jpg").write_bytes((img / f"{good[0]}.jpg").read_bytes())  # no XML
    (ann / "cut.xml").write_text((ann / f"{good[0]}.xml").read_text())
    (img / "cut.jpg").write_bytes((img / f"{good[0]}.jpg").read_bytes()[:300])  # a truncated JPEG
    assert make_splits.main(["--root", str(root), "--val", "0.2", "--test", "0.1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    lists = {s: (root / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in make_splits.SPLITS}
    # 50 usable: test round(5.0) = 5, val 10, train 35
    assert {s: len(v) for s, v in lists.items()} == {"train": 35, "val": 10, "trainval": 45, "test": 5}
    assert sorted(lists["train"] + lists["val"] + lists["test"]) == good  # disjoint, and every usable id once
    assert sorted(lists["trainval"]) == sorted(lists["train"] + lists["val"])
    for kind in ("malformed XML: 1", "no image: 1", "no XML: 1", "unreadable image: 1"):
        assert f"skipped, {kind}" in out
    # never overwritten without --force; with it, the same seed gives the same lists
    assert make_splits.main(["--root", str(root)]) == 1
    assert "--force replaces them" in capsys.readouterr().err
    assert (root / "ImageSets" / "Main" / "val.txt").read_text().split() == lists["val"]
    assert make_splits.main(["--root", str(root), "--val", "0.2", "--test", "0.1", "--seed", "3", "--force"]) == 0
    assert (root / "ImageSets" / "Main" / "val.txt").read_text().split() == lists["val"]
    # the lists train: the reader takes them as they are
    records, report = load_voc_split(tmp_path, "MYDATA/train", read_classes("model_data/shapes_classes.txt"))
    assert len(records) == 35 and not report
