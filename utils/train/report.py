"""What a run shows a person: its summary and first pictures when it starts, its per-class table and the
evaluation pictures when it ends (rank 0 only). :class:`utils.train.fit.Run` calls these with itself as ``run``;
this module does not import fit.py, so that the two stay one-way."""

from __future__ import annotations

import dataclasses
import logging

from nets.loss import unused_loss_keys
from nets.yolo import model_summary
from utils.config.schema import LossConfig
from utils.data.records import class_counts
from utils.metrics.voc import format_table, per_class_table
from utils.plots import plot_evaluation, plot_labels, plot_results, save_batch_pictures, save_train_batch
from utils.runtime import precision_name

LOGGER = logging.getLogger(__name__)


def _precision_words(setting: str, dtype, device) -> str:
    """What autocast a run uses and, for ``train.amp=auto``, why."""
    name = precision_name(dtype)
    words = f"{name} autocast" if dtype is not None else "float32 (no autocast)"
    if setting != "auto":
        return f"{words} (train.amp={setting})"
    why = ("CUDA" if device.type == "cuda" else
           "this CPU has bfloat16 instructions" if dtype is not None else "this CPU has no bfloat16 instructions")
    return f"{words} (train.amp=auto: {why})"


def idle_loss_keys(lf: LossConfig) -> list[str]:
    """One line for each objectness key set away from its default that the chosen form does not read."""
    form, unused = unused_loss_keys(dataclasses.asdict(lf))
    why = "" if lf.focal_loss else " (loss.focal_loss is off)"
    return [f"loss.{key} = {getattr(lf, key)} does nothing here: the objectness form is {form}{why}"
            for key in unused if getattr(lf, key) != getattr(LossConfig, key)]


def announce(run) -> None:
    """The run's folder, data, model and loss on the console; labels.png and train_batch0.jpg (the first
    things to look at when a run goes wrong); a warning where the split is smaller than one batch."""
    cfg, classes = run.cfg, run.classes
    counts, _ = class_counts(run.train_records, len(classes))
    summary = model_summary(run.net, cfg.model.input_size)
    lf = cfg.loss
    LOGGER.info("run: %s", run.run_dir)
    LOGGER.info("data: %d train images, %d val images; objects per class: %s", len(run.train_records),
                len(run.val_records), ", ".join(f"{c} {n}" for c, n in zip(classes, counts, strict=True)))
    LOGGER.info("model: %s, %s parameters, %.2f GFLOPs at %d; device %s%s", cfg.model.name, f"{summary['params']:,}",
                summary["gflops"], cfg.model.input_size, run.device, f", world {run.world}" if run.world > 1 else "")
    layout = f"{'on' if run.channels_last else 'off'}{' (train.channels_last=auto)' if cfg.train.channels_last == 'auto' else ''}"
    LOGGER.info("precision: %s; channels_last %s", _precision_words(cfg.train.amp, run.dtype, run.device), layout)
    LOGGER.info("objectness: %s; classes: %s, label smoothing %s", run.loss_fn.objectness,
                "focal" if lf.focal_cls else "BCE", lf.label_smoothing)
    for line in idle_loss_keys(lf):
        LOGGER.warning(line)
    plot_labels(run.train_records, classes, run.run_dir / "labels.png")
    save_train_batch(run.dataset, classes, run.run_dir / "train_batch0.jpg")
    phases = {"train.batch_size": cfg.train.batch_size} if run.freeze_epochs < run.epochs else {}
    if run.freeze_epochs:
        phases["train.freeze_batch_size"] = cfg.train.freeze_batch_size
    for key, b in phases.items():
        if len(run.dataset) < b * run.world:  # the loader keeps the one partial batch (build_train_loader)
            LOGGER.warning("the training split has %d images, fewer than one batch of %d (%s): each epoch of that "
                           "phase is one step of %d images", len(run.dataset), b * run.world, key, len(run.dataset))


def conclude(run) -> None:
    """results.png; after a final evaluation its per-class table, the evaluation pictures and the batch
    pictures; the way to go on after a signal."""
    if (run.run_dir / "results.csv").is_file():
        plot_results(run.run_dir / "results.csv", run.run_dir / "results.png")
    if run.metrics:
        LOGGER.info(format_table(per_class_table(run.metrics, run.val_records, run.classes), run.metrics))
        plot_evaluation(run.metrics, run.classes, run.run_dir, run.cfg.eval.score_thres, run.cfg.eval.match_iou)
        save_batch_pictures(run.val_records, run.metrics["dets"], run.classes, run.run_dir)
    if run.stop.asked:
        LOGGER.info("stopped by signal %d; saved %s (continue with --resume)", run.stop.asked, run.run_dir / "last.pt")
