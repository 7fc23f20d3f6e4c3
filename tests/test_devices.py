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


def test_flush_denormals_is_scoped_to_cpu_training():
    import torch

    from genlib.devices import flush_denormals

    tiny = torch.tensor([1e-40], dtype=torch.float32)  # a denormal float32
    assert (tiny * 1.0).item() != 0.0
    with flush_denormals(torch.device("cpu")):
        assert (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() != 0.0  # restored: nothing outside training changes
