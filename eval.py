"""Evaluate a checkpoint: VOC mAP (07 11-point and all-point) and COCO-style mAP@[.5:.95].

Not built yet: this command only says so and exits with status 2.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("eval.py: not built yet; nothing was run.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
