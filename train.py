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
import logging
import sys
from pathlib import Path

from utils.config import add_config_args, config_from_args
from utils.voc import DataError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, default="shapes.yaml")
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                        help="continue from a last.pt (without PATH: the newest last.pt under train.save_dir)")
    parser.add_argument("--json", metavar="PATH", help="write the run's final metrics as JSON")
    return parser.parse_args(argv)


def find_last(save_dir: str | Path) -> Path:
    found = sorted(Path(save_dir).glob("*/last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"error: --resume: no last.pt under {save_dir}")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)  # validates the config and overrides; fails fast on a bad key
    resume = None
    if args.resume:
        resume = find_last(cfg.train.save_dir) if args.resume == "last" else Path(args.resume)
        if not resume.is_file():
            raise SystemExit(f"error: --resume: {resume} not found")
    from utils.trainer import fit  # after the config check: a typo fails fast, before torch loads the model code

    try:
        result = fit(cfg, resume)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
