"""The RBM's fused CPU passes (cd_cpu.c, Hinton 2002's CD statistics and SplitMix64 draws, Steele et al. 2014):
compiled with the machine's C compiler on first use, cached per source and CPU, and called through ctypes.

Why C: on a CPU an eager CD-1 step of the seed's RBM is four matrix products and ~40 small PyTorch calls (sigmoids,
draws, sums, the loss's softplus), each a kernel launch and a memory pass; the small calls took half the step. The C
file makes them five passes. Where no compiler is found, or $GENLIB_FUSED_CD is 0, `load()` returns None with the
reason in `status()`, and the RBM runs its eager PyTorch step (the same maths, the same metrics).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from genlib.settings import FUSED_CD_ENV as ENV_SWITCH, current as current_settings

SOURCE = Path(__file__).with_name("cd_cpu.c")
# IEEE semantics kept except the order of float sums (-fassociative-math, which the row sums need to vectorise):
# NaN and infinity behave as usual, so a diverged model still shows NaN metrics
FLAGS = ("-O3", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
         "-fassociative-math")
NATIVE = ("-march=native",)  # this machine's vector units; dropped where the compiler refuses it
COMPILE_TIMEOUT_S = 120

_P, _N, _U = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64
_SIGNATURES = {
    "genlib_bernoulli": (_P, _P, _N, _U, _U),
    "genlib_bernoulli_u8": (_P, _P, _N, _U, _U),
    "genlib_sigmoid": (_P, _P, _N),
    "genlib_visible_stats": (_P, _N, _P, _P, _P, _N, _N, _P, _P, _P),
    "genlib_hidden_stats": (_P, _P, _N, _N, _P, _P, _P),
    "genlib_binary_mm": (_P, _P, _P, _P, _N, _N, _N, _N),
    "genlib_binary_tmm": (_P, _P, _P, _N, _N, _N, _N),
}
_RETURNS = {"genlib_binary_mm": _N, "genlib_binary_tmm": _N}  # 0: done; 1: dense or not binary, nothing written
# The share of ones above which the binary products are left to BLAS: a row-sum's time grows with the ones, and it
# overtook BLAS's at about a third (100 x 784 x 500, one thread, measured: 0.26 ms at 13%, 0.39 at 19%, 0.64 at 30%,
# against 0.73 ms).
BINARY_MAX_SHARE = 0.3


@dataclass(frozen=True)
class BuildStatus:
    """Whether the fused passes are in use, and why not when they are not."""

    ok: bool
    detail: str  # the library's path, or the reason the eager step runs


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and flags (a shared home folder may see several machines)."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text += "".join(sorted({line for line in f if line.startswith(("flags", "model name", "Features"))}))
    except OSError:
        pass
    return text


def _cache_dir() -> Path:
    return current_settings().cache_dir / "kernels"


def _compile(compiler: str, out: Path) -> str | None:
    """Build the library at `out` (atomically: a temporary file, then a rename); None on success, else the error."""
    out.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in (NATIVE, ()):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [compiler, *FLAGS, *extra, str(SOURCE), "-o", tmp, "-lm"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            done, err = None, str(e)
        if done is not None and done.returncode == 0:
            os.replace(tmp, out)
            return None
        err = done.stderr.strip()[-400:] if done is not None else err
        errors.append(f"{' '.join(cmd[:1] + list(extra))}: {err}")
        Path(tmp).unlink(missing_ok=True)
    return "; ".join(errors)


@functools.lru_cache(maxsize=1)
def _build() -> tuple[CDKernels | None, BuildStatus]:
    """Compile (or find in the cache) and load the library, once per process."""
    settings = current_settings()
    if not settings.fused_cd:
        return None, BuildStatus(False, f"${ENV_SWITCH}=0: the eager PyTorch step runs")
    compiler = settings.c_compiler or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        return None, BuildStatus(False, "no C compiler found (cc, gcc or clang): the eager PyTorch step runs")
    try:
        key = hashlib.sha256("\0".join([SOURCE.read_text(encoding="utf-8"), compiler, " ".join(FLAGS),
                                        _cpu_signature()]).encode()).hexdigest()[:16]
        path = _cache_dir() / f"cd_cpu-{key}.so"
        error = None if path.exists() else _compile(compiler, path)
    except OSError as e:  # no source file, or a cache folder that cannot be written
        error = str(e)
    if error is not None:
        return None, BuildStatus(False, f"compiling {SOURCE.name} failed ({error}): the eager PyTorch step runs")
    try:
        lib = ctypes.CDLL(str(path))
        for name, args in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, _RETURNS.get(name)
    except (OSError, AttributeError) as e:
        return None, BuildStatus(False, f"loading {path} failed ({e}): the eager PyTorch step runs")
    return CDKernels(lib), BuildStatus(True, str(path))


def status() -> BuildStatus:
    """Whether `load()` gives the fused passes in this process, and why not (builds the library if needed)."""
    return _build()[1]


def new_stream(generator: torch.Generator | None = None) -> list[int]:
    """A fresh random stream [key, counter] for the draws: a 62-bit key from PyTorch's CPU generator (so that
    torch.manual_seed makes the fused draws reproducible, as it does PyTorch's own), counter 0."""
    return [int(torch.randint(0, 2**62, (), dtype=torch.int64, generator=generator).item()), 0]


