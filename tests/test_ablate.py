"""tools/ablate.py: the grid, the resumable sweep, the statistics of the report, and the focal keys it varies."""

from __future__ import annotations

import csv
import json
import math
import threading
from pathlib import Path

import pytest
import torch

from nets.loss import YOLOLoss
from tests.trained import TINY_RUN
from tools import ablate
from tools.ablation import runner
from tools.ablation.report import wrap_title
from tools.ablation.settings import baseline_key, expand, parse_grid, split_values
from tools.ablation.stats import summarize
from utils.config.files import read_anchors
from utils.config.load import load_config


def test_split_values_keeps_lists_whole() -> None:
    assert split_values("a, b,[1,2], {x: 1, y: 2},c") == ["a", "b", "[1,2]", "{x: 1, y: 2}", "c"]


def test_focal_off_runs_once_not_once_per_gamma_and_alpha() -> None:
    grid = parse_grid(["loss.focal_loss=false,true", "loss.focal_gamma=0.5,1,2", "loss.focal_alpha=0.25,0.5"])
    settings = expand(grid, base_focal=True, base_focal_cls=False)
    assert len(settings) == 1 + 3 * 2
    assert settings[0] == {"loss.focal_loss": "false"}
    # with focal on the class term, alpha and gamma matter even with focal objectness off
    assert len(expand(grid, base_focal=True, base_focal_cls=True)) == 2 * 3 * 2
    # imbalance levels multiply everything, and each focal-off setting pairs with its own level
    grid = parse_grid(["shapes.tail=0.1,0.5", "loss.focal_loss=false,true"])
    settings = expand(grid, True, False)
    assert len(settings) == 4
    assert baseline_key(settings[1]) == baseline_key(settings[0]) == (("shapes.tail", "0.1"),)


def test_bad_grid_entries_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="Did you mean 'loss.focal_loss'"):
        ablate.main(["--grid", "loss.focl_loss=false,true", "--out", str(tmp_path)], runner=None)
    with pytest.raises(SystemExit, match="focal_gamma"):
        ablate.main(["--grid", "loss.focal_gamma=1,-2", "--out", str(tmp_path)], runner=None)
    with pytest.raises(SystemExit, match="section.key=value1,value2"):
        ablate.main(["--grid", "focal", "--out", str(tmp_path)], runner=None)


class FakeTrain:
    """Stands in for train.py: writes result.json with mAP50 = base(setting) + seed / 100, and can fail once."""

    BASE = {"false": 0.30, "true": 0.35}

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_at = fail_at

    def __call__(self, args: list[str], log: Path) -> int:
        self.calls.append(args)
        opts = dict(a.split("=", 1) for a in args if "=" in a)
        run_dir = Path(opts["train.save_dir"]) / opts["train.name"]
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            (run_dir / "last.pt").write_bytes(b"checkpoint")  # interrupted after an epoch
            return 1
        seed = int(opts["train.seed"])
        m50 = self.BASE[opts["loss.focal_loss"]] + seed / 100
        result = {"map50": m50, "map50_07": m50, "map50_95": m50 / 2, "epochs": 3, "seconds": 1.0}
        Path(args[args.index("--json") + 1]).write_text(json.dumps(result))
        return 0


