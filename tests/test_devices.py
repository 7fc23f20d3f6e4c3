"""Devices: auto falls back to the CPU here; explicit devices are honoured or refused with a clear message."""

import pytest
import torch

from genlib.devices import DeviceError, describe_device, resolve_device


def test_auto_picks_best_available():
    d = resolve_device("auto")
    if torch.cuda.is_available():
        assert d.type == "cuda"
    else:
        assert d.type in ("mps", "cpu")


def test_cpu_is_honoured_and_described():
    d = resolve_device("cpu")
    assert d == torch.device("cpu")
    info = describe_device(d)
    assert info.kind == "cpu" and info.name and info.summary().startswith("CPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_refused_with_advice():
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_nonsense_is_refused():
    with pytest.raises(DeviceError):
        resolve_device("tpu9")
    with pytest.raises(DeviceError):
        resolve_device("quantum")
