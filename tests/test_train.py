"""utils/train/ (fit, engine, optim, ema): a real (tiny) run, resume, faults, schedule, EMA, DDP."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

import pytest
import torch

from nets.loss import YOLOLoss
from nets.yolo import build_model
from tests.trained import TINY_RUN, tiny_cfg
from utils.config.files import REPO_ROOT
from utils.config.load import load_config
from utils.train.ema import ModelEMA
from utils.train.engine import TrainingStopped
from utils.train.fit import fit
from utils.train.optim import (
    build_optimizer,
    epochs_in_budget,
    freeze_backbone,
    lr_factor,
    set_lr,
    steady_seconds,
    train_mode,
)
from utils.train.resume import ResumeError


@pytest.mark.slow
def test_a_run_writes_its_folder(tmp_path: Path) -> None:
    result = fit(tiny_cfg(tmp_path, "train.epochs=2"))
    run = Path(result["run_dir"])
    assert run == tmp_path / "runs" / "exp"
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(r["map50"] != "" and float(r["train_total"]) > 0 for r in rows)
    for name in ("last.pt", "best.pt", "config.yaml", "results.png", "labels.png", "train_batch0.jpg", "confusion_matrix.png",
                 "PR_curve.png", "P_curve.png", "R_curve.png", "F1_curve.png", "val_batch0_labels.jpg", "val_batch0_pred.jpg"):
        assert (run / name).is_file(), name
    # the run ended: best.pt and last.pt hold the card and the EMA weights only (train.keep_last_state is off)
    card = {"config", "class_names", "anchors", "input_size", "model_name"}
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        assert set(ckpt) == card | {"model", "stripped", "epoch", "best_fitness", "best_epoch"}, name
        assert len(ckpt["class_names"]) == 6 and ckpt["stripped"] is True
    assert ckpt["epoch"] == 2
    assert load_config(run / "config.yaml") == tiny_cfg(tmp_path, "train.epochs=2")  # the run's config, read back
    # a second run never overwrites the first
    assert fit(tiny_cfg(tmp_path, "train.epochs=1"))["run_dir"] == str(tmp_path / "runs" / "exp2")


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_a_straight_run(tmp_path: Path) -> None:
    # deterministic on the CPU: data is a function of (seed, epoch, index), the sampler is seeded per epoch,
    # and the checkpoint restores model, EMA, optimizer, scaler, iteration and RNGs; equality is exact.
    straight = fit(tiny_cfg(tmp_path / "a", "train.epochs=2"), return_model=True)
    first = fit(tiny_cfg(tmp_path / "b", "train.epochs=2"), stop_after=1)
    last = Path(first["run_dir"]) / "last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    resumed = fit(tiny_cfg(tmp_path / "b", "train.epochs=2"), resume=last, return_model=True)
    for k, v in straight["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    rows = list(csv.DictReader(open(Path(first["run_dir"]) / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]


@pytest.mark.slow
def test_bf16_autocast_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # train.amp=bf16 on the CPU: the model's maps reach the loss in bfloat16, the weights stay float32
    seen: list[torch.dtype] = []
    forward = YOLOLoss.forward

    def spy(self, outputs, targets):
        seen.append(outputs[0].dtype)
        return forward(self, outputs, targets)

    monkeypatch.setattr(YOLOLoss, "forward", spy)
    result = fit(tiny_cfg(tmp_path, "train.epochs=1", "train.amp=bf16", "train.channels_last=true"), return_model=True)
    assert seen[:2] == [torch.bfloat16] * 2  # the epoch's 2 steps (16 images, batch 8); the val loss after them is float32
    assert all(v.dtype in (torch.float32, torch.int64) for v in result["state_dict"].values())
    assert all(bool(torch.isfinite(v.float()).all()) for v in result["state_dict"].values())
    assert math.isfinite(result["map50"])


@pytest.mark.slow
def test_the_defaults_pick_bf16_and_channels_last_on_a_cpu_with_bf16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture,
                                                                     capsys: pytest.CaptureFixture) -> None:
    # train.amp=auto and train.channels_last=auto (the defaults): on a CPU with bfloat16 instructions the maps reach
    # the loss in bfloat16 and from channels_last convolutions, and the run's summary says so and why
    from utils import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    seen: list[tuple[torch.dtype, bool]] = []
    forward = YOLOLoss.forward

    def spy(self, outputs, targets):
        seen.append((outputs[0].dtype, outputs[0].is_contiguous(memory_format=torch.channels_last)))
        return forward(self, outputs, targets)

    monkeypatch.setattr(YOLOLoss, "forward", spy)
    caplog.set_level(logging.INFO)
    fit(tiny_cfg(tmp_path, "train.epochs=1"))
    assert seen[:2] == [(torch.bfloat16, True)] * 2
    assert "precision: bf16 autocast (train.amp=auto: this CPU has bfloat16 instructions); channels_last on " \
           "(train.channels_last=auto)" in caplog.text
    # stderr is not a terminal here: the epoch's progress is one plain line, not carriage-return updates
    err = capsys.readouterr().err
    assert "\r" not in err and "epoch 1/1: 2/2 (100%), " in err


@pytest.mark.slow
def test_resume_refuses_another_model(tmp_path: Path) -> None:
    first = fit(tiny_cfg(tmp_path, "train.epochs=2"), stop_after=1)
    last = Path(first["run_dir"]) / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["class_names"] = ckpt["class_names"][:3]
    torch.save(ckpt, last)
    with pytest.raises(ResumeError, match=r"for 3 classes \(circle, square, triangle\); the config asks for "
                                          r"yolov4-tiny-3l with 6"):
        fit(tiny_cfg(tmp_path, "train.epochs=2"), resume=last)


def test_non_finite_losses_stop_the_run_and_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nets.loss import YOLOLoss

    real = YOLOLoss.forward

    def nan_loss(self, outputs, targets):
        total, terms = real(self, outputs, targets)
        return total * float("nan"), terms

    monkeypatch.setattr(YOLOLoss, "forward", nan_loss)
    with pytest.raises(TrainingStopped, match="3 non-finite losses in a row"):
        fit(tiny_cfg(tmp_path, "train.epochs=2", "train.max_bad_steps=3", "shapes.num_train=40"))
    assert (tmp_path / "runs" / "exp" / "last.pt").is_file()


@pytest.mark.slow
def test_a_split_smaller_than_a_batch_still_trains(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    result = fit(tiny_cfg(tmp_path, "train.epochs=2", "shapes.num_train=3", "train.keep_last_state=true"))  # 3 images, batch 8
    run = Path(result["run_dir"])
    assert torch.load(run / "last.pt", weights_only=True)["iteration"] == 2  # one step of 3 images per epoch
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(float(r["train_total"]) > 0 for r in rows)
    assert "the training split has 3 images, fewer than one batch of 8 (train.batch_size)" in caplog.text


@pytest.mark.slow
def test_last_pt_is_saved_before_the_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import utils.train.fit

    real, calls = utils.train.fit.evaluate, []

    def crash_at_the_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("evaluation ran out of memory")
        return real(*a, **k)

    monkeypatch.setattr(utils.train.fit, "evaluate", crash_at_the_second)
    with pytest.raises(MemoryError):
        fit(tiny_cfg(tmp_path, "train.epochs=3"))
    run = tmp_path / "runs" / "exp"
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["pending_row"]["epoch"] == 2  # epoch 2's training is kept
    monkeypatch.undo()
    fit(load_config(run / "config.yaml"), resume=run / "last.pt")  # evaluates epoch 2 first, then trains epoch 3
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and all(r["map50"] != "" for r in rows)


@pytest.mark.slow
def test_a_kill_after_the_row_before_the_save_leaves_no_row_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # epoch 2's row is written, then the process dies before last.pt is saved again: the last.pt on disk is the
    # one saved before epoch 2's evaluation, which runs again on resume and must not add its row a second time
    import utils.train.results

    real = utils.train.results.append_row

    def dies_after_row_two(path, row):
        real(path, row)
        if row["epoch"] == 2:
            raise SystemExit("killed")

    monkeypatch.setattr(utils.train.results, "append_row", dies_after_row_two)
    with pytest.raises(SystemExit):
        fit(tiny_cfg(tmp_path, "train.epochs=3"))
    monkeypatch.undo()
    run = tmp_path / "runs" / "exp"
    assert [r["epoch"] for r in csv.DictReader(open(run / "results.csv"))] == ["1", "2"]
    fit(load_config(run / "config.yaml"), resume=run / "last.pt")
    assert [r["epoch"] for r in csv.DictReader(open(run / "results.csv"))] == ["1", "2", "3"]


class EpochClock:
    """A clock for fit(): it moves only when an epoch trains or an evaluation runs, by the seconds the test gives."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, epoch_seconds: list[float], eval_seconds: float) -> None:
        import utils.train.fit

        self.now, self.epochs = 0.0, iter(epoch_seconds)
        real_train, real_eval = utils.train.fit.train_one_epoch, utils.train.fit.evaluate

        def train_one_epoch(*args, **kwargs):
            out = real_train(*args, **kwargs)
            self.now += next(self.epochs)
            return out

        def evaluate(*args, **kwargs):
            out = real_eval(*args, **kwargs)
            self.now += eval_seconds
            return out

        monkeypatch.setattr(utils.train.fit, "train_one_epoch", train_one_epoch)
        monkeypatch.setattr(utils.train.fit, "evaluate", evaluate)

    def __call__(self) -> float:
        return self.now


