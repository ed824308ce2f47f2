"""The training run (train.py calls :func:`fit`), in the order a run happens.

:func:`fit` is the outline; :class:`Run` holds what the run builds, a method per part: setup, the
checkpoint to resume, data, model, restored state, summary, the epoch loop, the time budget, the end
of an epoch, the result. Distributed runs start with ``torchrun``; rank 0 alone writes and evaluates.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from utils.checkpoint import (
    ModelCard,
    TrainingState,
    rng_state,
    save_run,
    strip_run,
)
from utils.config.load import save_config
from utils.config.schema import Config
from utils.data.dataset import build_train_loader
from utils.data.records import class_counts
from utils.runtime import (
    unwrap,
)
from utils.train import report
from utils.train.engine import StepSettings, TrainingStopped, evaluate, train_one_epoch
from utils.train.optim import (
    epoch_lr,
    epochs_in_budget,
    freeze_backbone,
    phase_lr,
    steady_seconds,
    train_mode,
)
from utils.train.results import EpochLog
from utils.train.setup import RunSetup

LOGGER = logging.getLogger(__name__)


def fit(cfg: Config, resume: str | Path | None = None, stop_after: int | None = None,
        return_model: bool = False, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Train per ``cfg``; returns the final metrics. ``resume``: a checkpoint to continue from.

    ``stop_after``: end this invocation after that many epochs, as a signal would (last.pt
    saved, the schedule still planned for all epochs); ``return_model``: put the final weights
    in the result under ``state_dict`` (both for tests and tools); ``clock``: seconds, for the
    epochs' times and ``train.time_limit`` (tests give one whose epochs take what they say).
    """
    run = Run(cfg, clock)
    state = run.checkpoint_to_resume(resume)
    run.load_data()
    run.build_model(starting_weights=state is None)
    run.restore(state, resume)
    run.announce()
    try:
        with run.stop, EpochLog(run.run_dir) if run.main else contextlib.nullcontext() as run.log:
            run.train(state, stop_after)
    finally:
        if run.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    result = run.result(return_model)
    run.strip_checkpoints()
    return result


