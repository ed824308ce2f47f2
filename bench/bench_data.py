"""Data benchmark: training-pipeline images per second at 416 in one process, and XML files parsed per second.

    python -m bench.bench_data [--images 300] [--size 416] [--json out.json]

Runs on a VOC-layout set of 500x375 JPEGs (Pascal VOC's typical size) made by the shapes
generator in a temporary folder. Images/s is the median over 3 passes of samples built by
TrainDataset (decode, mosaic / mixup / placement, flip, HSV) and collated into float batches
of 16, with mosaic and mixup each at probability 0.5, and with both off. ``first_batch_s``: the
median over 5 epochs of the wait for an epoch's first batch with one DataLoader worker, the loader
built anew for each epoch (its worker started each time) against the training loader, whose
worker lasts the run (``build_train_loader``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit  # noqa: E402
from utils.config.files import read_classes  # noqa: E402
from utils.config.load import load_config  # noqa: E402
from utils.data.augment import AugmentParams  # noqa: E402
from utils.data.dataset import TrainDataset, build_train_loader, collate, worker_init  # noqa: E402
from utils.data.records import DataReport  # noqa: E402
from utils.data.synthetic import make_shapes  # noqa: E402
from utils.data.voc import load_voc_split, parse_voc_xml  # noqa: E402


def images_per_second(ds: TrainDataset, n: int, batch: int = 16, passes: int = 3) -> float:
    rates = []
    for p in range(passes):
        ds.set_epoch(p)
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            collate([ds[i] for i in range(start, min(start + batch, n))])
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def first_batch_seconds(ds: TrainDataset, persistent: bool, epochs: int = 5, batch: int = 16) -> float:
    """Median seconds from the start of an epoch to its first batch, one worker."""
    waits = []
    loader = build_train_loader(ds, batch, workers=1) if persistent else None
    for epoch in range(epochs):
        t0 = time.perf_counter()
        if not persistent:
            loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=1, collate_fn=collate,
                                worker_init_fn=worker_init)
        if persistent:
            loader.sampler.set_epoch(epoch)
        it = iter(loader)
        next(it)
        waits.append(time.perf_counter() - t0)
        for _ in it:  # the rest of the epoch, as training takes it
            pass
    return statistics.median(waits)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)  # one process, one thread: what a single DataLoader worker has
    cfg = load_config("shapes.yaml", [f"shapes.num_train={args.images}", "shapes.num_val=1", "shapes.num_test=0",
                                      "shapes.width=500", "shapes.height=375"])
    classes = read_classes(cfg.data.classes_path)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_shapes(Path(tmp) / "S", classes, cfg.shapes)
        records, _ = load_voc_split(tmp, "S/train", classes, cache=False)
        xmls = sorted((folder / "Annotations").glob("*.xml"))
        t0 = time.perf_counter()
        index = {c: i for i, c in enumerate(classes)}
        for x in xmls:
            parse_voc_xml(x, folder / "JPEGImages" / f"{x.stem}.jpg", index, DataReport(), (500, 375))
        xml_rate = len(xmls) / (time.perf_counter() - t0)
        params = AugmentParams.from_config(cfg.data)
        result = {"bench": "data", "input_size": args.size, "images": len(records), "image_size": [500, 375],
                  "opencv_threads": 1, "xml_files_per_s": round(xml_rate, 1)}
        for name, mosaic_p, mixup_p in (("mosaic_mixup_0.5", 0.5, 0.5), ("no_mosaic_no_mixup", 0.0, 0.0)):
            ds = TrainDataset(records, args.size, params, mosaic=mosaic_p, mixup=mixup_p, seed=0)
            result[f"train_images_per_s_{name}"] = round(images_per_second(ds, len(records)), 1)
        ds = TrainDataset(records, args.size, params, mosaic=0.0, seed=0)
        result["first_batch_s"] = {kind: round(first_batch_seconds(ds, kind == "persistent_worker"), 3)
                                   for kind in ("new_loader_per_epoch", "persistent_worker")}
    return emit(result, args.json)


if __name__ == "__main__":
    main()