@pytest.mark.slow
def test_time_limit_fits_the_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 60 s budget, epochs of 10 s, evaluations of 2 s after each. After epoch 1 (10 s, no evaluation timed yet, so
    # one is taken as 0.2 x 10 = 2 s): 60 - 10 - 2 (the final evaluation) = 48 s left at 12 s an epoch -> 4 more,
    # 5 in all; each later plan agrees (after epoch 2: 60 - 22 - 2 = 36 -> 3 more). 5 x 12 = 60 s: the budget, used.
    clock = EpochClock(monkeypatch, [10.0] * 40, 2.0)
    result = fit(tiny_cfg(tmp_path, "train.epochs=40", "train.time_limit=1"), clock=clock)
    rows = list(csv.DictReader(open(Path(result["run_dir"]) / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert all(r["map50"] != "" for r in rows)  # every epoch evaluated, the final one included
    assert [float(r["seconds"]) for r in rows] == [12.0] * 5  # the row's time is the clock's: training + evaluation
    assert result["seconds"] == 60.0


@pytest.mark.slow
def test_time_limit_gives_back_what_a_slow_first_epoch_took(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # 120 s budget; the first epoch takes 50 s (a busy machine), the others 10 s, evaluations 2 s. After epoch 1:
    # 120 - 50 - 10 (an evaluation not timed yet: 0.2 x 50) = 60 s at 60 s an epoch -> 2 epochs, epoch 2 the last.
    # After epoch 2 (62 s), planned again although planned as the last, from the epochs after the first (10 s):
    # 120 - 62 - 2 = 56 s at 12 -> 4 more, 6 in all. Epochs 3..6 agree; epoch 6 ends training at 110 s, its
    # evaluation at 112 s: 93% of the budget (without the re-plan: 2 epochs, 64 s).
    clock = EpochClock(monkeypatch, [50.0] + [10.0] * 40, 2.0)
    caplog.set_level(logging.INFO)
    result = fit(tiny_cfg(tmp_path, "train.epochs=40", "train.time_limit=2", "train.warmup_epochs=0.5"), clock=clock)
    rows = list(csv.DictReader(open(Path(result["run_dir"]) / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5", "6"] and result["seconds"] == 112.0
    out = caplog.text
    assert "time limit 2.0 min: 2 epochs instead of 40" in out and "time limit 2.0 min: 6 epochs instead of 2" in out
    # the schedule follows the budget spent at each epoch's start: 0, 52, 64, 76, 88, 100 s of 120, never back up
    lr = [float(r["lr"]) for r in rows]
    assert all(a > b for a, b in zip(lr[1:], lr[2:], strict=False)), lr  # epoch 1 is partly warmup
    cfg = tiny_cfg(tmp_path, "train.epochs=40")
    for row, spent in zip(rows[1:], (52, 64, 76, 88, 100), strict=True):
        assert float(row["lr"]) == pytest.approx(cfg.train.lr * lr_factor(spent / 120, cfg.train), rel=1e-5)  # 6 digits


@pytest.mark.slow
@pytest.mark.parametrize(("epoch_seconds", "budget_s", "epochs"), [
    # fast, then three times slower from epoch 4: after epoch 1 (10 s; evaluation 2 s) 120 - 10 - 2 -> 9 more;
    # epoch 4 (40 s) ends at 76 s, the median of the last three after the first (10, 10, 40) still 10 ->
    # 120 - 76 - 2 = 42 -> 3 more; epoch 5 ends at 118 s, the median now 40: nothing more fits -> 5 epochs, 120 s
    ([10.0, 10.0, 10.0, 40.0, 40.0, 40.0, 40.0], 120, 5),
    # a budget shorter than one epoch: the first epoch (90 s of 60) and its evaluation, then the end
    ([90.0, 10.0], 60, 1),
])
def test_time_limit_replans_when_epochs_slow_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  epoch_seconds: list[float], budget_s: int, epochs: int) -> None:
    clock = EpochClock(monkeypatch, epoch_seconds, 2.0)
    result = fit(tiny_cfg(tmp_path, "train.epochs=40", f"train.time_limit={budget_s / 60}"), clock=clock)
    rows = list(csv.DictReader(open(Path(result["run_dir"]) / "results.csv")))
    assert len(rows) == epochs and result["epochs"] == epochs
    assert result["seconds"] == sum(epoch_seconds[:epochs]) + 2.0 * epochs


def test_steady_seconds_sets_the_first_aside() -> None:
    assert steady_seconds([50.0]) == 50.0  # nothing else known
    assert steady_seconds([50.0, 10.0]) == 10.0
    assert steady_seconds([50.0, 10.0, 12.0, 30.0, 11.0]) == 12.0  # the median of the last three
    assert steady_seconds([5.0, 10.0, 40.0, 40.0, 40.0]) == 40.0


# ---------------------------------------------------------------- pieces


def test_schedule_by_hand() -> None:
    cfg = load_config("voc.yaml", ["train.lr=0.01", "train.min_lr=0.0001", "train.warmup_bias_lr=0.1",
                                   "train.warmup_momentum=0.8", "train.momentum=0.9"]).train
    assert lr_factor(0.0, cfg) == pytest.approx(1.0)
    assert lr_factor(0.5, cfg) == pytest.approx(0.01 + 0.99 * 0.5)  # cosine half-way: floor + (1 - floor) / 2
    assert lr_factor(1.0, cfg) == pytest.approx(0.01)
    step = load_config("voc.yaml", ["train.schedule=step", "train.lr_steps=[0.5, 0.8]", "train.lr_step_gamma=0.1"]).train
    assert [lr_factor(p, step) for p in (0.1, 0.6, 0.9)] == pytest.approx([1.0, 0.1, 0.01])
    model = build_model("yolov4-tiny", 2)
    opt = build_optimizer(model, "sgd", 0.01, 0.9, 5e-4)
    # a quarter into a 100-iteration warmup at progress 0: weights 0 -> 0.01 (0.0025), biases 0.1 -> 0.01 (0.0775)
    set_lr(opt, cfg, 0.0, 25, 100, 0.01)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0025, 0.0025, 0.0775])
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8 + 0.1 * 0.25)
    set_lr(opt, cfg, 0.5, 200, 100, 0.01)
    assert opt.param_groups[2]["lr"] == pytest.approx(0.01 * (0.01 + 0.99 * 0.5))


def test_optimizer_groups_leave_bn_and_biases_undecayed() -> None:
    model = build_model("yolov4-tiny", 2)
    opt = build_optimizer(model, "adamw", 0.001, 0.9, 5e-4)
    decay, bn, bias = (g["params"] for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0, 0.0]
    assert all(p.dim() == 4 for p in decay) and all(p.dim() == 1 for p in bn + bias)
    assert len(decay) + len(bn) + len(bias) == len(list(model.parameters()))
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert len(bn) == n_bn and len(bias) == n_bn + 2  # BN shifts and the two output convs' biases


def test_ema_follows_the_ramped_decay() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # d = 0.9 * (1 - e^-1) = 0.5689: ema = d * 0 + (1 - d) * 1
    d = 0.9 * (1 - math.exp(-1))
    assert ema.ema.weight.item() == pytest.approx(1 - d)


def test_frozen_backbone_has_no_grad_and_bn_in_eval() -> None:
    model = build_model("yolov4-tiny", 2)
    freeze_backbone(model, True)
    train_mode(model, True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.neck.parameters())
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.neck.out4.bn.training
    freeze_backbone(model, False)
    train_mode(model, False)
    assert all(m.training for m in bns) and all(p.requires_grad for p in model.backbone.parameters())


def _ddp_worker(rank: int, world: int, cfg_args: list[str], out_dir: str, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = load_config("shapes.yaml", cfg_args)
    result = fit(cfg, return_model=True)
    torch.save(result["state_dict"], Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_process_gloo_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the data set is made once here, so that the ranks only read it
    args = [f"data.root={tmp_path / 'data'}", f"train.save_dir={tmp_path / 'runs'}", *TINY_RUN, "train.epochs=1",
            "train.batch_size=4", "train.nominal_batch=8"]
    from utils.config.files import read_classes
    from utils.data.synthetic import ensure_shapes

    cfg = load_config("shapes.yaml", args)
    ensure_shapes(cfg, read_classes(cfg.data.classes_path))
    mp.spawn(_ddp_worker, args=(2, args, str(tmp_path), port), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) or "running" in k or "num_batches" in k, k
    # parameters moved from their initialisation (the same seed gives the same start), so the ranks trained
    torch.manual_seed(0)
    init = build_model("yolov4-tiny", 6).state_dict()
    assert not torch.equal(a["head.convs.0.weight"], init["head.convs.0.weight"])


def test_the_epochs_that_fit_a_time_budget() -> None:
    # 100 s budget, 3 epochs done in 30 s, evaluations of 4 s every 2 epochs: 100 - 30 - 4 (the final one) = 66 s
    # left, an epoch costs 10 + 4 / 2 = 12 s -> 5 more (60 s), 8 in all
    assert epochs_in_budget(100, 30, 10, 4, 2, done=3, most=50) == 8
    assert epochs_in_budget(100, 30, 10, 4, 2, done=3, most=6) == 6  # the cap (10x the configured epochs)
    assert epochs_in_budget(100, 99, 10, 4, 2, done=3, most=50) == 3  # over budget: stop at what is done


def test_a_run_plans_its_epochs_from_training_time_with_evaluations_apart() -> None:
    # Run.fit_to_time_budget on a run's bookkeeping: 3 epochs of 10 s of training, one 4 s evaluation (at epoch 2),
    # so 34 s elapsed, evaluations every 2 epochs, 100 s budget. By hand: 100 - 34 - 4 (the final evaluation) = 62 s
    # left at 10 + 4 / 2 = 12 s an epoch -> 5 more, 8 in all (8 x 10 + 4 evaluations x 4 = 96 s <= 100, and a ninth
    # epoch would not fit). Counting the evaluation inside the epochs' time (34 / 3 s) would plan 7.
    from types import SimpleNamespace

    from utils.train.fit import Run

    cfg = load_config("shapes.yaml", ["train.time_limit=1.6667", "train.eval_period=2", "train.epochs=50"])
    run = SimpleNamespace(cfg=cfg, epoch=2, epochs=50, train_seconds=[10.0] * 3, eval_seconds=[4.0], main=False,
                          planned_epochs=0, elapsed=lambda: 34.0, agree=lambda v: v)
    run.epoch_costs = lambda: Run.epoch_costs(run)
    assert Run.fit_to_time_budget(run) is False and run.epochs == 8
    # epoch 8, planned as the last, ends at 70 s (the machine sped up): planned again, 100 - 70 - 4 = 26 s left
    # -> 2 more at 12 s, 10 in all
    run.epoch, run.elapsed = 7, lambda: 70.0
    assert Run.fit_to_time_budget(run) is False and run.epochs == 10


def test_voc_yaml_without_its_backbone_stops_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import train

    weights = REPO_ROOT / "model_data" / "yolov4.conv.137"
    extra = [] if not weights.exists() else [f"model.weights={tmp_path / 'model_data' / 'yolov4.conv.137'}"]
    assert train.main(["--config", "voc.yaml", f"train.save_dir={tmp_path / 'runs'}", *extra]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "yolov4.conv.137: file not found" in err[0]
    assert "170,038,676 bytes" in err[0] and "darknet_yolo_v3_optimal/yolov4.conv.137" in err[0]
    assert "model.weights=''" in err[0]
    assert not (tmp_path / "runs").exists()  # no run folder, no data read


@pytest.mark.slow
def test_a_random_backbone_is_not_frozen(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import utils.train.fit

    calls = []
    real = utils.train.fit.freeze_backbone
    monkeypatch.setattr(utils.train.fit, "freeze_backbone", lambda model, frozen: calls.append(frozen) or real(model, frozen))
    with caplog.at_level(logging.WARNING):
        fit(tiny_cfg(tmp_path, "train.epochs=2", "train.freeze_epochs=1"))  # model.weights is "" in shapes.yaml
    assert "a random backbone must not be frozen" in caplog.text
    assert calls and not any(calls)  # epoch 1 trained the backbone too


@pytest.mark.slow
def test_patience_ends_a_run_that_stopped_improving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    import utils.train.fit

    caplog.set_level(logging.INFO)
    real, scores = utils.train.fit.evaluate, iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.05])  # best at epoch 1, then worse
    monkeypatch.setattr(utils.train.fit, "evaluate", lambda *a, **k: {**real(*a, **k), "map50": next(scores)})
    result = fit(tiny_cfg(tmp_path, "train.epochs=6", "train.patience=2"))
    assert result["epochs"] == 3 and result["early_stop"] and not result["stopped"]  # epochs 2 and 3 were not better
    assert "early stop: no better fitness for 2 epochs since epoch 1 (train.patience = 2)" in caplog.text
    rows = list(csv.DictReader(open(Path(result["run_dir"]) / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert all(0 <= float(r["precision"]) <= 1 and 0 <= float(r["recall"]) <= 1 for r in rows)
