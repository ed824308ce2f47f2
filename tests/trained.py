"""A small trained model for the tests that compare inference paths (PyTorch, ONNX, ...) on real detections.

An untrained model scores about 0 mAP, so two paths can agree on it and both be wrong. This one is
yolov4-tiny at 96 px, trained from scratch on 16 synthetic images (one shape each, no distractors) for
120 steps without augmentation, and evaluated on those same images: it learns them (mAP50 about 0.7),
which is what a parity test needs: confident, well-placed boxes, and some misses and false alarms too.
It trains once per test session (the ``trained_model`` fixture of tests/conftest.py), in about half a
minute on two cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

OVERRIDES = ["model.name=yolov4-tiny", "model.anchors_path=model_data/shapes_anchors.txt", "model.input_size=96",
             "shapes.num_train=16", "shapes.num_val=16", "shapes.num_test=0", "shapes.width=96", "shapes.height=96",
             "shapes.max_objects=1", "shapes.distractors=0", "shapes.tail=1", "data.val_splits=[SHAPES/train]",
             "data.workers=0", "train.lr=0.004", "train.batch_size=8"]
STEPS = 120

# a tiny run of the demo's recipe (64 px, 16 training images), for the tests of training and resume
TINY_RUN = ["model.input_size=64", "shapes.num_train=16", "shapes.num_val=4", "shapes.num_test=0", "shapes.width=96",
            "shapes.height=96", "train.batch_size=8", "train.nominal_batch=8", "train.eval_period=1", "data.workers=0",
            "train.warmup_epochs=0.5", "train.save_period=0", "train.deterministic=true", "train.time_limit=0"]


def tiny_cfg(tmp_path: Path, *extra: str):
    from utils.config.load import load_config

    return load_config("shapes.yaml", [f"data.root={tmp_path / 'data'}", f"train.save_dir={tmp_path / 'runs'}",
                                       *TINY_RUN, *extra])


def train_small_model(folder: Path) -> Path:
    """Train the model described above with its data under ``folder``; returns its checkpoint (a best.pt as
    train.py writes it: the EMA weights, the card and a training state)."""
    from nets.loss import YOLOLoss
    from nets.yolo import build_model
    from utils.checkpoint import ModelCard, TrainingState, rng_state, save_run
    from utils.config.files import read_anchors, read_classes
    from utils.config.load import load_config
    from utils.data.augment import AugmentParams
    from utils.data.dataset import TrainDataset, collate
    from utils.data.splits import load_records
    from utils.data.synthetic import ensure_shapes
    from utils.train.ema import ModelEMA
    from utils.train.optim import build_optimizer, set_lr

    cfg = load_config("shapes.yaml", [f"data.root={folder / 'data'}", *OVERRIDES])
    classes, anchors = read_classes(cfg.data.classes_path), read_anchors(cfg.model.anchors_path)
    ensure_shapes(cfg, classes)
    records, _ = load_records(cfg.data, cfg.data.train_splits, classes)
    still = AugmentParams(scale=(1.0, 1.0), jitter=0.0, translate=0.0, flip=0.0, hsv=(0.0, 0.0, 0.0))
    data = TrainDataset(records, cfg.model.input_size, still, mosaic=0.0)
    batches = [collate([data[i] for i in range(k, k + cfg.train.batch_size)])
               for k in range(0, len(data), cfg.train.batch_size)]
    torch.manual_seed(0)
    model = build_model(cfg.model.name, len(classes), cls_prior=cfg.model.cls_prior).train()
    loss_fn = YOLOLoss.from_config(cfg, len(classes), anchors, model.strides, model.anchor_masks)
    optimizer = build_optimizer(model, "adamw", cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay)
    ema = ModelEMA(model, tau=50.0)
    for step in range(STEPS):
        images, targets = batches[step % len(batches)]
        set_lr(optimizer, cfg.train, step / STEPS, step, 2 * len(batches), cfg.train.lr)
        total, _ = loss_fn(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        ema.update(model)
    state = TrainingState(model=model.state_dict(), optimizer=optimizer.state_dict(), scaler={}, epoch=STEPS // 2,
                          iteration=STEPS, best_fitness=(0.0, 0.0), rng=rng_state(), ema=ema.ema.state_dict(),
                          ema_updates=ema.updates)
    return save_run(folder / "best.pt", ModelCard.of(cfg, classes, anchors), state)


def unmatched(a: list[dict], b: list[dict], score_tol: float = 2e-4, box_tol: float = 0.15) -> list[dict]:
    """The detections of ``a`` (COCO results rows, as eval.py's detections.json holds them) that find no twin
    in ``b``, pairing one to one: same image and class, score within ``score_tol``, every bbox number within
    ``box_tol`` pixels. The detections with fewest possible twins choose first (so that near-equal neighbours
    cannot take each other's)."""
    def table(rows: list[dict]) -> np.ndarray:
        return np.array([[d["image_id"], d["category_id"], d["score"], *d["bbox"]] for d in rows]).reshape(-1, 7)

    ta, tb = table(a), table(b)
    same = (ta[:, None, 0] == tb[None, :, 0]) & (ta[:, None, 1] == tb[None, :, 1])  # [Na, Nb]
    close = (np.abs(ta[:, None, 2] - tb[None, :, 2]) <= score_tol) & \
        (np.abs(ta[:, None, 3:] - tb[None, :, 3:]) <= box_tol).all(-1)
    twin = same & close
    taken = np.zeros(len(tb), bool)
    lost = []
    for i in np.argsort(twin.sum(1), kind="stable"):
        free = np.nonzero(twin[i] & ~taken)[0]
        if len(free):
            taken[free[0]] = True
        else:
            lost.append(a[i])
    return lost


def val_images(checkpoint: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` images (BGR) of the data the model of :func:`train_small_model` was trained and evaluated on."""
    import cv2

    files = sorted((checkpoint.parent / "data" / "SHAPES" / "JPEGImages").glob("*.jpg"))[:n]
    return [cv2.imread(str(f)) for f in files]
