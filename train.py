"""Train YOLOv4 / YOLOv4-tiny from a YAML config.

    python train.py --config voc.yaml [section.key=value ...]
    python train.py --config voc.yaml loss.focal_loss=false          # the ablation partner
    python train.py --config shapes.yaml                             # the CPU demo (default)
    python train.py --resume runs/voc/exp/last.pt                    # continue a run
    torchrun --nproc_per_node=4 train.py --config voc.yaml           # several GPUs (DDP)

Each run writes to a new folder under train.save_dir (exp, exp2, ...): config.yaml,
results.csv, results.png, last.pt, best.pt and periodic checkpoints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from utils.config.load import add_config_args, load_config
from utils.config.schema import ConfigError
from utils.console import setup_logging
from utils.data.records import DataError

DEFAULT_CONFIG = "shapes.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                        help="continue from a checkpoint: a last.pt goes on in its own folder, a best.pt or epochN.pt "
                             "in a new one (without PATH: the newest last.pt under train.save_dir). The run's saved "
                             "config is used; overrides may change only where the data is and what machine runs it")
    parser.add_argument("--json", metavar="PATH", help="write the run's final metrics as JSON")
    args = parser.parse_args(argv)
    if args.config is None and not args.resume:
        args.config = DEFAULT_CONFIG
    return args


def find_last(save_dir: str | Path) -> Path:
    found = sorted(Path(save_dir).glob("*/last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(f"--resume: no last.pt under {save_dir}")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        if not args.resume:
            cfg = load_config(args.config, args.overrides)  # fails fast on a bad key, before torch loads the model code
        from nets.weights import WeightsError
        from utils.checkpoint import CheckpointError
        from utils.runtime import DeviceError
        from utils.train.fit import TrainingStopped, fit
        from utils.train.resume import ResumeError, resume_config
        from utils.train.setup import float32_recipe
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        resume = None
        if args.resume:
            if args.resume == "last":
                resume = find_last(load_config(args.config or DEFAULT_CONFIG, args.overrides).train.save_dir)
            else:
                resume = Path(args.resume)
            cfg = resume_config(resume, args.overrides, args.config)
        else:
            cfg = float32_recipe(cfg, args.overrides)
        result = fit(cfg, resume)
    except (ConfigError, DataError, DeviceError, WeightsError, ResumeError, CheckpointError, TrainingStopped) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    # a run stopped by a signal is not a success: the shell's convention, 128 + the signal (130 SIGINT, 143 SIGTERM)
    return 128 + result["signal"] if result["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
