"""Device choice, precision and backend settings, on this CPU-only machine."""

from __future__ import annotations

import logging

import pytest
import torch

from steps.runtime import StepError
from steps.train.device import configure_backends, describe_device, resolve_precision, select_device

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="checks the machine without a GPU")
def test_auto_falls_back_to_cpu_with_a_warning_and_cuda_is_refused(caplog):
    caplog.set_level(logging.WARNING)
    assert select_device("auto") == torch.device("cpu")
    assert "no CUDA device found" in caplog.text
    caplog.clear()
    assert select_device("cpu") == torch.device("cpu") and not caplog.text
    with pytest.raises(StepError, match="^hyperparameter 'device': cuda requested but no CUDA device"):
        select_device("cuda")


@pytest.mark.parametrize("amp", ["auto", "off", "bf16", "fp16"])
def test_mixed_precision_is_off_on_cpu(amp):
    precision = resolve_precision(amp, torch.device("cpu"))
    assert precision.name == "fp32" and precision.grad_scaler(torch.device("cpu")) is None


@pytest.fixture
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)
    torch.use_deterministic_algorithms(False)


def test_cpu_threads_is_applied_and_shown_and_none_keeps_the_current_count(restore_threads):
    configure_backends(torch.device("cpu"), deterministic=False, cpu_threads=1)
    assert torch.get_num_threads() == 1 and describe_device(torch.device("cpu")) == "cpu (1 thread)"
    torch.set_num_threads(2)
    configure_backends(torch.device("cpu"), deterministic=True)
    assert torch.get_num_threads() == 2 and torch.are_deterministic_algorithms_enabled()
    configure_backends(torch.device("cpu"), deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()  # a later run in the process is not stuck with it