def test_sweep_resumes_and_skips_finished_runs(tmp_path: Path) -> None:
    argv = ["--grid", "loss.focal_loss=false,true", "--seeds", "3", "--out", str(tmp_path), "train.epochs=3"]
    first = FakeTrain(fail_at=3)
    with pytest.raises(SystemExit, match="Run the same command again"):
        ablate.main(argv, runner=first)
    second = FakeTrain()
    assert ablate.main(argv, runner=second) == 0
    assert len(first.calls) == 3 and len(second.calls) == 4  # 6 runs: 2 done, the third resumed, 3 fresh
    assert "--resume" in second.calls[0] and "loss.focal_loss=false" in second.calls[0] and "train.seed=1" in second.calls[0]
    assert all("--resume" not in c for c in second.calls[1:])
    assert all("train.epochs=3" in c for c in first.calls + second.calls)
    third = FakeTrain()
    ablate.main(argv, runner=third)
    assert third.calls == []

    rows = list(csv.DictReader(open(tmp_path / "ablation.csv")))
    assert len(rows) == 6 and {r["setting"] for r in rows} == {"focal_loss=false", "focal_loss=true"}
    md = (tmp_path / "ablation.md").read_text()
    # focal off: mAP50 0.30, 0.31, 0.32 -> mean 0.31, sample std 0.01; focal on: 0.35, 0.36, 0.37 -> 0.36 +- 0.01;
    # paired differences 0.05 each -> +0.05 +- 0; mAP50-95 is half of mAP50
    # (the fake runs report no per-class AP, so the rare-class columns are empty)
    assert "| focal_loss=false | 3 | 0.3100 ± 0.0100 | 0.1550 ± 0.0050 | - | - | - | - |" in md
    assert ("| **focal_loss=true** | 3 | 0.3600 ± 0.0100 | 0.1800 ± 0.0050 | - | +0.0500 [+0.0500, +0.0500] | "
            "+0.0250 [+0.0250, +0.0250] | - |") in md
    assert (tmp_path / "ablation.png").stat().st_size > 1000


def test_a_run_stopped_by_a_signal_is_resumed_not_recorded(tmp_path: Path) -> None:
    argv = ["--grid", "loss.focal_loss=false,true", "--seeds", "1", "--out", str(tmp_path), "train.epochs=3"]

    def stopped(args: list[str], log: Path) -> int:  # train.py after Ctrl-C: last.pt saved, the JSON says so, 130
        opts = dict(a.split("=", 1) for a in args if "=" in a)
        run_dir = Path(opts["train.save_dir"]) / opts["train.name"]
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "last.pt").write_bytes(b"checkpoint")
        Path(args[args.index("--json") + 1]).write_text(json.dumps({"stopped": True, "signal": 2, "map50": 0.01}))
        return 130

    with pytest.raises(SystemExit) as stop:
        ablate.main(argv, runner=stopped)
    assert stop.value.code == 130  # the sweep stops with the run's status, not as a success
    again = FakeTrain()
    assert ablate.main(argv, runner=again) == 0
    assert "--resume" in again.calls[0] and len(again.calls) == 2
    rows = list(csv.DictReader(open(tmp_path / "ablation.csv")))
    assert [float(r["map50"]) for r in rows] == [0.30, 0.35]  # the stopped run's 0.01 was never recorded


def test_a_run_folder_with_foreign_files_is_never_deleted(tmp_path: Path) -> None:
    run_dir = tmp_path / "focal_loss-false_seed0"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("x")
    for picture in ("labels.png", "train_batch0.jpg"):  # what a run draws at its start, before any checkpoint
        (run_dir / picture).write_bytes(b"x")
    (run_dir / "notes.txt").write_text("mine")  # no last.pt, and a file train.py does not write
    with pytest.raises(SystemExit, match="holds files a run does not write \\(notes.txt\\)"):
        ablate.main(["--grid", "loss.focal_loss=false", "--seeds", "1", "--out", str(tmp_path)], runner=FakeTrain())
    assert (run_dir / "notes.txt").read_text() == "mine"
    (run_dir / "notes.txt").unlink()
    assert ablate.main(["--grid", "loss.focal_loss=false", "--seeds", "1", "--out", str(tmp_path)], runner=FakeTrain()) == 0


def test_paired_difference_is_per_seed() -> None:
    settings = [{"loss.focal_loss": "false"}, {"loss.focal_loss": "true"}]
    rows = [{"setting": "focal_loss=false", "seed": s, "map50": v, "map50_95": v} for s, v in ((0, 0.2), (1, 0.4))]
    rows += [{"setting": "focal_loss=true", "seed": s, "map50": v, "map50_95": v} for s, v in ((0, 0.3), (1, 0.4))]
    on = summarize(settings, rows)[1]
    # differences 0.1 and 0.0: mean 0.05, sample std sqrt(((0.05)^2 * 2) / 1) = 0.0707
    assert on["delta_map50"][0] == pytest.approx(0.05)
    assert on["delta_map50"][1] == pytest.approx(math.sqrt(0.005))
    # the 95% t interval of the mean of 2 differences: t(0.975, 1 df) = 12.706, times sd / sqrt(2) = 0.05
    assert on["delta_map50"][2] == pytest.approx(12.706 * 0.05)
    assert on["versus"] == "focal_loss=false"


