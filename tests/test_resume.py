"""Resuming a run from anything, and stopping one: damaged checkpoints, overrides on resume, best.pt and
epochN.pt, a finished run, SIGKILL at any moment, SIGINT / SIGTERM as failures, tools/ablate.py's Ctrl-C."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from tests.trained import TINY_RUN, tiny_cfg
from utils.config.files import REPO_ROOT
from utils.config.load import load_config
from utils.train.fit import fit


def epochs_in_csv(run: Path) -> list[str]:
    return [r["epoch"] for r in csv.DictReader(open(run / "results.csv"))]


def one_line_error(capsys: pytest.CaptureFixture, call) -> str:
    """Run a CLI's main; it must end with status 1 after one 'error:' line, or with SystemExit('error: ...')."""
    try:
        status = call()
        err = capsys.readouterr().err
    except SystemExit as e:
        status, err = 1, f"{e.code}\n"
    assert status == 1, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run stopped after epoch 1 of 2 (its folder; read-only for the tests that share it)."""
    tmp = tmp_path_factory.mktemp("run")
    return Path(fit(tiny_cfg(tmp, "train.epochs=2"), stop_after=1)["run_dir"])


# ---------------------------------------------------------------- damaged checkpoints


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.999])
def test_a_truncated_checkpoint_is_one_line_in_every_cli(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         one_epoch_run: Path, keep: float) -> None:
    import eval as eval_cli
    import export
    import predict

    data = (one_epoch_run / "last.pt").read_bytes()
    bad = tmp_path / "last.pt"
    bad.write_bytes(data[:int(len(data) * keep)])  # a save cut short by a full disk or a kill
    image = next((one_epoch_run.parent.parent / "data" / "SHAPES" / "JPEGImages").iterdir())
    calls = {"train": lambda: train.main(["--resume", str(bad)]),
             "predict": lambda: predict.main(["--weights", str(bad), "--source", str(image),
                                              "--save-dir", str(tmp_path / "p")]),
             "eval": lambda: eval_cli.main(["--weights", str(bad), "--save-dir", str(tmp_path / "e")]),
             "export": lambda: export.main(["--weights", str(bad), "--output", str(tmp_path / "x.onnx")])}
    for name, call in calls.items():
        line = one_line_error(capsys, call)
        assert str(bad) in line and ("not a readable PyTorch checkpoint" in line or "is empty" in line), (name, line)
    assert not (tmp_path / "x.onnx").exists()


def test_a_checkpoint_without_the_run_state_is_refused_by_resume(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  one_epoch_run: Path) -> None:
    ckpt = torch.load(one_epoch_run / "last.pt", weights_only=True)
    bare = tmp_path / "last.pt"
    torch.save({"model": ckpt["model"]}, bare)  # a bare state dict: loads as weights, cannot be resumed
    line = one_line_error(capsys, lambda: train.main(["--resume", str(bare)]))
    assert f"{bare}: not a checkpoint written by train.py (no optimizer, scaler, epoch" in line


# ---------------------------------------------------------------- overrides on resume


def test_resume_refuses_overrides_that_change_the_run_by_name(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               one_epoch_run: Path) -> None:
    last = one_epoch_run / "last.pt"
    before = last.read_bytes()
    line = one_line_error(capsys, lambda: train.main(["--resume", str(last), "data.workers=0", "loss.focal_loss=true",
                                                      "train.epochs=5"]))
    assert "loss.focal_loss (False in the run, True now), train.epochs (2 in the run, 5 now)" in line
    assert "data.workers" not in line.split("would change")[0]
    # a time limit is free to grow, never to appear where there was none (it would refit the schedule) or to shrink
    line = one_line_error(capsys, lambda: train.main(["--resume", str(last), "train.time_limit=5"]))
    assert "train.time_limit (0.0 in the run, 5.0 now)" in line
    # --config must describe the same run
    line = one_line_error(capsys, lambda: train.main(["--resume", str(last), "--config", "voc.yaml"]))
    assert "model.name ('yolov4-tiny-3l' in the run, 'yolov4' now)" in line
    assert last.read_bytes() == before


@pytest.mark.slow
def test_resume_takes_the_data_and_machine_overrides(tmp_path: Path) -> None:
    first = Path(fit(tiny_cfg(tmp_path, "train.epochs=2"), stop_after=1)["run_dir"])
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)  # the dataset moved, or the run goes on on another machine
    assert train.main(["--resume", str(first / "last.pt"), f"data.root={moved}", "data.workers=0", "train.device=cpu",
                       "--json", str(tmp_path / "r.json")]) == 0
    assert not (tmp_path / "data").exists()  # the override was used: the old root was not made again
    assert load_config(first / "config.yaml").data.root == str(moved)
    assert torch.load(first / "last.pt", weights_only=True)["epoch"] == 2
    assert epochs_in_csv(first) == ["1", "2"]
    assert json.loads((tmp_path / "r.json").read_text())["stopped"] is False


@pytest.mark.slow
def test_a_time_limit_can_be_extended_on_resume(tmp_path: Path) -> None:
    from utils.train.resume import resume_config

    first = Path(fit(tiny_cfg(tmp_path, "train.epochs=4", "train.time_limit=10"), stop_after=1)["run_dir"])
    assert resume_config(first / "last.pt", ["train.time_limit=20"]).train.time_limit == 20
    with pytest.raises(ValueError, match=r"train.time_limit \(10.0 in the run, 5.0 now\)"):
        resume_config(first / "last.pt", ["train.time_limit=5"])


# ---------------------------------------------------------------- which checkpoint, which folder


@pytest.mark.slow
def test_resume_from_an_earlier_checkpoint_goes_on_in_a_new_folder(tmp_path: Path) -> None:
    first = Path(fit(tiny_cfg(tmp_path, "train.epochs=3", "train.save_period=1"), stop_after=2)["run_dir"])
    kept = {p.name: p.read_bytes() for p in first.iterdir() if p.suffix in (".pt", ".csv")}
    assert {"last.pt", "best.pt", "epoch1.pt", "epoch2.pt", "results.csv"} <= set(kept)
    result = fit(load_config(first / "config.yaml"), resume=first / "epoch1.pt")
    second = Path(result["run_dir"])
    assert second == first.parent / "exp2"
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.suffix in (".pt", ".csv")} == kept  # untouched
    assert epochs_in_csv(second) == ["1", "2", "3"]  # epoch 1's row came along, then its own epochs 2 and 3
    assert torch.load(second / "last.pt", weights_only=True)["epoch"] == 3


@pytest.mark.slow
def test_resume_never_lowers_the_best_score_of_best_pt(tmp_path: Path) -> None:
    # a kill between saving best.pt and last.pt leaves last.pt with an older best score; best.pt's must count
    first = Path(fit(tiny_cfg(tmp_path, "train.epochs=2"), stop_after=1)["run_dir"])
    best = torch.load(first / "best.pt", weights_only=True)
    best["best_fitness"] = [2.0, 0.0]  # unbeatable: mAP50 is at most 1
    torch.save(best, first / "best.pt")
    last = torch.load(first / "last.pt", weights_only=True)
    last["best_fitness"] = [-1.0, -float("inf")]
    torch.save(last, first / "last.pt")
    fit(load_config(first / "config.yaml"), resume=first / "last.pt")
    after = torch.load(first / "best.pt", weights_only=True)  # stripped at the run's end: the EMA's weights as "model"
    assert after["best_fitness"] == [2.0, 0.0] and after["best_epoch"] == best["best_epoch"]
    assert all(torch.equal(after["model"][k], v) for k, v in best["ema"].items())  # never overwritten by epoch 2
    assert torch.load(first / "last.pt", weights_only=True)["best_fitness"] == [2.0, 0.0]


@pytest.mark.slow
def test_resuming_a_finished_run_evaluates_it_and_trains_nothing(tmp_path: Path) -> None:
    done = fit(tiny_cfg(tmp_path, "train.epochs=1", "train.keep_last_state=true"))
    run = Path(done["run_dir"])
    before = (run / "last.pt").read_bytes()
    (run / ".last.pt.k9x2_q.tmp").write_bytes(b"PK half a checkpoint")  # a kill in the middle of a save left it
    (run / "notes.tmp").write_text("mine")
    again = fit(load_config(run / "config.yaml"), resume=run / "last.pt")
    assert not (run / ".last.pt.k9x2_q.tmp").exists() and (run / "notes.tmp").read_text() == "mine"
    assert again["epochs"] == 1 and again["map50"] == pytest.approx(done["map50"])
    assert epochs_in_csv(run) == ["1"]
    assert (run / "last.pt").read_bytes() == before


@pytest.mark.slow
def test_a_finished_run_is_stripped_and_its_last_pt_says_why_it_cannot_resume(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    done = fit(tiny_cfg(tmp_path, "train.epochs=1", "train.amp=off"))
    run = Path(done["run_dir"])
    last = run / "last.pt"
    before = last.read_bytes()
    capsys.readouterr()  # the run's own output
    line = one_line_error(capsys, lambda: train.main(["--resume", str(last)]))
    assert line == (f"error: {last} cannot be resumed: its run ended and the file was stripped for inference (the "
                    f"weights and the card, without the optimizer's state). Start a new run from it with "
                    f"model.weights={last}; to keep a run's last.pt resumable after its end, set train.keep_last_state=true")
    assert last.read_bytes() == before
    # what it is for: evaluation gives the run's own final figures, and a new run starts from it
    import eval as eval_cli

    assert eval_cli.main(["--weights", str(last), "--precision", "fp32", "--save-dir", str(tmp_path / "e"),
                          "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["map50"] == pytest.approx(done["map50"], abs=1e-3)
    again = fit(tiny_cfg(tmp_path, "train.epochs=1", f"model.weights={last}"))
    assert again["epochs"] == 1


# ---------------------------------------------------------------- processes: SIGKILL, SIGINT, SIGTERM


def train_args(tmp_path: Path, save_dir: str, *extra: str) -> list[str]:
    return [sys.executable, "train.py", "--config", "shapes.yaml", f"data.root={tmp_path / 'data'}",
            f"train.save_dir={tmp_path / save_dir}", *TINY_RUN, "shapes.num_train=32", *extra]


def wait_for(path: Path, proc: subprocess.Popen, polls: int = 6000) -> None:
    """Until ``path`` exists; the process ending first fails the test with its output. ``polls`` of 50 ms each
    guard against a hang (10 minutes); they bound no test's time."""
    for _ in range(polls):
        if path.exists():
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
            pytest.fail(f"the process ended before {path} was written:\n{proc.communicate()[0]}")
    pytest.fail(f"{path} was not written after {polls} polls")