class CDKernels:
    """The fused passes over contiguous float32 CPU tensors; draws come from a (key, counter) SplitMix64 stream.

    `stream` is [key, counter] (`new_stream`): a draw call reads words counter, counter + 1, ... and advances the
    counter past them, so the calls that share a stream never share a word.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib

    @staticmethod
    def _ptr(t: torch.Tensor) -> int:
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"fused CD passes take contiguous float32 CPU tensors, got {t.dtype} on {t.device}")
        return t.data_ptr()

    def bernoulli_(self, p: torch.Tensor, out: torch.Tensor, stream: list[int]) -> torch.Tensor:
        """out = Bernoulli(p) in {0, 1} (p's shape), u < p with 24-bit uniforms."""
        n = p.numel()
        self._lib.genlib_bernoulli(self._ptr(p), self._ptr(out), n, stream[0], stream[1])
        stream[1] += (n + 1) // 2  # two draws per 64-bit word
        return out

    def bernoulli_u8_(self, x: torch.Tensor, out: torch.Tensor, stream: list[int]) -> torch.Tensor:
        """out = Bernoulli(x / 255) in {0, 1} for contiguous uint8 CPU bytes x (out float32, x's element count)."""
        if x.dtype != torch.uint8 or x.device.type != "cpu" or not x.is_contiguous() or x.numel() != out.numel():
            raise ValueError(f"bernoulli_u8_ takes contiguous uint8 CPU bytes and an output of their size, got "
                             f"{x.dtype} on {x.device}")
        n = x.numel()
        self._lib.genlib_bernoulli_u8(x.data_ptr(), self._ptr(out), n, stream[0], stream[1])
        stream[1] += (n + 1) // 2
        return out

    def sigmoid_(self, a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out = sigmoid(a); out may be a."""
        self._lib.genlib_sigmoid(self._ptr(a), self._ptr(out), a.numel())
        return out

    def visible_stats(self, recon: torch.Tensor, v0: torch.Tensor, vk: torch.Tensor, b: torch.Tensor,
                      dv: torch.Tensor, v0_sum: torch.Tensor, out: torch.Tensor) -> None:
        """From (B, n_v) rows v0, vk and the reconstructions of v0's first R rows, recon (R, n_v), R <= B:
        dv = sum_b (v0 - vk), v0_sum = sum_b v0 (n_v); out[0] = sum (recon - v0[:R])^2 (NaN if recon is not
        finite), out[1] = dv . b; `out` is float64."""
        rows, n_v = v0.shape
        if recon.shape[0] > rows or recon.shape[1:] != v0.shape[1:]:
            raise ValueError(f"reconstructions {tuple(recon.shape)} do not fit visibles {tuple(v0.shape)}")
        self._lib.genlib_visible_stats(self._ptr(recon), recon.shape[0], self._ptr(v0), self._ptr(vk), self._ptr(b),
                                       rows, n_v, self._ptr(dv), self._ptr(v0_sum), out.data_ptr())

    def hidden_stats(self, logits: torch.Tensor, p_h: torch.Tensor, dh: torch.Tensor, p0_sum: torch.Tensor,
                     out: torch.Tensor) -> None:
        """From [a0; ak] and [p0; pk] (2B, n_h): dh = sum_b (p0 - pk), p0_sum = sum_b p0 (n_h); out[2] =
        sum softplus(a0) - sum softplus(ak) (NaN if a logit is not finite); p_h becomes [p0; -pk] in place."""
        rows2, n_h = logits.shape
        self._lib.genlib_hidden_stats(self._ptr(logits), self._ptr(p_h), rows2 // 2, n_h, self._ptr(dh),
                                      self._ptr(p0_sum), out.data_ptr())

    def binary_mm_(self, v: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor, out: torch.Tensor) -> bool:
        """out = bias + v @ wt for binary v (n, k) in {0, 1}, wt (k, m), bias (m), out (n, m), as sums of wt's rows
        at v's ones. False, out untouched, where more than BINARY_MAX_SHARE of v are ones (BLAS is faster there) or
        v holds a value other than 0 and 1."""
        (n, k), m = v.shape, wt.shape[1]
        if wt.shape[0] != k or bias.shape != (m,) or out.shape != (n, m):
            raise ValueError(f"binary_mm_: v {tuple(v.shape)}, wt {tuple(wt.shape)}, bias {tuple(bias.shape)} and "
                             f"out {tuple(out.shape)} do not fit")
        return not self._lib.genlib_binary_mm(self._ptr(v), self._ptr(wt), self._ptr(bias), self._ptr(out), n, k, m,
                                              int(BINARY_MAX_SHARE * n * k))

    def binary_tmm_(self, v: torch.Tensor, p: torch.Tensor, out: torch.Tensor) -> bool:
        """out = v^T @ p for binary v (n, k) in {0, 1}, p (n, m), out (k, m), as sums of p's rows where each column
        of v is one. False, out untouched, where more than BINARY_MAX_SHARE of v are ones (BLAS is faster there) or
        v holds a value other than 0 and 1."""
        (n, k), m = v.shape, p.shape[1]
        if p.shape[0] != n or out.shape != (k, m):
            raise ValueError(f"binary_tmm_: v {tuple(v.shape)}, p {tuple(p.shape)} and out {tuple(out.shape)} do "
                             f"not fit")
        return not self._lib.genlib_binary_tmm(self._ptr(v), self._ptr(p), self._ptr(out), n, k, m,
                                               int(BINARY_MAX_SHARE * n * k))


def load() -> CDKernels | None:
    """The fused passes (one object per process), or None where they cannot run here (`status()` says why)."""
    return _build()[0]
