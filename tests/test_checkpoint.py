"""Checkpoints: durable writes (utils.train.checkpoint.save_checkpoint) and clear errors on files that cannot be read."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

from utils.train import checkpoint
from utils.train.checkpoint import CheckpointError, save_checkpoint


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
