"""Checkpoint sizes: what a run's last.pt weighs while it can resume, and what best.pt and last.pt weigh once the
run has ended and they are stripped for shipping (utils/checkpoint.py, strip_run).

    python -m bench.bench_checkpoint [--json out.json]

For each shipped config's model (shapes.yaml: yolov4-tiny-3l, 6 classes, AdamW; voc.yaml: yolov4, 20 classes,
its optimizer), the checkpoint is written as a run writes it (the card, the weights, the EMA, the optimizer after
one step, the AMP scaler, RNG states) by the same save_run, then stripped by strip_run. Sizes in MB (1e6 bytes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit  # noqa: E402
from nets.yolo import build_model  # noqa: E402
from utils.checkpoint import ModelCard, TrainingState, rng_state, save_run, strip_run  # noqa: E402
from utils.config.files import read_anchors, read_classes  # noqa: E402
from utils.config.load import load_config  # noqa: E402
from utils.train.ema import ModelEMA  # noqa: E402
from utils.train.optim import build_optimizer  # noqa: E402


def sizes(config: str, folder: Path) -> dict:
    cfg = load_config(config)
    classes, anchors = read_classes(cfg.data.classes_path), read_anchors(cfg.model.anchors_path)
    model = build_model(cfg.model.name, len(classes))
    optimizer = build_optimizer(model, cfg.train.optimizer, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay)
    sum(o.float().mean() for o in model(torch.rand(1, 3, 64, 64))).backward()
    optimizer.step()  # the optimizer's state (AdamW: two moments per weight; SGD: one momentum buffer)
    ema = ModelEMA(model)
    state = TrainingState(model=model.state_dict(), optimizer=optimizer.state_dict(), scaler={}, epoch=1, iteration=1,
                          best_fitness=[0.5, -1.0], rng=rng_state(), ema=ema.ema.state_dict(), ema_updates=1)
    path = save_run(folder / f"{cfg.model.name}.pt", ModelCard.of(cfg, classes, anchors), state)
    before, after = strip_run(path)
    return {"config": config, "model": cfg.model.name, "classes": len(classes), "optimizer": cfg.train.optimizer,
            "parameters": sum(p.numel() for p in model.parameters()), "resumable_mb": round(before / 1e6, 1),
            "stripped_mb": round(after / 1e6, 1), "ratio": round(after / before, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"checkpoints": [sizes(c, Path(tmp)) for c in ("shapes.yaml", "voc.yaml")]}
    return emit(result, args.json)


if __name__ == "__main__":
    main()
