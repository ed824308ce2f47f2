"""The Python API (detector.py): in-memory arrays, paths and lists in, boxes in the image's own pixels out; the same
detections as predict.py on the same images; train() and evaluate() returning what the CLIs write with --json."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import detector
import eval as eval_cli
import predict as predict_cli
import train as train_cli
from detector import Detections, Detector
from tests.planted import BOX, H, W, image
from tests.trained import val_images
from utils.config.schema import ConfigError
from utils.data.images import ImageReadError
from utils.infer.predictor import PredictError
from utils.infer.sources import SourceError


def test_arrays_paths_folders_and_lists_give_boxes_in_the_images_pixels(tmp_path: Path, planted) -> None:
    model = Detector("planted.pt")
    assert model.class_names[2] == "triangle" and model.img_size == 128 and model.precision == "fp32"
    (r,) = model.predict(image())  # one array: a list of one
    assert isinstance(r, Detections) and len(r) == 1 and r.path is None and r.shape == (H, W)
    np.testing.assert_allclose(r.boxes[0], BOX, atol=0.02)  # the planted box, in the 200 x 120 image's pixels
    assert r.names == ["triangle"] and r.classes.tolist() == [2] and r.scores[0] > 0.99
    assert r.boxes.dtype == r.scores.dtype == np.float32 and r.classes.dtype == np.int64
    np.testing.assert_allclose(r.to_array(), [[*r.boxes[0], r.scores[0], 2.0]])
    # a path, a folder (its images, sorted), arrays, gray and BGRA arrays: one result each, in order
    (tmp_path / "dir").mkdir()
    for name in ("b.png", "a.jpg"):
        cv2.imwrite(str(tmp_path / "dir" / name), image(1))
    cv2.imwrite(str(tmp_path / "one.png"), image(2))
    gray, bgra = cv2.cvtColor(image(), cv2.COLOR_BGR2GRAY), cv2.cvtColor(image(), cv2.COLOR_BGR2BGRA)
    results = model([str(tmp_path / "one.png"), tmp_path / "dir", gray, bgra])
    assert [Path(r.path).name if r.path else None for r in results] == ["one.png", "a.jpg", "b.png", None, None]
    for r in results:
        np.testing.assert_allclose(r.boxes[0], BOX, atol=0.02)
    # batches of 2 give the same as one at a time
    many = [image(i) for i in range(5)]
    assert [r.boxes.tolist() for r in Detector("planted.pt", batch=2).predict(many)] == \
        [r.boxes.tolist() for r in model.predict(many)]
    drawn = r.draw(image())
    assert drawn.shape == (H, W, 3) and not np.array_equal(drawn, image())


def test_filters_and_bad_input_are_clear_errors(tmp_path: Path, planted) -> None:
    assert len(Detector("planted.pt", classes=["circle", 1]).predict(image())[0]) == 0
    assert len(Detector("planted.pt", classes=["triangle"]).predict(image())[0]) == 1
    assert len(Detector("planted.pt", conf=0.999999).predict(image())[0]) == 0
    with pytest.raises(PredictError, match="hexagon"):
        Detector("planted.pt", classes=["hexagon"])
    model = Detector("planted.pt")
    for bad, message in ((3, "got int"), ([image(), 3.5], "holding float"), (np.zeros((H, W, 3), np.float32), "uint8"),
                         (np.zeros((H, W, 2), np.uint8), "shape")):
        with pytest.raises(PredictError, match=message):
            model.predict(bad)
    with pytest.raises(SourceError, match="source not found"):
        model.predict(tmp_path / "missing.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError):  # named alone: an error
        model.predict(tmp_path / "broken.jpg")
    cv2.imwrite(str(tmp_path / "ok.jpg"), image())
    assert len(model.predict(tmp_path)) == 1 and model.skipped == [str(tmp_path / "broken.jpg")]  # in a folder: skipped
    with pytest.raises(PredictError, match="batch"):
        Detector("planted.pt", batch=0)


@pytest.mark.slow
def test_the_api_on_arrays_gives_predict_pys_detections(trained_model: Path, tmp_path: Path) -> None:
    files = sorted((trained_model.parent / "data" / "SHAPES" / "JPEGImages").glob("*.jpg"))[:6]
    model = Detector(trained_model, precision="fp32", conf=0.1)
    results = model.predict(val_images(trained_model, 6))  # in memory: arrays as cv2.imread gives them
    assert predict_cli.main(["--weights", str(trained_model), "--precision", "fp32", "--conf", "0.1", "--source",
                             str(files[0].parent), "--save-json", "--no-save", "--save-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "exp" / "predictions.json").read_text())
    total = 0
    for k, (f, r) in enumerate(zip(files, results, strict=True), 1):
        theirs = sorted((row["score"], row["category_id"] - 1, row["bbox"]) for row in rows if row["image_id"] == k)
        assert all(row["file_name"] == f.stem for row in rows if row["image_id"] == k)
        ours = sorted((float(s), int(c), [round(float(v), 2) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])])
                      for b, s, c in zip(r.boxes, r.scores, r.classes, strict=True))
        assert len(ours) == len(theirs)
        for (s1, c1, b1), (s2, c2, b2) in zip(ours, theirs, strict=True):
            assert c1 == c2 and abs(s1 - s2) <= 1e-5 and np.allclose(b1, b2, atol=0.011)
        total += len(ours)
    assert total >= 6  # the trained model finds its shapes: the comparison is of real boxes


def test_sections_become_overrides_that_read_back_as_given() -> None:
    got = detector._as_overrides({"train": {"lr": 2e-5, "epochs": 3, "name": "a b", "amp": "off", "ema": True},
                                  "data": {"scale": [0.5, 1.5], "cache": None}})
    assert got == ["train.lr=2.0e-05", "train.epochs=3", "train.name=a b", "train.amp='off'", "train.ema=true",
                   "data.scale=[0.5, 1.5]", "data.cache=null"]
    from utils.config.load import load_config

    cfg = load_config("shapes.yaml", got[:5])
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.name, cfg.train.amp, cfg.train.ema) == (2e-5, 3, "a b", "off", True)
    with pytest.raises(PredictError, match="a dict"):
        detector._as_overrides({"train": 3})


@pytest.mark.slow
def test_train_and_evaluate_return_what_the_clis_write(tmp_path: Path) -> None:
    sections = {"model": {"input_size": 64}, "train": {"epochs": 1, "batch_size": 8, "nominal_batch": 8,
                                                      "eval_period": 1, "warmup_epochs": 0.5, "save_period": 0,
                                                      "deterministic": True, "time_limit": 0, "amp": "off"},
                "data": {"root": str(tmp_path / "data"), "workers": 0},
                "shapes": {"num_train": 16, "num_val": 4, "num_test": 0, "width": 96, "height": 96}}
    api = detector.train("shapes.yaml", train={**sections["train"], "save_dir": str(tmp_path / "api")},
                         **{k: v for k, v in sections.items() if k != "train"})
    overrides = [o for o in detector._as_overrides(sections)] + [f"train.save_dir={tmp_path / 'cli'}"]
    assert train_cli.main(["--config", "shapes.yaml", *overrides, "--json", str(tmp_path / "t.json")]) == 0
    cli = json.loads((tmp_path / "t.json").read_text())
    assert set(api) == set(cli) and api["epochs"] == cli["epochs"] == 1
    assert api["map50"] == pytest.approx(cli["map50"], abs=1e-9)  # the same seeded run, by either door
    best = Path(api["run_dir"]) / "best.pt"
    metrics = detector.evaluate(best, precision="fp32", save_dir=tmp_path / "e1")
    assert eval_cli.main(["--weights", str(best), "--precision", "fp32", "--save-dir", str(tmp_path / "e2"),
                          "--json", str(tmp_path / "e.json")]) == 0
    written = json.loads((tmp_path / "e.json").read_text())
    assert {k: v for k, v in metrics.items() if k != "seconds"} == {k: v for k, v in written.items() if k != "seconds"}
    assert metrics["map50"] == pytest.approx(api["map50"], abs=1e-3)  # the stripped best.pt is the run's final model
    changed = detector.evaluate(best, precision="fp32", save_dir=tmp_path / "e3", eval={"nms_iou": 0.3})
    assert changed["images"] == metrics["images"]
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        detector.train("shapes.yaml", train={"epoch": 1})