def final_state(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "last.pt", weights_only=True)
    return {**{f"model.{k}": v for k, v in ckpt["model"].items()}, **{f"ema.{k}": v for k, v in ckpt["ema"].items()}}


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_ends_with_the_straight_runs_weights(tmp_path: Path) -> None:
    # the whole final state is compared, model and EMA: the runs keep last.pt whole at their end
    straight = subprocess.run(train_args(tmp_path, "straight", "train.epochs=3", "train.keep_last_state=true"),
                              cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    want = final_state(tmp_path / "straight" / "exp")
    # killed as soon as last.pt is first written (inside epoch 1's evaluation), or as soon as epoch 1's row is (in
    # the save that follows, or early in epoch 2): whatever the moment, resume ends where the straight run did
    for first in ("last.pt", "results.csv"):
        save_dir = f"killed_at_{first}"
        proc = subprocess.Popen(train_args(tmp_path, save_dir, "train.epochs=3", "train.keep_last_state=true"), cwd=REPO_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        run = tmp_path / save_dir / "exp"
        wait_for(run / first, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        resumed = subprocess.run([sys.executable, "train.py", "--resume", str(run / "last.pt")], cwd=REPO_ROOT,
                                 capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        got = final_state(run)
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert torch.equal(v, got[k]), (first, k)
        assert epochs_in_csv(run) == ["1", "2", "3"], first  # no row twice, none missing
        assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_last_and_is_not_a_success(tmp_path: Path, sig: int, status: int) -> None:
    args = train_args(tmp_path, "runs", "train.epochs=200", "shapes.num_train=64", "--json", str(tmp_path / "r.json"))
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(tmp_path / "runs" / "exp" / "results.csv", proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == status, out
    assert f"stopped by signal {int(sig)}" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["stopped"] is True and result["signal"] == int(sig)
    ckpt = torch.load(tmp_path / "runs" / "exp" / "last.pt", weights_only=True)
    assert 1 <= ckpt["epoch"] < 200
    # the iteration count is that of the epoch's start: resumed, the epoch starts again from its first step
    assert ckpt["iteration"] == ckpt["epoch"] * 8


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_process_group_with_loader_workers_saves(tmp_path: Path, sig: int, status: int) -> None:
    # a terminal's Ctrl-C, or a job scheduler's SIGTERM (Slurm's scancel), reaches the whole process group,
    # DataLoader workers included: they must leave it to the main process, which finishes its step and saves
    # (a worker killed by SIGTERM crashed the epoch with "DataLoader worker ... is killed by signal")
    args = train_args(tmp_path, "runs", "train.epochs=200", "shapes.num_train=64", "data.workers=2", "data.mosaic=1.0",
                      "data.mixup=0.5")  # the main process mostly waits on the workers
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    wait_for(tmp_path / "runs" / "exp" / "results.csv", proc)  # epoch 2 and its workers are under way
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == status, out
    assert f"stopped by signal {int(sig)}" in out
    # no traceback under either (SIGTERM's used to come from Python's "Signal 17 ignored due to race condition",
    # while the stop's SIGCHLD handler was SIG_DFL: see utils/train/signals.py)
    assert "Traceback" not in out
    assert 1 <= torch.load(tmp_path / "runs" / "exp" / "last.pt", weights_only=True)["epoch"] < 200


@pytest.mark.slow
def test_ctrl_c_on_ablate_lets_the_run_save_then_both_exit(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = [sys.executable, "tools/ablate.py", "--grid", "loss.focal_loss=false", "--seeds", "1", "--out", str(out),
            f"data.root={tmp_path / 'data'}", *TINY_RUN, "train.epochs=200", "shapes.num_train=64"]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = out / "focal_loss-false_seed0"
    wait_for(run / "results.csv", proc)
    os.kill(proc.pid, signal.SIGINT)  # to the sweep alone: it must pass it on and wait
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, text
    assert "Run the same command again to resume" in text
    result = json.loads((run / "result.json").read_text())
    assert result["stopped"] is True
    assert 1 <= torch.load(run / "last.pt", weights_only=True)["epoch"] < 200
    assert "stopped by signal 2" in (out / "logs" / "focal_loss-false_seed0.log").read_text()


def test_a_stop_that_kills_the_lasting_workers_as_an_epoch_starts_ends_the_epoch_quietly() -> None:
    # the training loader's workers last the run, so starting an epoch (iter(loader)) already waits on them; a process
    # group's SIGTERM there kills them and iter() raises. With the stop asked, the epoch ends without an error;
    # without one, the error stands
    from utils.train.engine import _batches

    class DeadWorkers:
        def __iter__(self):
            raise RuntimeError("DataLoader worker (pid(s) 1) exited unexpectedly")

    waits: list[float] = []
    assert list(_batches(DeadWorkers(), lambda: True, waits)) == [] and waits == []
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        list(_batches(DeadWorkers(), lambda: False, waits))
