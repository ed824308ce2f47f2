"""Export a checkpoint to ONNX.

Not built yet: this command only says so and exits with status 2.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("export.py: not built yet; nothing was run.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
