"""Thermodynamic observables of 2-D Ising configurations (energy, |m|, specific heat, susceptibility, spin-spin
correlation) with error bars, and the exact results they are checked against: enumeration of tiny lattices, Onsager's
T_c and energy (1944) and Yang's spontaneous magnetisation (1952), as used by Torlai & Melko, PRB 94, 165134 (2016).

Spins are +-1 tensors (n, L, L) on a periodic lattice with J = 1 and k_B = 1; `to_spins` converts {0, 1} visibles.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

T_C = 2.0 / math.log(1.0 + math.sqrt(2.0))  # Onsager's critical temperature, 2.269185...


# ---- per-configuration quantities ----

def to_spins(x: torch.Tensor) -> torch.Tensor:
    """{0, 1} visibles or [0, 1] images, (n, L, L), (n, 1, L, L) or (n, L*L) -> +-1 float spins (n, L, L)."""
    if x.ndim == 4:
        x = x.squeeze(1)
    elif x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(f"{x.shape[1]} visibles are not a square lattice")
        x = x.reshape(x.shape[0], side, side)
    if x.ndim != 3:
        raise ValueError(f"expected configurations (n, L, L), got shape {tuple(x.shape)}")
    return torch.where(x.float() > 0.5, 1.0, -1.0)


def _check_spins(s: torch.Tensor) -> None:
    if s.ndim != 3 or s.shape[1] != s.shape[2] or s.shape[1] < 3:
        raise ValueError(f"spins must be (n, L, L) with L >= 3, got shape {tuple(s.shape)}")


def _floating(s: torch.Tensor) -> torch.Tensor:
    return s if s.is_floating_point() else s.float()  # int8 spins -> float32; float64 stays exact


def energy_per_spin(s: torch.Tensor) -> torch.Tensor:
    """E / N = -(1/N) sum_<ij> s_i s_j over nearest-neighbour bonds (each counted once) for spins (n, L, L) -> (n,)."""
    _check_spins(s)
    s = _floating(s)
    bonds = s * torch.roll(s, 1, dims=1) + s * torch.roll(s, 1, dims=2)  # right and down bond of every site (n, L, L)
    return -bonds.mean(dim=(1, 2))


def magnetisation(s: torch.Tensor) -> torch.Tensor:
    """m = (1/N) sum_i s_i for spins (n, L, L) -> (n,)."""
    _check_spins(s)
    return _floating(s).mean(dim=(1, 2))


def correlation_function(s: torch.Tensor) -> torch.Tensor:
    """G(r) = <s_i s_{i+r}> for r = 0..L//2 along both axes, averaged over sites and configurations (L//2+1,)."""
    _check_spins(s)
    s = _floating(s)
    side = s.shape[1]
    out = [torch.stack([(s * torch.roll(s, r, dims=d)).mean() for d in (1, 2)]).mean() for r in range(side // 2 + 1)]
    return torch.stack(out)


# ---- ensemble averages with error bars ----

def blocking_error(x: torch.Tensor, min_blocks: int = 32) -> float:
    """Standard error of the mean of a series x (n,) by blocking (Flyvbjerg & Petersen 1989): the largest estimate
    over block sizes 1, 2, 4, ... that leave at least `min_blocks` blocks, so correlations between neighbours count."""
    x = x.double().flatten()
    best = 0.0
    while x.numel() >= min_blocks:
        n = x.numel()
        best = max(best, float(x.std(unbiased=True)) / math.sqrt(n)) if n > 1 else best
        x = x[: n - n % 2].view(-1, 2).mean(1)  # (n // 2,) block means
    return best


def _bootstrap_indices(n: int, n_boot: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (n_boot, n), generator=generator)  # (n_boot, n) resampled configurations


@dataclass(frozen=True, kw_only=True)
class Thermo:
    """Ensemble averages at one temperature, each with its standard error: per-spin energy, <|m|>, specific heat
    C = N (<e^2> - <e>^2) / T^2 and susceptibility chi = N (<m^2> - <|m|>^2) / T (per spin; the finite-lattice form)."""

    T: float
    n: int
    energy: float
    energy_err: float
    abs_m: float
    abs_m_err: float
    heat: float
    heat_err: float
    chi: float
    chi_err: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def thermodynamics(s: torch.Tensor, T: float, *, n_boot: int = 200, seed: int = 0) -> Thermo:
    """Averages of spins (n, L, L) sampled at temperature T; errors by blocking (means) and bootstrap (C, chi)."""
    _check_spins(s)
    if not (isinstance(T, (int, float)) and T > 0):
        raise ValueError(f"temperature must be positive, got {T!r}")
    n_spins = s.shape[1] * s.shape[2]
    e = energy_per_spin(s).double().cpu()  # (n,)
    m = magnetisation(s).double().cpu().abs()  # (n,)
    n = e.numel()
    if n < 2:
        raise ValueError("need at least two configurations for error bars")

    def heat(ei: torch.Tensor) -> torch.Tensor:  # ei (..., n) -> (...)
        return n_spins * ei.var(dim=-1, unbiased=False) / T**2

    def chi(mi: torch.Tensor) -> torch.Tensor:
        return n_spins * ((mi**2).mean(-1) - mi.mean(-1) ** 2) / T

    idx = _bootstrap_indices(n, n_boot, torch.Generator().manual_seed(seed))
    return Thermo(T=float(T), n=n, energy=float(e.mean()), energy_err=blocking_error(e),
                  abs_m=float(m.mean()), abs_m_err=blocking_error(m),
                  heat=float(heat(e)), heat_err=float(heat(e[idx]).std()),
                  chi=float(chi(m)), chi_err=float(chi(m[idx]).std()))


# ---- exact results ----

def exact_thermodynamics(L: int, T: float) -> dict[str, float]:
    """Exact <e>, <|m|>, C and chi of an L x L periodic lattice (L <= 4: 2^16 states) by enumerating every state."""
    if not (isinstance(L, int) and 3 <= L <= 4):
        raise ValueError(f"enumeration is for L = 3 or 4 (2^(L*L) states), got {L!r}")
    n = L * L
    codes = torch.arange(2**n, dtype=torch.int64)
    bits = (codes.unsqueeze(1) >> torch.arange(n)) & 1  # (2^n, n)
    s = (bits * 2 - 1).double().reshape(-1, L, L)
    e, m = energy_per_spin(s).double(), magnetisation(s).double().abs()  # (2^n,)
    logw = -n * e / T
    w = torch.softmax(logw, 0)  # Boltzmann weights exp(-E/T) / Z
    e1, e2, m1, m2 = (w * e).sum(), (w * e * e).sum(), (w * m).sum(), (w * m * m).sum()
    return {"energy": float(e1), "abs_m": float(m1), "heat": float(n * (e2 - e1**2) / T**2),
            "chi": float(n * (m2 - m1**2) / T)}


def onsager_magnetisation(T: float) -> float:
    """Yang's spontaneous magnetisation of the infinite lattice: (1 - sinh(2/T)^-4)^(1/8) below T_c, 0 above."""
    if T >= T_C:
        return 0.0
    return (1.0 - math.sinh(2.0 / T) ** -4) ** 0.125


def _elliptic_k(k: float) -> float:
    """Complete elliptic integral of the first kind K(k) by the arithmetic-geometric mean, K = pi / (2 AGM(1, k'))."""
    a, b = 1.0, math.sqrt(max(0.0, 1.0 - k * k))
    for _ in range(60):
        a, b = (a + b) / 2, math.sqrt(a * b)
        if abs(a - b) < 1e-15:
            break
    return math.pi / (2 * a)


def onsager_energy(T: float) -> float:
    """Onsager's energy per spin of the infinite lattice: -coth(2b) [1 + (2/pi)(2 tanh^2(2b) - 1) K(k)],
    k = 2 sinh(2b) / cosh^2(2b), b = 1/T (finite at T_c: the log singularity is multiplied by zero)."""
    b = 1.0 / T
    k = min(2 * math.sinh(2 * b) / math.cosh(2 * b) ** 2, 1.0 - 1e-16)
    return -(1.0 / math.tanh(2 * b)) * (1 + (2 / math.pi) * (2 * math.tanh(2 * b) ** 2 - 1) * _elliptic_k(k))
