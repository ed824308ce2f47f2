"""utils/train/resume.py without training: what --resume may change, which model it accepts, where it goes on."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import pytest

from utils.checkpoint import ModelCard
from utils.config.load import load_config
from utils.train.resume import (
    RESUME_FREE,
    ResumeError,
    best_fitness_in,
    check_resume,
    check_resume_changes,
    resume_run_dir,
)

ANCHORS = [(10.0, 14.0), (23.0, 27.0)]
CLASSES = ["circle", "square"]


def test_only_the_free_keys_may_change() -> None:
    saved = load_config("shapes.yaml", ["train.time_limit=10"])
    assert check_resume_changes(saved, load_config("shapes.yaml", ["train.time_limit=10"]), "a.pt") == []
    free = load_config("shapes.yaml", ["train.time_limit=10", "data.root=/elsewhere", "data.workers=2",
                                       "train.device=auto", "train.time_limit=12"])
    assert sorted(check_resume_changes(saved, free, "a.pt")) == ["data.root", "data.workers", "train.device",
                                                                  "train.time_limit"]
    assert set(RESUME_FREE) >= {"data.root", "data.workers", "train.device", "train.time_limit"}
    computes = load_config("shapes.yaml", ["train.time_limit=10", "train.lr=0.01", "loss.focal_loss=true"])
    with pytest.raises(ResumeError) as e:
        check_resume_changes(saved, computes, "runs/x/last.pt")
    assert str(e.value).startswith("--resume runs/x/last.pt: ")
    assert "train.lr (0.002 in the run, 0.01 now)" in str(e.value)
    assert "loss.focal_loss (False in the run, True now)" in str(e.value)
    assert "(the time limit only upward)" in str(e.value)
    one = load_config("shapes.yaml", ["train.time_limit=10", "train.lr=0.01"])
    with pytest.raises(ResumeError) as e:
        check_resume_changes(saved, one, "a.pt")
    assert str(e.value) == ("--resume a.pt: train.lr (0.002 in the run, 0.01 now) would change what the run computes; "
                            f"on resume only {', '.join(RESUME_FREE)} may change (the time limit only upward): start a "
                            "new run for the rest")


@pytest.mark.parametrize(("before", "after", "allowed"), [
    (10, 10, True), (10, 20, True), (0.5, 1, True),  # kept or extended
    (10, 5, False),  # shortened
    (0, 10, False),  # a run without a limit planned its schedule over its epochs: a limit now is another run
    (10, 0, False),  # and a limited run cannot drop it
])
def test_the_time_limit_only_upward(before: float, after: float, allowed: bool) -> None:
    saved = load_config("shapes.yaml", [f"train.time_limit={before}"])
    cfg = load_config("shapes.yaml", [f"train.time_limit={after}"])
    if allowed:
        check_resume_changes(saved, cfg, "a.pt")
    else:
        with pytest.raises(ResumeError, match=rf"train.time_limit \({float(before)} in the run, {float(after)} now\)"):
            check_resume_changes(saved, cfg, "a.pt")


def test_the_model_classes_and_anchors_must_be_the_runs() -> None:
    cfg = load_config("shapes.yaml", ["data.root=/new"])
    card = ModelCard.of(load_config("shapes.yaml"), CLASSES, ANCHORS)
    assert check_resume(card, cfg, CLASSES, [list(a) for a in ANCHORS], "b.pt") == ["data.root"]
    with pytest.raises(ResumeError, match=r"^b.pt is a yolov4-tiny-3l for 2 classes \(circle, square\); the config asks "
                                          r"for yolov4-tiny-3l with 3 \(circle, square, ring\)$"):
        check_resume(card, cfg, [*CLASSES, "ring"], ANCHORS, "b.pt")
    tiny = load_config("shapes.yaml", ["model.name=yolov4-tiny", "model.anchors_path=model_data/shapes_anchors.txt"])
    other = ModelCard.of(tiny, CLASSES, ANCHORS)
    with pytest.raises(ResumeError, match=r"^--resume b.pt: model.name"):  # the saved config differs in a key that computes
        check_resume(other, load_config("shapes.yaml"), CLASSES, ANCHORS, "b.pt")
    renamed = ModelCard("yolov4", CLASSES, ANCHORS, 256, card.config)  # a card whose name disagrees with the config
    with pytest.raises(ResumeError, match="is a yolov4 for 2 classes"):
        check_resume(renamed, load_config("shapes.yaml"), CLASSES, ANCHORS, "b.pt")
    with pytest.raises(ResumeError, match=r"^b.pt was trained with other anchors than model_data/shapes_anchors_tiny3l"):
        check_resume(card, load_config("shapes.yaml"), CLASSES, [(10.0, 14.0), (23.0, 28.0)], "b.pt")


def test_best_fitness_of_a_missing_or_foreign_file(tmp_path: Path) -> None:
    assert best_fitness_in(tmp_path / "best.pt") == (-1.0, -math.inf)
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    assert best_fitness_in(tmp_path / "x.pt") == (-1.0, -math.inf)


def write_rows(path: Path, epochs: list[int]) -> None:
    from utils.train.results import CSV_FIELDS

    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows({"epoch": e} for e in epochs)


def epochs_of(path: Path) -> list[str]:
    return [r["epoch"] for r in csv.DictReader(open(path))]


def test_a_last_pt_goes_on_in_its_own_folder(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "exp"
    run.mkdir(parents=True)
    write_rows(run / "results.csv", [1, 2, 3])  # epoch 3's row written, then killed before last.pt moved on
    (run / ".last.pt.123.tmp").write_bytes(b"half")  # a save the kill cut short
    (run / "notes.txt").write_text("mine")
    cfg = load_config("shapes.yaml", [f"train.save_dir={tmp_path / 'runs'}"])
    assert resume_run_dir(run / "last.pt", cfg, 2, main=True) == run
    assert epochs_of(run / "results.csv") == ["1", "2"]
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "results.csv"]
    write_rows(run / "results.csv", [1, 2, 3])
    assert resume_run_dir(run / "last.pt", cfg, 2, main=False) == run  # other ranks touch nothing
    assert epochs_of(run / "results.csv") == ["1", "2", "3"]


def test_an_earlier_checkpoint_goes_on_in_a_new_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="utils.train.resume")
    run = tmp_path / "runs" / "exp"
    run.mkdir(parents=True)
    write_rows(run / "results.csv", [1, 2, 3, 4])
    cfg = load_config("shapes.yaml", [f"train.save_dir={tmp_path / 'runs'}"])
    new = resume_run_dir(run / "epoch2.pt", cfg, 2, main=True)
    assert new == tmp_path / "runs" / "exp2"
    assert epochs_of(new / "results.csv") == ["1", "2"] and epochs_of(run / "results.csv") == ["1", "2", "3", "4"]
    assert caplog.messages == [f"resuming {run / 'epoch2.pt'} (after epoch 2) in a new folder, {new}: {run} "
                               "went on past it and stays as it is"]
    named = load_config("shapes.yaml", [f"train.save_dir={tmp_path / 'runs'}", "train.name=trial"])
    assert resume_run_dir(run / "epoch2.pt", named, 2, main=True) == tmp_path / "runs" / "trial"
    assert resume_run_dir(run / "best.pt", cfg, 2, main=False) == tmp_path / "runs"  # not rank 0: no folder made
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp", "exp2", "trial"]


def saved_run(path: Path, overrides: list[str], best: tuple[float, float] = (0.25, -3.0)) -> Path:
    import torch

    from utils.checkpoint import TrainingState, save_run

    state = TrainingState(model={"w": torch.zeros(1)}, optimizer={}, scaler={}, epoch=1, iteration=2, best_fitness=best, rng={})
    return save_run(path, ModelCard.of(load_config("shapes.yaml", overrides), CLASSES, ANCHORS), state)


def test_resume_config_is_the_saved_one_with_the_overrides(tmp_path: Path) -> None:
    from utils.train.resume import resume_config

    path = saved_run(tmp_path / "last.pt", ["train.time_limit=10", "train.lr=0.003"])
    cfg = resume_config(path, ["data.workers=0", "train.time_limit=15"])
    assert (cfg.train.lr, cfg.data.workers, cfg.train.time_limit) == (0.003, 0, 15.0)  # the run's lr, not the file's
    with pytest.raises(ResumeError, match=r"train.lr \(0.003 in the run, 0.01 now\)"):
        resume_config(path, ["train.lr=0.01"])
    config = tmp_path / "c.yaml"  # a config file given with --resume must describe the same run
    config.write_text("train:\n  lr: 0.003\n  time_limit: 10\n")
    with pytest.raises(ResumeError, match="would change what the run computes"):  # the shapes recipe's keys differ
        resume_config(path, [], config)
    from utils.config.load import save_config

    save_config(load_config("shapes.yaml", ["train.time_limit=10", "train.lr=0.003"]), tmp_path / "same.yaml")
    assert resume_config(path, ["train.time_limit=12"], tmp_path / "same.yaml").train.time_limit == 12
    assert best_fitness_in(path) == (0.25, -3.0)


# ---------------------------------------------------------------- the float32 recipe (train.float32_overrides)


@pytest.mark.parametrize(("native_bf16", "amp", "applied"), [
    (False, "auto", True),  # a CPU without bfloat16 instructions trains in float32
    (True, "auto", False),  # one with them trains in bf16: the config's own values
    (True, "off", True),  # float32 asked for
    (False, "bf16", False),
])
def test_the_float32_recipe_applies_to_a_float32_run_and_the_command_line_wins(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, native_bf16: bool, amp: str,
        applied: bool) -> None:
    from utils import runtime
    from utils.train.setup import float32_recipe

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native_bf16)
    overrides = ["train.float32_overrides=[model.input_size=160, train.ema_tau=300]", f"train.amp={amp}",
                 "train.lr=0.001"]
    cfg = float32_recipe(load_config("shapes.yaml", overrides), overrides)
    if applied:
        assert (cfg.model.input_size, cfg.train.ema_tau, cfg.train.float32_overrides) == (160, 300.0, [])
    else:
        assert (cfg.model.input_size, cfg.train.ema_tau) == (256, 500.0) and len(cfg.train.float32_overrides) == 2
    assert cfg.train.lr == 0.001
    # a key the command line gives keeps its value over the recipe's
    mine = [*overrides, "model.input_size=224"]
    caplog.set_level(logging.INFO, logger="utils.train.setup")
    caplog.clear()
    assert float32_recipe(load_config("shapes.yaml", mine), mine).model.input_size == 224
    # the run's first line names only what the recipe set: not the size the command line kept
    assert caplog.messages == (["float32 on this CPU: train.ema_tau=300 (train.float32_overrides)"] if applied else [])


def test_float32_overrides_are_checked_when_the_config_loads() -> None:
    from utils.config.schema import ConfigError

    with pytest.raises(ConfigError, match=r"train.float32_overrides.*model.input_size.*multiple of 32"):
        load_config("shapes.yaml", ["train.float32_overrides=[model.input_size=100]"])
    with pytest.raises(ConfigError, match="train.amp=bf16 cannot be a float32 override"):
        load_config("shapes.yaml", ["train.float32_overrides=[train.amp=bf16]"])
    with pytest.raises(ConfigError, match="unknown key 'model.size'"):
        load_config("shapes.yaml", ["train.float32_overrides=[model.size=192]"])


def test_a_run_that_applied_the_float32_recipe_resumes_with_the_same_config(tmp_path: Path) -> None:
    from utils.train.resume import resume_config

    recipe = "train.float32_overrides=[model.input_size=160]"
    path = saved_run(tmp_path / "last.pt", ["model.input_size=160", "train.float32_overrides=[]"])  # as applied
    cfg = resume_config(path, [recipe, "data.workers=0"], "shapes.yaml")  # the command that started it, again
    assert cfg.model.input_size == 160 and cfg.train.float32_overrides == []
    # a run that did not apply it (bf16) keeps its own size wherever it resumes
    path = saved_run(tmp_path / "bf16.pt", [recipe])
    assert resume_config(path, [recipe], "shapes.yaml").model.input_size == 256


def test_a_float32_recipe_that_does_not_fit_the_config_is_left_out_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from utils import runtime
    from utils.train.setup import float32_recipe

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    # a config whose model takes 6 anchors, while shapes.yaml's recipe brings 9 (for yolov4-tiny-3l)
    cfg = load_config("shapes.yaml", ["model.name=yolov4-tiny", "model.anchors_path=model_data/yolo_tiny_anchors.txt"])
    assert float32_recipe(cfg) is cfg  # given on the command line, those two would win over the recipe instead
    assert "train.float32_overrides not applied, they do not fit this config" in caplog.text
    assert "needs 6 anchors" in caplog.text
