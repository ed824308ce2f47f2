"""The entry point of the data room: a config's splits, in its format, read into records with one report."""

from __future__ import annotations

import logging

from utils.data.coco import load_coco_split
from utils.data.records import DataError, DataReport, Record
from utils.data.voc import load_voc_split
from utils.data.yolo import load_yolo_split

LOGGER = logging.getLogger(__name__)


def load_records(data_cfg, splits: list[str], class_names: list[str],
                 write_cache: bool = True) -> tuple[list[Record], DataReport]:
    """All records of ``splits`` (``data_cfg``: utils.config.schema.DataConfig), with one merged report.
    ``write_cache``: false on the ranks of a distributed run but the first, which alone writes caches.

    Raises DataError when nothing is usable, or under ``data_cfg.strict`` when anything is wrong.
    """
    records: list[Record] = []
    report = DataReport()
    for split in splits:
        if data_cfg.format == "coco":
            recs, rep = load_coco_split(data_cfg.root, split, class_names)
        elif data_cfg.format == "yolo":
            recs, rep = load_yolo_split(data_cfg.root, split, class_names)
        else:
            recs, rep = load_voc_split(data_cfg.root, split, class_names, cache=data_cfg.cache, write_cache=write_cache)
        records += recs
        report.merge(rep)
    if report:
        if data_cfg.strict:
            raise DataError(f"data.strict is on and the dataset has problems:\n{report.summary()}")
        LOGGER.warning("%s", report.summary())
    if not records:
        raise DataError(f"no usable images in {', '.join(splits)} under {data_cfg.root}\n{report.summary()}")
    return records, report
