"""Report a config's dataset before training: problems found, images, and objects per class.

    python tools/check_dataset.py --config voc.yaml [section.key=value ...] [--json report.json]

The per-class counts show the class imbalance to weigh before choosing focal loss.
Exits with status 1 when a split has no usable image (or, with data.strict, any problem).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.config.files import read_classes  # noqa: E402
from utils.config.load import add_config_args, load_config  # noqa: E402
from utils.config.schema import ConfigError  # noqa: E402
from utils.console import one_line_errors  # noqa: E402
from utils.data.records import DataError, class_counts  # noqa: E402
from utils.data.splits import load_records  # noqa: E402
from utils.data.synthetic import ensure_shapes  # noqa: E402


def check(cfg) -> dict:
    """Read every split of ``cfg``; return {split group: {images, objects, difficult, per_class, problems}}."""
    classes = read_classes(cfg.data.classes_path)
    made = ensure_shapes(cfg, classes)
    if made:
        print(f"made the synthetic shapes set in {made}")
    result = {}
    for group, splits in (("train", cfg.data.train_splits), ("val", cfg.data.val_splits)):
        records, report = load_records(cfg.data, splits, classes)
        counts, difficult = class_counts(records, len(classes))
        result[group] = {"splits": splits, "images": len(records), "objects": int(counts.sum()),
                         "difficult": int(difficult.sum()),
                         "per_class": {c: int(n) for c, n in zip(classes, counts, strict=True)},
                         "per_class_difficult": {c: int(n) for c, n in zip(classes, difficult, strict=True)},
                         "problems": {k: len(v) for k, v in report.problems.items()}, "report": report.summary()}
    return result


def format_report(result: dict) -> str:
    lines = []
    for group, r in result.items():
        lines.append(f"== {group}: {', '.join(r['splits'])}: {r['images']} images, {r['objects']} objects "
                     f"(+{r['difficult']} difficult)")
        lines.append(r["report"])
        counts = r["per_class"]
        top = max(counts.values()) or 1
        lines.append(f"  {'class':<16}{'objects':>8}{'difficult':>10}  share")
        for c, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {c:<16}{n:>8}{r['per_class_difficult'][c]:>10}  {'#' * round(30 * n / top)}")
        nonzero = [n for n in counts.values() if n]
        if nonzero:
            lines.append(f"  imbalance: commonest / rarest class = {max(nonzero) / min(nonzero):.1f}"
                         + (f"; {len(counts) - len(nonzero)} classes without objects" if len(nonzero) < len(counts) else ""))
    return "\n".join(lines)


@one_line_errors(ConfigError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, default="shapes.yaml")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    try:
        result = check(cfg)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
