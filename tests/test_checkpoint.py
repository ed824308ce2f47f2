"""Checkpoints: durable writes (utils.checkpoint.save_checkpoint), the schema read back as written, and clear
errors on files that cannot be read."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

from nets.weights import WeightsError
from utils import checkpoint
from utils.checkpoint import (
    STATE_REQUIRED,
    CheckpointError,
    ModelCard,
    TrainingState,
    read_run,
    rng_state,
    save_checkpoint,
    save_run,
    set_rng_state,
    strip_run,
)


def test_save_fsyncs_the_file_then_replaces_then_fsyncs_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else f"fsync file {os.fstat(fd).st_size}")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(f"replace {Path(src).parent == Path(dst).parent}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = save_checkpoint(tmp_path / "run" / "last.pt", {"w": torch.arange(1000.0)})
    size = path.stat().st_size
    # the file's bytes are on disk before it takes the name, and the rename is on disk before we return
    assert events == [f"fsync file {size}", "replace True", "fsync folder"]
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(1000.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 3, "w": torch.ones(100)})
    before = path.read_bytes()

    def disk_full(obj, fh) -> None:  # half a file written, then the disk is full
        fh.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"could not save .*last.pt: \[Errno 28\] No space left on device; "
                                              r"the previous last.pt, if any, is unchanged"):
        save_checkpoint(path, {"epoch": 4, "w": torch.zeros(100)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 3})
    before = path.read_bytes()

    def interrupted(obj, fh) -> None:
        fh.write(b"PK")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):  # not turned into an error message: the interrupt goes on
        save_checkpoint(path, {"epoch": 4})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# ---------------------------------------------------------------- the schema: save_run / read_run


def small_run(path: Path, **state_fields) -> tuple[Path, ModelCard, TrainingState]:
    from utils.config.load import load_config

    card = ModelCard.of(load_config("shapes.yaml", ["train.lr=0.003"]), ["a", "b"], [(10, 14), (23.5, 27)])
    fields = {"model": {"w": torch.ones(2)}, "optimizer": {"state": {}, "param_groups": []}, "scaler": {"scale": 2.0},
              "epoch": 3, "iteration": 30, "best_fitness": [0.5, -1.25],  # a list, as fit saves it
              "rng": rng_state(), **state_fields}
    state = TrainingState(**fields)
    return save_run(path, card, state), card, state


def test_a_run_reads_back_as_it_was_saved(tmp_path: Path) -> None:
    path, card, state = small_run(tmp_path / "last.pt", ema={"w": torch.full((2,), 3.0)}, ema_updates=7, epochs=9,
                                  elapsed=12.5, pending_row={"epoch": 4}, best_epoch=2)
    back = read_run(path, resume=True)
    assert back.card == card and back.card.anchors == [(10.0, 14.0), (23.5, 27.0)]
    assert back.card.run_config().train.lr == 0.003  # the card's own config
    assert back.card.run_config(overrides=["train.lr=0.01"]).train.lr == 0.01
    torch.testing.assert_close(back.weights["w"], torch.full((2,), 3.0))  # the EMA's weights are the ones to evaluate
    s = back.state
    assert (s.epoch, s.iteration, s.ema_updates, s.epochs, s.elapsed, s.best_epoch) == (3, 30, 7, 9, 12.5, 2)
    assert s.best_fitness == (0.5, -1.25) and isinstance(s.best_fitness, tuple)  # a list in the file
    assert s.pending_row == {"epoch": 4} and s.scaler == {"scale": 2.0}
    torch.testing.assert_close(s.model["w"], torch.ones(2))
    assert read_run(path).state is None  # inference reads the card and the weights only
    mapped = read_run(path, resume=True, mmap=True)
    torch.testing.assert_close(mapped.weights["w"], back.weights["w"])


def test_a_checkpoint_from_before_a_field_was_added_reads_its_default(tmp_path: Path) -> None:
    path, _, _ = small_run(tmp_path / "old.pt")
    ckpt = torch.load(path, weights_only=True)
    for name in ("ema", "ema_updates", "epochs", "elapsed", "pending_row", "best_epoch"):
        del ckpt[name]
    save_checkpoint(path, ckpt)
    s = read_run(path, resume=True).state
    assert (s.ema, s.ema_updates, s.epochs, s.elapsed, s.pending_row, s.best_epoch) == ({}, 0, 0, 0.0, {}, 0)
    torch.testing.assert_close(read_run(path).weights["w"], torch.ones(2))  # no EMA: the model's weights


def test_what_a_checkpoint_lacks_is_named(tmp_path: Path) -> None:
    path, _, _ = small_run(tmp_path / "x.pt")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["anchors"], ckpt["input_size"]
    save_checkpoint(path, ckpt)
    with pytest.raises(WeightsError, match=rf"^{path}: not a checkpoint written by train.py \(no anchors, input_size\)$"):
        read_run(path)
    path, _, _ = small_run(tmp_path / "y.pt")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["optimizer"], ckpt["rng"]
    save_checkpoint(path, ckpt)
    read_run(path)  # inference needs no training state
    with pytest.raises(WeightsError, match="optimizer.*rng|rng.*optimizer"):
        read_run(path, resume=True)
    assert set(STATE_REQUIRED) == {"model", "optimizer", "scaler", "epoch", "iteration", "best_fitness", "rng"}


def test_a_stripped_checkpoint_keeps_the_card_and_the_ema_weights_and_says_it_cannot_resume(tmp_path: Path) -> None:
    big = torch.arange(4096.0)  # the optimizer's moments are what stripping drops: they dominate the size
    path, card, _ = small_run(tmp_path / "best.pt", ema={"w": torch.full((2,), 3.0)}, best_epoch=2,
                              optimizer={"state": {0: {"exp_avg": big, "exp_avg_sq": big + 1}}, "param_groups": []})
    before, after = strip_run(path)
    assert after == path.stat().st_size and after < before - 2 * big.numel() * 4  # both 16 kB moments are gone
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) == {"model_name", "class_names", "anchors", "input_size", "config", "model", "stripped", "epoch",
                         "best_fitness", "best_epoch"}
    torch.testing.assert_close(ckpt["model"]["w"], torch.full((2,), 3.0))  # the EMA's, as evaluation used them
    assert (ckpt["stripped"], ckpt["epoch"], ckpt["best_fitness"], ckpt["best_epoch"]) == (True, 3, [0.5, -1.25], 2)
    back = read_run(path)
    assert back.card == card and back.state is None
    torch.testing.assert_close(back.weights["w"], torch.full((2,), 3.0))
    with pytest.raises(WeightsError, match=rf"^{path} cannot be resumed: its run ended .* model.weights={path}"):
        read_run(path, resume=True)
    assert strip_run(path) == (after, after)  # stripping twice changes nothing
    # no EMA: the model's weights
    path, _, _ = small_run(tmp_path / "last.pt")
    strip_run(path)
    torch.testing.assert_close(torch.load(path, weights_only=True)["model"]["w"], torch.ones(2))


def test_the_random_states_round_trip() -> None:
    import random

    import numpy as np

    state = rng_state()
    want = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(7), random.seed(5)  # elsewhere in between
    set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] == want[2]


def test_missing_start_weights_say_where_they_come_from(tmp_path: Path) -> None:
    from nets.darknet import PUBLISHED
    from utils.checkpoint import check_start_weights
    from utils.config.load import load_config

    check_start_weights(load_config("shapes.yaml"))  # no model.weights: nothing to check
    name = next(iter(PUBLISHED))
    cfg = load_config("shapes.yaml", [f"model.weights={tmp_path / name}"])
    known = PUBLISHED[name]
    with pytest.raises(WeightsError) as e:
        check_start_weights(cfg)
    assert str(e.value) == (f"model.weights = {tmp_path / name}: file not found. It is published on {known.where} "
                            f"({known.size:,} bytes). Put it there, or train from scratch with model.weights='' "
                            "(slower to converge; the backbone then is not frozen).")
    other = load_config("shapes.yaml", [f"model.weights={tmp_path / 'mine.pt'}"])
    with pytest.raises(WeightsError, match=r"mine.pt: file not found. Put it there"):
        check_start_weights(other)
    (tmp_path / "mine.pt").write_bytes(b"x")
    check_start_weights(other)  # there: read later, by the run
