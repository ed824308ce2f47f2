"""Write the synthetic shapes set of a config (``shapes`` section) under ``data.root``.

    python tools/make_shapes.py [--config shapes.yaml] [shapes.tail=0.05 shapes.distractors=4 ...]

``train.py`` does this by itself on first use; this tool makes or remakes it explicitly,
for instance at another imbalance level (``shapes.tail``) under another name (``shapes.name``);
train on it with ``shapes.name=NAME data.train_splits=[NAME/train] data.val_splits=[NAME/val]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.config.files import read_classes  # noqa: E402
from utils.config.load import add_config_args, load_config  # noqa: E402
from utils.config.schema import ConfigError  # noqa: E402
from utils.console import one_line_errors  # noqa: E402
from utils.data.synthetic import ShapesFolderError, make_shapes  # noqa: E402


@one_line_errors(ConfigError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, default="shapes.yaml")
    args = parser.parse_args(argv)
    args.overrides = [*args.overrides, "data.synthetic=false"]  # only the shapes section is used: the splits need not match
    cfg = load_config(args.config, args.overrides)
    try:
        folder = make_shapes(Path(cfg.data.root) / cfg.shapes.name, read_classes(cfg.data.classes_path), cfg.shapes)
    except ShapesFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    s = cfg.shapes
    print(f"made {folder}: {s.num_train} train, {s.num_val} val, {s.num_test} test images of {s.width}x{s.height}, "
          f"tail {s.tail}, distractors {s.distractors}, seed {s.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