def test_arms_are_compared_with_the_first_and_report_the_rarest_class(tmp_path: Path) -> None:
    argv = ["--seeds", "3", "--out", str(tmp_path), "train.epochs=3", "--arm", "bce", "--arm", "iou",
            "loss.obj_iou_target=1", "--arm", "vfl", "loss.focal_loss=true", "loss.focal_form=varifocal"]

    def fake(args: list[str], log: Path) -> int:  # per arm a mAP50 and a rare-class AP, + seed / 100
        opts = dict(a.split("=", 1) for a in args if "=" in a)
        arm, seed = opts["train.name"].rsplit("_seed", 1)
        (Path(opts["train.save_dir"]) / opts["train.name"]).mkdir(parents=True, exist_ok=True)
        base = {"bce": 0.30, "iou": 0.34, "vfl": 0.28}[arm] + int(seed) / 100 + (int(seed) == 2) * 0.02 * (arm == "iou")
        result = {"map50": base, "map50_95": base / 2, "epochs": 3, "seconds": 1.0,
                  "train_objects": [50, 9, 30], "ap50_per_class": [0.9, base - 0.2, 0.5]}  # class 1 is the rarest
        Path(args[args.index("--json") + 1]).write_text(json.dumps(result))
        assert "loss.obj_iou_target=1" in args if arm == "iou" else "loss.obj_iou_target=1" not in args
        return 0

    assert ablate.main(argv, runner=fake) == 0
    rows = list(csv.DictReader(open(tmp_path / "ablation.csv")))
    assert [r["setting"] for r in rows[:3]] == ["bce"] * 3 and {r["setting"] for r in rows} == {"bce", "iou", "vfl"}
    assert float(rows[0]["rare_ap50"]) == pytest.approx(0.10)  # bce seed 0: 0.30 - 0.2
    md = (tmp_path / "ablation.md").read_text()
    # iou against bce by seed: +0.04, +0.04, +0.06 -> mean 0.04667, sd 0.011547, t(2 df) 4.303 x 0.011547 / sqrt 3 = 0.02869
    assert "| **iou** | 3 | " in md and "+0.0467 [+0.0180, +0.0754]" in md
    assert "Δ is the difference from bce at the same seed" in md
    with pytest.raises(SystemExit, match="give --grid or --arm"):
        ablate.main([*argv, "--grid", "loss.focal_loss=false,true"], runner=fake)


def test_jobs_run_side_by_side_and_a_stop_starts_no_new_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--grid", "loss.focal_loss=false,true", "--seeds", "3", "--out", str(tmp_path), "--jobs", "2"]
    # each run waits until a second one has started: with --jobs 1 the barrier breaks (after its 60 s guard against
    # a hang) and the sweep fails; six runs meet in three pairs
    both = threading.Barrier(2, timeout=60)

    class SideBySide(FakeTrain):
        def __call__(self, args: list[str], log: Path) -> int:
            both.wait()
            return super().__call__(args, log)

    runs = SideBySide()
    assert ablate.main(argv, runner=runs) == 0
    assert len(runs.calls) == 6
    assert len(list(csv.DictReader(open(tmp_path / "ablation.csv")))) == 6

    # the second run is stopped by a signal; the first ends only once the sweep has printed that stop, so its thread,
    # free again, must find the stop and start none of the four runs left
    out, calls, said = tmp_path / "second", [], threading.Event()
    monkeypatch.setattr(runner, "print", lambda *a, **k: said.set() if "stopped by a signal;" in str(a[0]) else None,
                        raising=False)

    def stopped_at_second(args: list[str], log: Path) -> int:
        calls.append(args)
        both.wait()
        if args is calls[1]:  # both have started: the later one is stopped
            return 130
        assert said.wait(60)  # a guard against a hang, not a bound on time
        return FakeTrain()(args, log)

    with pytest.raises(SystemExit) as stop:
        ablate.main([*argv[:5], str(out), "--jobs", "2"], runner=stopped_at_second)
    assert stop.value.code == 130 and len(calls) == 2  # the two running ones end; none of the other four starts


