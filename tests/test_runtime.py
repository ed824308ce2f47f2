"""What ``auto`` picks for training's autocast and layout and for inference's precision, on each kind of machine."""

from __future__ import annotations

import pytest
import torch

from utils import runtime
from utils.runtime import amp_dtype, channels_last_on, inference_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("native_bf16", [True, False], ids=["bf16-cpu", "plain-cpu"])
def test_auto_follows_the_machine(monkeypatch: pytest.MonkeyPatch, native_bf16: bool) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native_bf16)
    # train.amp=auto: fp16 (with GradScaler) on CUDA; bf16 on a CPU with the instructions, else no autocast
    assert amp_dtype("auto", CUDA) == torch.float16
    assert amp_dtype("auto", CPU) == (torch.bfloat16 if native_bf16 else None)
    # --precision auto: the same choice for inference
    assert inference_precision("auto", CUDA) == "fp16"
    assert inference_precision("auto", CPU) == ("bf16" if native_bf16 else "fp32")
    # a named setting is kept whatever the machine
    assert amp_dtype("off", CPU) is None and amp_dtype("bf16", CPU) == torch.bfloat16 and amp_dtype("fp16", CUDA) == torch.float16
    assert inference_precision("fp32", CPU) == "fp32" and inference_precision("bf16", CUDA) == "bf16"


def test_channels_last_auto_is_on_for_the_cpu() -> None:
    assert channels_last_on("auto", CPU) and not channels_last_on("auto", CUDA)
    assert channels_last_on("on", CUDA) and not channels_last_on("off", CPU)


def test_bf16_named_on_a_cpu_without_it_warns(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    assert amp_dtype("bf16", CPU) == torch.bfloat16
    assert "emulated" in caplog.text


def test_a_stop_keeps_a_python_sigchld_handler_until_it_ends() -> None:
    # after SIGTERM the DataLoader's SIGCHLD handler is switched off; a SIGCHLD already delivered must still find a
    # Python callable (SIG_DFL there makes Python print "Signal 17 ignored due to race condition" with a traceback)
    import os
    import signal

    from utils.train.signals import StopSignals

    before = signal.getsignal(signal.SIGCHLD)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.asked == signal.SIGTERM
        during = signal.getsignal(signal.SIGCHLD)
        assert callable(during) and during is not before
        during(signal.SIGCHLD, None)  # does nothing
        os.kill(os.getpid(), signal.SIGCHLD)  # handled quietly
    assert signal.getsignal(signal.SIGCHLD) is before and signal.getsignal(signal.SIGTERM) != stop._on_signal
