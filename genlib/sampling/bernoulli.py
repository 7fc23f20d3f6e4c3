"""Every Bernoulli draw in genlib and the dashboard (the RBM's Gibbs chains, AIS, binarised data, random binary starts),
as u < p with 15-bit uniforms cut four at a time from 64-bit random words.

Why: on a CPU torch.rand makes one float per draw from the Mersenne twister, and a CD-1 step of the seed's RBM
draws 180k of them (the data, h0 and v1); that was a quarter of the step. `random_()` on int64 yields 63 random
bits per call, so one call gives four 16-bit lanes; masking each lane to 15 bits makes them uniform on
{0, ..., 32767} (the top lane's sign bit is always 0, the mask drops it everywhere). Then
P(u < 32768 p) = ceil(32768 p) / 32768, within 2^-15 = 3.1e-5 of p: far below the Monte-Carlo noise of one draw,
and below bf16's own rounding of p. Measured on a 2-core Xeon: 50k draws take 69-77 us instead of 153-173 us.

float64 callers (the reference tests) keep exact float64 uniforms: `draw_` falls back to torch.rand for them.
"""

from __future__ import annotations

import torch

LANES = 4  # 16-bit lanes per int64 word
SCALE = 32768.0  # 2^15: uniforms are integers in [0, SCALE)


def words_for(n: int, device: torch.device | str) -> torch.Tensor:
    """A reusable buffer of random words for up to n draws: (ceil(n / 4),) int64."""
    return torch.empty((n + LANES - 1) // LANES, dtype=torch.int64, device=device)


def uniform15_(words: torch.Tensor, shape: torch.Size | tuple[int, ...],
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill `words` with fresh random bits; return a view of them as int16 uniforms on [0, 32767] of `shape`."""
    n = 1
    for s in shape:
        n *= s
    if words.numel() * LANES < n:
        raise ValueError(f"the word buffer holds {words.numel() * LANES} draws, {n} asked")
    lanes = words.random_(generator=generator).view(torch.int16)[:n]  # (n,) int16, each lane 16 random bits
    return lanes.bitwise_and_(0x7FFF).view(shape)  # 15 bits: uniform on {0, ..., 32767}


def draw_(p: torch.Tensor, out: torch.Tensor, words: torch.Tensor | None = None,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli(p) into `out` (p's shape; any dtype; values 0 or 1). `words` is a buffer from `words_for` (made
    here when None); `generator` must live on p's device."""
    if p.dtype == torch.float64:  # exact: float64 uniforms, P(u < p) = p for every float64 p
        u = torch.rand(p.shape, generator=generator, device=p.device, dtype=torch.float64)
        return torch.lt(u, p, out=out)
    if words is None:
        words = words_for(p.numel(), p.device)
    u = uniform15_(words, p.shape, generator)  # (p.shape) int16
    # the threshold in float32 whatever p's dtype: 32768 p is exact in p's own type (a power of two), and an int16
    # compared with a float32 promotes exactly (compared with a bf16 it would round to 8 significant bits)
    threshold = torch.mul(p, SCALE, out=torch.empty(p.shape, dtype=torch.float32, device=p.device))
    return torch.lt(u, threshold, out=out)


def bernoulli(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli(p) as a new tensor of p's dtype, on p's device (`generator` must live there)."""
    return draw_(p, torch.empty_like(p), generator=generator)


def random_binary(n: int, d: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n vectors (n, d) of fair coin flips, uniform over {0, 1}^d: a chain's random binary start. Exact for every
    dtype (P(u < 16384) = 1/2 for 15-bit u). `generator` must live on `device` (genlib.devices.device_generator
    seeds one there from a CPU generator)."""
    return bernoulli(torch.full((n, d), 0.5, dtype=dtype, device=device), generator)
