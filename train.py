"""Train YOLOv4 / YOLOv4-tiny from a YAML config.

    python train.py --config voc.yaml [section.key=value ...]
    python train.py --config voc.yaml loss.focal_loss=false   # the ablation partner
"""

from __future__ import annotations

import argparse
import sys

from utils.config import add_config_args, config_from_args, read_classes
from utils.shapes import ensure_shapes
from utils.voc import DataError, class_counts, load_records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, default="shapes.yaml")
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                        help="resume from a last.pt (default: the newest run's)")
    parser.add_argument("--json", metavar="PATH", help="write the run's final metrics as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)  # validates the config and overrides; fails fast on a bad key
    classes = read_classes(cfg.data.classes_path)
    made = ensure_shapes(cfg, classes)
    if made:
        print(f"made the synthetic shapes set in {made} (once; it is reused while the shapes settings stay the same)")
    try:
        for group, splits in (("train", cfg.data.train_splits), ("val", cfg.data.val_splits)):
            records, report = load_records(cfg.data, splits, classes)
            counts, _ = class_counts(records, len(classes))
            print(f"{group}: {len(records)} images, {int(counts.sum())} objects ({', '.join(splits)})")
            if report:
                print(report.summary())
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("train.py: the config and the data are valid, but training is not built yet; nothing was trained.",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