class Run(RunSetup):
    """One training run's parts (built by :class:`~utils.train.setup.RunSetup`) and progress: the epochs, the time
    budget, the end of each epoch, the result (see :func:`fit` for the order)."""

    def announce(self) -> None:
        """The run's summary on the console and its first pictures (rank 0): see train.report.announce."""
        if self.main:
            save_config(self.cfg, self.run_dir / "config.yaml")
            report.announce(self)

    # ------------------------------------------------------------------ the epochs

    def train(self, state: TrainingState | None, stop_after: int | None) -> None:
        """The epoch loop, from an evaluation a kill cut short (if any) to the last epoch or a stop."""
        self.t_start = self.clock()
        try:
            if self.main and state is not None and state.pending_row:  # stopped in the middle of an epoch's evaluation
                self.end_epoch(self.epoch, dict(state.pending_row), evaluate_now=True)
            while self.epoch < self.epochs:
                t_epoch = self.clock()
                out = self.train_epoch()
                if out["stopped"]:  # resumed, the epoch starts again from its first iteration
                    if self.main:
                        self.save("last.pt", self.epoch)
                    break
                self.iteration += out["iterations"]
                self.train_seconds.append(self.clock() - t_epoch)
                last = self.fit_to_time_budget()
                row = {"epoch": self.epoch + 1, "lr": out["lr"], **{f"train_{k}": v for k, v in out["loss"].items()},
                       "num_pos": out["num_pos"], "collisions": out["collisions"], "bad_steps": out["bad_steps"],
                       "seconds": round(self.clock() - t_epoch, 1), "data_seconds": round(out["data_seconds"], 2)}
                evaluated = (self.epoch + 1) % self.cfg.train.eval_period == 0 or last
                if self.main:
                    self.end_epoch(self.epoch + 1, row, evaluated)
                if self.world > 1:
                    dist.barrier()
                self.epoch += 1
                done_here = self.epoch - self.start_epoch
                if self.stop.asked or (stop_after is not None and done_here >= stop_after and self.epoch < self.epochs):
                    break
                if evaluated and self.out_of_patience():
                    break
            if self.main and self.epoch >= self.epochs and not self.metrics and not self.stop.asked:
                self.metrics = self.evaluate()  # resumed from a run that had finished its epochs: evaluated again
        except TrainingStopped as e:
            if self.main:
                self.save("last.pt", self.epoch)
            raise TrainingStopped(f"{e}; saved {self.run_dir / 'last.pt'}") from None
        finally:
            self.loader = None  # its workers end here

    def train_epoch(self) -> dict[str, Any]:
        """One epoch in its phase (backbone frozen or not, with that phase's batch size, lr and accumulation)."""
        cfg, epoch, world = self.cfg, self.epoch, self.world
        frozen = epoch < self.freeze_epochs
        batch = cfg.train.freeze_batch_size if frozen else cfg.train.batch_size
        if self.loader is None or self.loader.batch_size != batch:  # one loader per phase; its workers stay
            self.loader = build_train_loader(self.dataset, batch, cfg.data.workers, cfg.train.seed, self.rank, world)
        loader = self.loader
        self.dataset.epochs = self.epochs  # train.time_limit may have changed it: close_mosaic counts from the end
        loader.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        if world > 1 and (epoch == self.start_epoch or frozen != (epoch - 1 < self.freeze_epochs)):
            # DDP hooks the parameters that need gradients when it is built: rebuild it per phase
            freeze_backbone(self.net, frozen)
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device] if self.device.type == "cuda" else None)
        freeze_backbone(self.net, frozen)
        train_mode(self.model, frozen)
        accumulate, base_lr = phase_lr(cfg.train, batch, world)
        lr_at = epoch_lr(self.optimizer, cfg.train, self.schedule_span(), len(loader), self.iteration,
                         round(cfg.train.warmup_epochs * len(loader)), base_lr)
        step = StepSettings(lr_at, accumulate, self.dtype, self.channels_last, self.scaler, self.ema,
                            cfg.train.grad_clip, cfg.train.max_bad_steps, self.epochs,
                            lambda: bool(self.stop.asked), self.main, world)
        return train_one_epoch(self.model, self.loss_fn, loader, self.optimizer, self.device, epoch, step)

    def epoch_costs(self) -> tuple[float, float]:
        """(training seconds of an epoch, seconds of an evaluation) as they are now (:func:`steady_seconds`); an
        evaluation not timed yet is taken as a fifth of an epoch."""
        per_epoch = steady_seconds(self.train_seconds)
        return per_epoch, steady_seconds(self.eval_seconds) if self.eval_seconds else 0.2 * per_epoch

    def fit_to_time_budget(self) -> bool:
        """With ``train.time_limit``, the epoch count that fits the budget, re-planned after every epoch (the one
        planned as the last included: a run slowed down early gets its time back) from what epochs and evaluations
        cost now (at most 10x the configured count); whether the epoch just trained is the last."""
        cfg, done = self.cfg, self.epoch + 1
        if cfg.train.time_limit:
            per_epoch, per_eval = self.epoch_costs()
            new_epochs = self.agree(epochs_in_budget(cfg.train.time_limit * 60, self.elapsed(), per_epoch, per_eval,
                                                     cfg.train.eval_period, done, 10 * cfg.train.epochs))
            said = self.planned_epochs or cfg.train.epochs  # the count last printed: small re-plans stay quiet
            if self.main and abs(new_epochs - said) >= max(2, round(0.05 * said)):
                LOGGER.info("time limit %s min: %d epochs instead of %d", cfg.train.time_limit, new_epochs, said)
                self.planned_epochs = new_epochs
            self.epochs = new_epochs
        return done == self.epochs

    def schedule_span(self) -> tuple[float, float]:
        """Where the learning-rate schedule (0..1) stands at the start and at the end of the epoch about to train:
        the share of the planned epochs; with ``train.time_limit``, the share of the budget spent when the epoch
        starts, for the whole epoch (as Ultralytics' ``time=`` steps its schedule per epoch): the clock only moves
        forward, so a re-plan never sends the learning rate back up."""
        if not self.cfg.train.time_limit:
            return self.epoch / self.epochs, (self.epoch + 1) / self.epochs
        spent = self.agree(min(self.elapsed() / (self.cfg.train.time_limit * 60), 1.0))
        return spent, spent

    def agree(self, value):
        """Rank 0's ``value`` on every rank (a plan made from each rank's own clock could differ by one epoch)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def end_epoch(self, n: int, row: dict[str, Any], evaluate_now: bool) -> None:
        """Epoch ``n`` (1-based) has trained (rank 0): its evaluation when due, its row, best.pt, last.pt, epochN.pt."""
        if evaluate_now:  # the epoch's training is safe before evaluation starts; resumed, the evaluation runs then
            self.save("last.pt", n, pending_row=row)
            t_eval = self.clock()
            try:
                self.metrics = self.evaluate()
            except RuntimeError:
                if not self.stop.asked:
                    raise
                return  # the stop's signal also ended the evaluation's loader workers; resumed, it runs again
            self.eval_seconds.append(self.clock() - t_eval)
            m, val_loss = self.metrics, sum(self.metrics["val_loss"].values())
            row.update({f"val_{k}": v for k, v in m["val_loss"].items()}, map50=m["map50"], map50_07=m["map50_07"],
                       map50_95=m["map50_95"], precision=m["precision"], recall=m["recall"],
                       seconds=round(row["seconds"] + self.eval_seconds[-1], 1), eval_seconds=round(self.eval_seconds[-1], 2))
            LOGGER.info("epoch %d: mAP50 %.4f (07: %.4f), mAP50-95 %.4f, val loss %.4f", n, m["map50"], m["map50_07"],
                        m["map50_95"], val_loss)
            if (m["map50"], -val_loss) > self.best:
                self.best, self.best_epoch = (m["map50"], -val_loss), n
                self.save("best.pt", n)
        self.log.row(n, row)
        self.save("last.pt", n)
        if self.cfg.train.save_period and n % self.cfg.train.save_period == 0:
            self.save(f"epoch{n}.pt", n)

    def out_of_patience(self) -> bool:
        """``train.patience`` epochs since best.pt's (rank 0 decides, every rank follows); the run then ends early."""
        patience = self.cfg.train.patience
        stop = [bool(patience) and self.main and self.epoch - self.best_epoch >= patience]
        if self.world > 1:
            dist.broadcast_object_list(stop, src=0)
        if stop[0] and self.main:
            LOGGER.info("early stop: no better fitness for %d epochs since epoch %d (train.patience = %d)",
                        self.epoch - self.best_epoch, self.best_epoch, patience)
        self.stopped_early = stop[0]
        return stop[0]

    def evaluate(self) -> dict[str, Any]:
        """The EMA weights evaluated on the validation split, with the global RNGs left as they were: a run
        resumed from the last.pt saved before an evaluation continues exactly as the straight run did."""
        model = self.ema.ema if self.ema is not None else unwrap(self.model)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return evaluate(model, self.val_records, len(self.classes), self.spec, self.cfg.model.input_size,
                            self.cfg.eval, self.device, self.cfg.data.workers, self.loss_fn, progress=self.main)

    def elapsed(self) -> float:
        """Seconds trained, over all the invocations of this run."""
        return self.elapsed_before + self.clock() - self.t_start

    def save(self, name: str, next_epoch: int, pending_row: dict | None = None) -> None:
        """The run's state now, to resume with the (0-based) epoch ``next_epoch``, as ``run_dir / name``."""
        ema = self.ema
        state = TrainingState(
            model=unwrap(self.model).state_dict(), optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(),
            epoch=next_epoch, iteration=self.iteration, best_fitness=list(self.best), rng=rng_state(),
            ema=ema.ema.state_dict() if ema is not None else {}, ema_updates=ema.updates if ema is not None else 0,
            epochs=self.epochs, elapsed=self.elapsed(), pending_row=pending_row or {}, best_epoch=self.best_epoch)
        save_run(self.run_dir / name, ModelCard.of(self.cfg, self.classes, self.anchors), state)

    # ------------------------------------------------------------------ the end

    def ended(self) -> bool:
        """Whether the run is over: its epochs done, or train.patience ended it (not a signal, not stop_after)."""
        return not self.stop.asked and (self.epoch >= self.epochs or self.stopped_early)

    def strip_checkpoints(self) -> None:
        """A run that ended (rank 0): best.pt, and last.pt unless ``train.keep_last_state``, stripped to the card and
        the weights evaluation used (checkpoint.strip_run), for shipping."""
        if not (self.main and self.ended()):
            return
        names = ["best.pt"] + ([] if self.cfg.train.keep_last_state else ["last.pt"])
        sizes = {n: strip_run(self.run_dir / n) for n in names if (self.run_dir / n).is_file()}
        if sizes:
            said = ", ".join(f"{n} {a / 1e6:.1f} -> {b / 1e6:.1f} MB" for n, (a, b) in sizes.items())
            kept = " (last.pt kept whole: train.keep_last_state)" if self.cfg.train.keep_last_state else ""
            LOGGER.info("stripped for inference (the card and the EMA weights): %s%s", said, kept)

    def result(self, return_model: bool) -> dict[str, Any]:
        """The run's closing pictures and table (train.report.conclude), and its result: its folder, epochs, time,
        whether a signal or train.patience stopped it, the final metrics."""
        if self.main:
            report.conclude(self)
        final = {"run_dir": str(self.run_dir), "epochs": self.epoch, "best_map50": self.best[0],
                 "seconds": round(self.elapsed(), 1), "stopped": bool(self.stop.asked), "signal": self.stop.asked or None,
                 "early_stop": self.stopped_early}
        if self.metrics:
            m = self.metrics
            final.update(map50=m["map50"], map50_07=m["map50_07"], map50_95=m["map50_95"], classes=list(self.classes),
                         train_objects=[int(n) for n in class_counts(self.train_records, len(self.classes))[0]],
                         ap50_per_class=[float(v) for v in m["voc"]["ap"]])
        if return_model:
            final["state_dict"] = {k: v.detach().cpu().clone() for k, v in unwrap(self.model).state_dict().items()}
        return final
