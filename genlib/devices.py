"""Device selection: `auto` picks CUDA, else Apple MPS, else the CPU; explicit choices are honoured or refused."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass

import torch


class DeviceError(ValueError):
    """A device was asked for that this machine cannot provide."""


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a user's device string into a `torch.device`, refusing ones this machine lacks.

    "auto" prefers CUDA, then MPS, then CPU. "cuda", "cuda:N", "mps" and "cpu" are honoured
    only when available, with a message that says what to do otherwise.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"Unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps.") from e
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was asked for but no CUDA GPU is visible to PyTorch; use --device auto or cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{name} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s).")
        return device
    if device.type == "mps":
        if not _mps_available():
            raise DeviceError("Apple MPS was asked for but is not available here; use --device auto or cpu.")
        return device
    raise DeviceError(f"Device type {device.type!r} is not supported: use auto, cpu, cuda, cuda:N or mps.")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@dataclass(frozen=True, kw_only=True)
class DeviceInfo:
    """What the user should know about a device: a name, its memory where known, and bf16 support."""

    device: str
    kind: str
    name: str
    memory_gb: float | None
    bf16: bool

    def summary(self) -> str:
        mem = f", {self.memory_gb:.1f} GB" if self.memory_gb else ""
        return f"{self.kind.upper()}: {self.name}{mem}"


def describe_device(device: torch.device) -> DeviceInfo:
    """Describe `device` for people: GPU name and memory, or the CPU model and core count."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return DeviceInfo(device=str(device), kind="cuda", name=props.name,
                          memory_gb=props.total_memory / 2**30, bf16=torch.cuda.is_bf16_supported())
    if device.type == "mps":
        return DeviceInfo(device=str(device), kind="mps", name="Apple GPU (Metal)", memory_gb=None, bf16=True)
    return DeviceInfo(device=str(device), kind="cpu", name=f"{_cpu_name()} ({os.cpu_count()} cores)",
                      memory_gb=_host_memory_gb(), bf16=cpu_has_fast_bf16())


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 matrix units (AMX or AVX512-BF16), where bf16 autocast pays off."""
    flags = _cpu_flags()
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def _host_memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


@contextlib.contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """While training on a CPU, treat denormal floats (below 1.2e-38 in fp32) as zero.

    Why: Adam's moments of weights whose gradient is always zero (the blank border pixels of MNIST) decay by beta1
    every step into the denormal range, where x86 arithmetic is many times slower; the seed's VAE fell from 33k to
    23k images/s within 1,000 steps without this (2-core Xeon, bf16; scripts/bench.py's VAE rows show it).
    Numbers that small never change an update. The flag is per thread and a thread inherits it from the thread
    that created it, so this covers the calling thread; processes that train (the CLI, job workers) also call
    `flush_denormals_in_process` before torch starts its thread pool, which covers every intra-op thread.
    """
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def flush_denormals_in_process() -> bool:
    """Flush denormals to zero in this thread and in every thread it creates from now on (see flush_denormals).

    Call it first thing in a process that trains on the CPU, before torch's intra-op thread pool exists (threads
    inherit the flag only when they are created). Returns whether the CPU supports it.
    """
    return bool(torch.set_flush_denormal(True))


def device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator on `device` seeded from a CPU `generator`, so draws are reproducible and stay on the device."""
    if generator is None:
        return None
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return torch.Generator(device=device).manual_seed(seed)
