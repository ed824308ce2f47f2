"""utils/data/dataset.py and utils/data/synthetic.py: batches, reproducibility, workers, ranks, the synthetic set."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scenes import assert_boxes_match_pixels, rect_records
from utils.config.files import read_classes
from utils.config.load import load_config
from utils.data.augment import AugmentParams
from utils.data.dataset import LetterboxDataset, TrainDataset, build_train_loader, collate
from utils.data.splits import load_records
from utils.data.synthetic import class_frequencies, ensure_shapes, make_shapes

NO_COLOUR = AugmentParams(hsv=(0.0, 0.0, 0.0), min_box_size=6, min_box_area=0.3)




def test_samples_and_collate(tmp_path: Path) -> None:
    records = rect_records(tmp_path)
    ds = TrainDataset(records, 320, NO_COLOUR, mosaic=0.0, seed=1)
    batch = [ds[i] for i in range(4)]
    images, targets = collate(batch)
    assert images.shape == (4, 3, 320, 320) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert targets.shape[1] == 6
    for i, (img, t) in enumerate(batch):
        rows = targets[targets[:, 0] == i]
        torch.testing.assert_close(rows[:, 1:], t)
        # every box still matches its rectangle's pixels; difficult objects are not targets
        assert_boxes_match_pixels(img.permute(1, 2, 0).numpy(), t[:, 1:].numpy(), t[:, 0].long().numpy())
        assert records[i].labels[2] not in t[:, 0].tolist() or not records[i].difficult[2]


def test_stream_is_a_function_of_seed_epoch_and_index(tmp_path: Path) -> None:
    records = rect_records(tmp_path)
    a = TrainDataset(records, 256, mosaic=0.5, mixup=0.5, seed=3)
    b = TrainDataset(records, 256, mosaic=0.5, mixup=0.5, seed=3)
    for i in (0, 3, 5):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    b.set_epoch(1)
    assert not torch.equal(a[0][0], b[0][0])
    c = TrainDataset(records, 256, mosaic=0.5, mixup=0.5, seed=4)
    assert not all(torch.equal(a[i][0], c[i][0]) for i in range(6))


def test_close_mosaic_switches_mosaic_off(tmp_path: Path) -> None:
    ds = TrainDataset(rect_records(tmp_path), 256, mosaic=1.0, close_mosaic=2, epochs=5)
    ds.set_epoch(2)
    assert ds.mosaic_on
    ds.set_epoch(3)
    assert not ds.mosaic_on


def test_workers_give_the_same_batches(tmp_path: Path) -> None:
    records = rect_records(tmp_path, 8)
    ds = TrainDataset(records, 128, mosaic=0.5, mixup=0.5, seed=0)
    one = list(build_train_loader(ds, 4, workers=0, seed=0))
    two = list(build_train_loader(ds, 4, workers=2, seed=0))
    assert len(one) == len(two) == 2
    for (ia, ta), (ib, tb) in zip(one, two, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)


def test_a_loader_that_lasts_the_run_gives_the_stream_of_a_loader_per_epoch(tmp_path: Path) -> None:
    # the training loader is built once and its workers persist; the epoch reaches them through the sampler's keys.
    # Reference, written here: per epoch, the order torch.randperm draws from seed + epoch (what a RandomSampler
    # seeded so gives), each sample taken in that epoch, mosaic off for the last close_mosaic epochs
    records = rect_records(tmp_path, 8)
    seed, epochs = 5, 4
    ds = TrainDataset(records, 96, mosaic=1.0, mixup=0.5, close_mosaic=2, epochs=epochs, seed=seed)
    loader = build_train_loader(ds, 4, workers=2, seed=seed)
    workers = None
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        got = list(loader)
        if workers is None:
            workers = loader._iterator  # noqa: SLF001 - the persistent iterator owns the worker processes
        assert loader._iterator is workers  # noqa: SLF001 - the same workers every epoch
        reference = TrainDataset(records, 96, mosaic=1.0, mixup=0.5, close_mosaic=2, epochs=epochs, seed=seed)
        reference.set_epoch(epoch)
        order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        expected = [collate([reference[i] for i in order[b:b + 4]]) for b in (0, 4)]
        assert len(got) == len(expected) == 2
        for (ia, ta), (ib, tb) in zip(got, expected, strict=True):
            assert torch.equal(ia, ib) and torch.equal(ta, tb), epoch
    assert ds.mosaic_on_in(1) and not ds.mosaic_on_in(2)  # the stream did switch mosaic off at epoch 2


def test_distributed_sampler_splits_the_epoch(tmp_path: Path) -> None:
    ds = TrainDataset(rect_records(tmp_path, 8), 64, mosaic=0.0)
    seen = []
    for rank in range(2):
        loader = build_train_loader(ds, 2, rank=rank, world_size=2, seed=0)
        loader.sampler.set_epoch(0)
        seen.append([index for index, epoch, _ in loader.sampler if epoch == 0])
    assert len(seen[0]) == len(seen[1]) == 4
    assert sorted(seen[0] + seen[1]) == list(range(8))


def test_an_image_that_breaks_during_training_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = rect_records(tmp_path)
    Path(records[2].path).write_bytes(b"")  # passed the checks, then broke on disk
    ds = TrainDataset(records, 128, mosaic=0.0)
    img, targets = ds[2]
    assert img.shape == (3, 128, 128) and ds.failures == 1
    assert "cannot decode image" in caplog.text


def test_letterbox_dataset(tmp_path: Path) -> None:
    records = rect_records(tmp_path, 2)
    ds = LetterboxDataset(records, 320)
    img, index, info = ds[1]
    assert img.shape == (3, 320, 320) and index == 1
    t = ds.targets(1)
    assert len(t) == 3 - int(records[1].difficult.sum())
    assert_boxes_match_pixels(img.permute(1, 2, 0).numpy(), t[:, 1:], t[:, 0].astype(int))


# ---------------------------------------------------------------- the synthetic set


def small_spec(**kw):
    cfg = load_config("shapes.yaml", ["shapes.num_train=40", "shapes.num_val=8", "shapes.num_test=4",
                                      *[f"shapes.{k}={v}" for k, v in kw.items()]])
    return cfg, read_classes(cfg.data.classes_path)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in (".jpg", ".xml", ".txt"):
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_shapes_set_is_deterministic_and_in_voc_layout(tmp_path: Path) -> None:
    cfg, classes = small_spec()
    a = make_shapes(tmp_path / "a", classes, cfg.shapes)
    b = make_shapes(tmp_path / "b", classes, cfg.shapes)
    assert digest(a) == digest(b)
    for split, n in (("train", 40), ("val", 8), ("test", 4)):
        ids = (a / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        assert len(ids) == n
        assert all((a / "JPEGImages" / f"{i}.jpg").is_file() and (a / "Annotations" / f"{i}.xml").is_file() for i in ids)
    cfg.data.root = str(tmp_path)
    records, report = load_records(cfg.data, ["a/train"], classes)
    assert len(records) == 40 and not report
    other, _ = small_spec(seed=1)
    assert digest(make_shapes(tmp_path / "c", classes, other.shapes)) != digest(a)


def test_shapes_boxes_cover_the_drawn_shapes_and_some_are_difficult(tmp_path: Path) -> None:
    cfg, classes = small_spec()
    cfg.shapes.num_train = 120
    make_shapes(tmp_path / "S", classes, cfg.shapes)
    cfg.data.root = str(tmp_path)
    records, _ = load_records(cfg.data, ["S/train"], classes)
    boxes = np.concatenate([r.boxes for r in records])
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    w = cfg.shapes.width
    assert sides.min() >= 2 and sides.max() <= w
    assert (sides < 16).any() and (sides > w / 3).any()  # small and large objects
    assert np.concatenate([r.difficult for r in records]).any()
    assert any((r.boxes[:, 0] == 0).any() or (r.boxes[:, 2] == w).any() for r in records)  # cut by the border


def test_shapes_class_frequencies_follow_the_tail() -> None:
    f = class_frequencies(6, 0.1)
    assert f[0] / f[-1] == pytest.approx(10.0) and np.all(np.diff(f) < 0)
    assert class_frequencies(6, 1.0) == pytest.approx(np.full(6, 1 / 6))


def test_ensure_shapes_makes_once_and_remakes_when_the_spec_changes(tmp_path: Path) -> None:
    cfg, classes = small_spec()
    cfg.data.root = str(tmp_path)
    assert ensure_shapes(cfg, classes) == tmp_path / "SHAPES"
    assert ensure_shapes(cfg, classes) is None  # up to date
    cfg.shapes.tail = 0.25  # another spec (shapes.yaml has 0.5)
    assert ensure_shapes(cfg, classes) == tmp_path / "SHAPES"
    cfg.data.synthetic = False
    assert ensure_shapes(cfg, classes) is None
