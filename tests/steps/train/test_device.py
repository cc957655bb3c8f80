"""Device choice, precision and backend settings, on this CPU-only machine."""

from __future__ import annotations

import logging

import pytest
import torch

from steps.runtime import StepError
from steps.train.device import configure_backends, describe_device, resolve_precision, select_device, torch_threads

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


def test_cpu_threads_apply_inside_and_are_restored_after():
    previous = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1 and describe_device(torch.device("cpu")) == "cpu (1 thread)"
    assert torch.get_num_threads() == previous
    with torch_threads(None):  # None: torch's own count, untouched
        assert torch.get_num_threads() == previous


def test_deterministic_mode_is_set_either_way():
    try:
        configure_backends(torch.device("cpu"), deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        configure_backends(torch.device("cpu"), deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()  # a later run in the process is not stuck with it
    finally:
        torch.use_deterministic_algorithms(False)