@pytest.mark.slow
def test_a_real_sweep_of_two_tiny_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep"  # side by side, as --jobs 2: the set is made once before, each run has one thread
    argv = ["--grid", "loss.focal_loss=false,true", "--seeds", "1", "--out", str(out), "--jobs", "2",
            f"data.root={tmp_path / 'data'}", *TINY_RUN, "train.epochs=1"]
    assert ablate.main(argv) == 0
    rows = list(csv.DictReader(open(out / "ablation.csv")))
    assert [r["setting"] for r in rows] == ["focal_loss=false", "focal_loss=true"]
    for r in rows:
        assert 0.0 <= float(r["map50"]) <= 1.0 and r["epochs"] == "1"
        saved = load_config(Path(r["run_dir"]) / "config.yaml")
        assert saved.loss.focal_loss == (r["setting"] == "focal_loss=true") and saved.train.seed == 0


def test_the_focal_settings_reach_the_loss() -> None:
    anchors = read_anchors("model_data/yolo_tiny_anchors.txt")
    torch.manual_seed(0)
    maps = [torch.randn(2, 3 * 11, 128 // s, 128 // s) for s in (16, 32)]
    targets = torch.tensor([[0, 1, 10.0, 20, 60, 70], [1, 2, 30, 30, 100, 90], [1, 4, 5, 5, 20, 25]])

    def terms(*overrides: str) -> dict[str, torch.Tensor]:
        cfg = load_config("shapes.yaml", ["model.input_size=128", *overrides])
        loss = YOLOLoss.from_config(cfg, 6, anchors, (16, 32), ((1, 2, 3), (3, 4, 5)))
        return loss(maps, targets)[1]

    base = terms("loss.focal_loss=true", "loss.focal_loss_ratio=10")
    torch.testing.assert_close(terms("loss.focal_loss=true", "loss.focal_loss_ratio=3")["conf"], base["conf"] * 0.3)
    # the sum over kept cells divided by the positives instead of by the kept cells: different, and larger
    num_pos = terms("loss.focal_loss=true", "loss.focal_normalize=num_pos")["conf"]
    assert num_pos > 2 * base["conf"]
    focal_cls = terms("loss.focal_loss=true", "loss.focal_cls=true")
    assert not torch.isclose(focal_cls["cls"], base["cls"]) and torch.isclose(focal_cls["conf"], base["conf"])


def test_the_objectness_prior_reaches_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import utils.train.fit
    import utils.train.setup
    from nets.yolo import build_model

    built = []

    def spy(*args):
        built.append(build_model(*args))
        raise KeyboardInterrupt  # stop the run right after the model is built

    monkeypatch.setattr(utils.train.setup, "build_model", spy)
    cfg = load_config("shapes.yaml", [f"data.root={tmp_path / 'data'}", f"train.save_dir={tmp_path / 'runs'}", *TINY_RUN,
                                      "model.obj_prior=0.05"])
    with pytest.raises(KeyboardInterrupt):
        utils.train.fit.fit(cfg)
    for conv in built[0].head.convs:
        torch.testing.assert_close(conv.bias.view(3, 11)[:, 4].sigmoid(), torch.full((3,), 0.05))


def test_a_long_title_is_wrapped_to_the_figure_width() -> None:
    words = [f"section.key{i}=value{i}" for i in range(20)]  # 19 or 21 characters each: 419 in all
    title = " ".join(words)
    wrapped = wrap_title(title, 9.8)  # 9.8 in at 8 pt: 9.8 * 72 / 4.8 = 147 characters a line
    lines = wrapped.split("\n")
    assert len(lines) == 3 and all(len(line) <= 147 for line in lines)
    assert " ".join(lines) == title  # nothing lost or broken inside a word
    assert wrap_title("short", 5.0) == "short"
