"""What ``--resume`` may change, the config that resumes a checkpoint, and where the resumed run writes."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from nets.weights import WeightsError
from utils.checkpoint import ModelCard, read_run
from utils.config.load import config_from_dict
from utils.config.schema import Config, all_keys
from utils.runtime import next_run_dir
from utils.train.results import keep_rows

LOGGER = logging.getLogger(__name__)

class ResumeError(ValueError):
    """A checkpoint that cannot be resumed as asked; the message names the file and the reason."""


# What --resume may change: where the files are and what machine runs the rest, never what the run computes.
# train.time_limit only upward (an extension); everything else would make the resumed run another experiment.
RESUME_FREE = ("data.root", "data.classes_path", "model.anchors_path", "model.weights", "data.workers", "data.cache",
               "train.device", "train.time_limit", "train.keep_last_state")


def dotted(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def check_resume_changes(saved: Config, cfg: Config, source: str | Path) -> list[str]:
    """The keys where ``cfg`` differs from a checkpoint's ``saved`` config, all of them in RESUME_FREE;
    raise ResumeError naming every other key that differs."""
    changed = [k for k in all_keys() if dotted(saved, k) != dotted(cfg, k)]
    old_limit, new_limit = saved.train.time_limit, cfg.train.time_limit
    refused = [k for k in changed if k not in RESUME_FREE or (k == "train.time_limit" and not 0 < old_limit <= new_limit)]
    if refused:
        what = ", ".join(f"{k} ({dotted(saved, k)!r} in the run, {dotted(cfg, k)!r} now)" for k in refused)
        raise ResumeError(f"--resume {source}: {what} would change what the run computes; on resume only "
                          f"{', '.join(RESUME_FREE)} may change (the time limit only upward): start a new run "
                          "for the rest")
    return changed


def check_resume(card: ModelCard, cfg: Config, classes: list[str], anchors, source: str | Path) -> list[str]:
    """Whether the checkpoint ``source`` (its ``card``) can go on under ``cfg``: only the keys RESUME_FREE may
    differ (returned), and the model, the class names and the anchors must be the run's; else a ResumeError."""
    changed = check_resume_changes(config_from_dict(card.config, str(source)), cfg, source)
    if card.model_name != cfg.model.name or card.class_names != classes:
        raise ResumeError(f"{source} is a {card.model_name} for {len(card.class_names)} classes "
                          f"({', '.join(card.class_names)}); the config asks for {cfg.model.name} with "
                          f"{len(classes)} ({', '.join(classes)})")
    if card.anchors != [tuple(map(float, a)) for a in anchors]:
        raise ResumeError(f"{source} was trained with other anchors than {cfg.model.anchors_path} holds")
    return changed


def resume_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (), config: str | Path | None = None) -> Config:
    """The config that resumes the checkpoint ``path``: its own saved config (or the file ``config``,
    which must describe the same run) with ``overrides`` applied, checked by :func:`check_resume_changes`."""
    from utils.config.load import apply_overrides, load_config, validate, with_float32_overrides

    saved = config_from_dict(read_run(path, resume=True, mmap=True).card.config, str(path))
    cfg = load_config(config, overrides) if config else validate(apply_overrides(config_from_dict(saved.to_dict()), overrides))
    if cfg.train.float32_overrides and not saved.train.float32_overrides:  # the run started in float32 and applied them
        cfg = with_float32_overrides(cfg, overrides)  # as train.py did (fit.float32_recipe)
    check_resume_changes(saved, cfg, path)
    return cfg


def best_fitness_in(path: Path) -> tuple[float, float]:
    """The best score recorded in a run's best.pt, or (-1, -inf) where there is none to read."""
    try:
        return read_run(path, resume=True, mmap=True).state.best_fitness
    except WeightsError:
        return (-1.0, -math.inf)


def resume_run_dir(resume: Path, cfg: Config, last_row: int, main: bool) -> Path:
    """Where a resumed run goes on: a ``last.pt``'s own folder, its results.csv cut back to the epoch
    ``last_row`` (rows of an epoch a kill interrupted go); any other checkpoint (``best.pt``, ``epochN.pt``)
    in a new folder with the rows up to ``last_row``, since its own run went on past it and keeps its
    last.pt and best.pt."""
    if resume.name == "last.pt":
        if main:
            keep_rows(resume.parent / "results.csv", resume.parent / "results.csv", last_row)
            for tmp in resume.parent.glob(".*.pt.*.tmp"):  # save_checkpoint's temporary names, left by a kill
                tmp.unlink()
        return resume.parent
    if not main:
        return Path(cfg.train.save_dir)
    run_dir = next_run_dir(cfg.train.save_dir, cfg.train.name)
    keep_rows(resume.parent / "results.csv", run_dir / "results.csv", last_row)
    LOGGER.info("resuming %s (after epoch %d) in a new folder, %s: %s went on past it and stays as it is", resume,
                last_row, run_dir, resume.parent)
    return run_dir


