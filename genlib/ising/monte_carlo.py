"""Monte Carlo sampler of the 2-D ferromagnetic Ising model (J = 1, periodic L x L): checkerboard Metropolis
(Metropolis et al. 1953) over many independent chains at once, and the Wolff cluster update (Wolff 1989) where
Metropolis slows down near T_c; the training data of Torlai & Melko, PRB 94, 165134 (2016).

Chains are a batch tensor of +-1 spins (chains, L, L) on any torch device. One "sweep" is one Metropolis sweep (every
site offered one flip), plus one Wolff cluster flip per chain when the temperature is within WOLFF_WINDOW of T_c
(algorithm "auto"); algorithm "wolff" makes a sweep one cluster flip alone. The sweeps of equilibration and between
kept samples are chosen from the measured integrated autocorrelation time of the energy and |m| and reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from genlib.config import check, check_choice, check_int, is_int, is_number
from genlib.ising.observables import T_C, energy_per_spin, magnetisation

ALGORITHMS = ("auto", "metropolis", "wolff")
WOLFF_WINDOW = 0.6  # "auto" adds a Wolff flip per sweep for |T - T_c| <= this, where Metropolis slows down


@dataclass(frozen=True, kw_only=True)
class IsingConfig:
    """What to sample: lattice, temperatures, configurations per temperature, seed and the Monte Carlo schedule."""

    L: int = 8
    temperatures: tuple[float, ...] = (T_C,)
    n: int = 1000  # configurations kept per temperature
    seed: int = 0
    chains: int = 1000  # independent chains per temperature (at most n are used)
    algorithm: str = "auto"
    equilibration: int | None = None  # sweeps before the pilot; None: min_equilibration, then up to 20 tau_int
    decorrelation: int | None = None  # sweeps between kept samples of one chain; None: ceil(2 tau_int), at least 1
    min_equilibration: int = 100
    pilot: int = 200  # sweeps whose energy and |m| series give tau_int (they count as equilibration too)

    def __post_init__(self) -> None:
        check(is_int(self.L) and self.L % 2 == 0 and 4 <= self.L <= 128,
              f"L must be an even int in [4, 128] (the checkerboard needs even L), got {self.L!r}")
        check(isinstance(self.temperatures, tuple) and len(self.temperatures) > 0
              and all(is_number(t) and 0.05 <= t <= 100 for t in self.temperatures),
              f"temperatures must be a non-empty tuple of numbers in [0.05, 100], got {self.temperatures!r}")
        for name in ("n", "chains", "min_equilibration"):
            check_int(name, getattr(self, name), 1, 10**7)
        # fewer pilot sweeps cannot measure an autocorrelation time
        check_int("pilot", self.pilot, 20, 10**7)
        for name in ("equilibration", "decorrelation"):  # None: chosen from tau_int
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 0, 10**7)
        check_choice("algorithm", self.algorithm, ALGORITHMS)
        check_int("seed", self.seed, 0, 2**62 - 1)


# ---- updates ----

def random_spins(chains: int, L: int, *, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Infinite-temperature start: (chains, L, L) float spins, each +-1 with probability 1/2."""
    u = torch.rand(chains, L, L, generator=generator, device=device)
    return torch.where(u < 0.5, 1.0, -1.0)


def checkerboard(L: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The two sublattices (2, L, L) bool: a site's four neighbours are all on the other one (L even)."""
    i = torch.arange(L, device=device)
    black = (i.view(-1, 1) + i.view(1, -1)) % 2 == 0
    return torch.stack([black, ~black])


def neighbour_sum(s: torch.Tensor) -> torch.Tensor:
    """Sum of the four nearest neighbours of every site, periodic (chains, L, L)."""
    return (torch.roll(s, 1, 1) + torch.roll(s, -1, 1)) + (torch.roll(s, 1, 2) + torch.roll(s, -1, 2))


def flip_probability(s: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Metropolis acceptance min(1, exp(-beta dE)) of flipping each site alone, dE = 2 s_i sum_nn s_j (chains, L, L);
    beta is (chains, 1, 1)."""
    return torch.exp(-beta * 2 * s * neighbour_sum(s)).clamp_(max=1.0)


def metropolis_sweep(s: torch.Tensor, beta: torch.Tensor, masks: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """One checkerboard sweep: each sublattice in turn, all its sites at once (their dE depend only on the other one).

    s (chains, L, L) +-1, beta (chains, 1, 1), masks (2, L, L) from `checkerboard`; returns the new spins.
    """
    for mask in masks:
        u = torch.rand(s.shape, generator=generator, device=s.device)
        flip = (u < flip_probability(s, beta)) & mask
        s = torch.where(flip, -s, s)
    return s


def wolff_update(s: torch.Tensor, beta: torch.Tensor, generator: torch.Generator,
                 active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One Wolff cluster flip per chain: the cluster of a random site through bonds between equal neighbours, each
    open with p = 1 - exp(-2 beta), then flipped.

    Every bond is drawn once, up front (the right and the down bond of each site), so the cluster is the seed's
    connected component of the open bonds: the same law as Wolff's one-bond-at-a-time growth, grown for all chains at
    once by one neighbour layer per iteration. s (chains, L, L), beta (chains, 1, 1), active (chains,) bool: False
    chains take no step. Returns the new spins and the cluster sizes (chains,).
    """
    chains, L, _ = s.shape
    p_add = 1.0 - torch.exp(-2.0 * beta)  # (chains, 1, 1)
    u = torch.rand(2, chains, L, L, generator=generator, device=s.device)
    right = (u[0] < p_add) & (torch.roll(s, -1, 2) == s)  # bond (i, j)-(i, j+1) open (chains, L, L)
    down = (u[1] < p_add) & (torch.roll(s, -1, 1) == s)  # bond (i, j)-(i+1, j) open
    start = torch.randint(0, L * L, (chains,), generator=generator, device=s.device)
    cluster = torch.zeros(chains, L * L, dtype=torch.bool, device=s.device)
    cluster[torch.arange(chains, device=s.device), start] = True
    cluster = cluster.view(chains, L, L)
    if active is not None:
        cluster &= active.view(-1, 1, 1)
    size = cluster.sum()
    while True:
        # a site joins when a cluster neighbour reaches it through an open bond: from the left, right, up, down
        cluster = (cluster | torch.roll(cluster & right, 1, 2) | (torch.roll(cluster, -1, 2) & right)
                   | torch.roll(cluster & down, 1, 1) | (torch.roll(cluster, -1, 1) & down))
        new_size = cluster.sum()
        if bool(new_size == size):
            break
        size = new_size
    return torch.where(cluster, -s, s), cluster.sum(dim=(1, 2))


# ---- autocorrelation ----

def integrated_autocorrelation_time(x: torch.Tensor, c: float = 5.0) -> float:
    """tau_int = 1/2 + sum_t rho(t) of series x (sweeps, chains), the autocorrelation averaged over chains, summed up
    to Sokal's self-consistent window W >= c tau_int (Sokal 1997). 0.5 means uncorrelated (or constant) series."""
    x = x.double().cpu()
    steps = x.shape[0]
    x = x - x.mean()  # one mean for all chains: they sample the same distribution
    f = torch.fft.rfft(x, n=2 * steps, dim=0)
    acov = torch.fft.irfft(f * f.conj(), n=2 * steps, dim=0)[:steps].mean(1)  # (steps,)
    acov = acov / torch.arange(steps, 0, -1, dtype=torch.float64)  # unbiased at every lag
    if acov[0] <= 1e-14:
        return 0.5
    rho = (acov / acov[0]).tolist()
    tau = 0.5
    for w in range(1, steps):
        tau += rho[w]
        if w >= c * tau:
            return max(tau, 0.5)
    return max(tau, 0.5)  # no window found: the pilot was too short, this underestimates


# ---- sampling ----

@dataclass(frozen=True, kw_only=True)
class SamplingReport:
    """How one temperature was sampled: the chosen schedule and what it was chosen from."""

    T: float
    algorithm: str  # "metropolis", "metropolis+wolff" or "wolff"
    chains: int
    tau_energy: float  # integrated autocorrelation times, in sweeps, from the pilot
    tau_abs_m: float
    equilibration: int  # sweeps before the first kept sample (pilot included)
    decorrelation: int  # sweeps between kept samples of a chain
    sweeps: int  # all sweeps run
    mean_cluster: float | None  # mean Wolff cluster size over the run (sites), when clusters were flipped
    seconds: float


def temperature_seed(seed: int, T: float) -> int:
    """The generator seed of one temperature, so every (L, T, n, seed) is reproducible on its own."""
    return (seed * 1_000_003 + int(round(T * 1e6))) % 2**62


def _mode(algorithm: str, T: float) -> str:
    if algorithm == "auto":
        return "metropolis+wolff" if abs(T - T_C) <= WOLFF_WINDOW else "metropolis"
    return algorithm


def sample_temperature(cfg: IsingConfig, T: float, *, device: torch.device | str = "cpu",
                       on_progress=None) -> tuple[torch.Tensor, SamplingReport]:
    """cfg.n configurations (n, L, L) int8 +-1 at temperature T, and how they were sampled.

    Chains start ordered below T_c and at random above, equilibrate, measure tau_int in a pilot, equilibrate further
    if needed (to 20 tau_int), then keep every `decorrelation` sweeps a snapshot of every chain until n are kept.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(temperature_seed(cfg.seed, T))
    chains = min(cfg.chains, cfg.n)
    mode = _mode(cfg.algorithm, T)
    masks = checkerboard(cfg.L, device)
    beta = torch.full((chains, 1, 1), 1.0 / T, device=device)
    if T < T_C:  # ordered start (each chain all up or all down): no stripe states that Metropolis is slow to undo
        sign = torch.where(torch.rand(chains, 1, 1, generator=g, device=device) < 0.5, 1.0, -1.0)
        s = sign.expand(chains, cfg.L, cfg.L).clone()
    else:  # disordered start
        s = random_spins(chains, cfg.L, generator=g, device=device)
    clusters = [0, 0]  # total size, count

    def sweep(s: torch.Tensor) -> torch.Tensor:
        if mode != "wolff":
            s = metropolis_sweep(s, beta, masks, g)
        if mode != "metropolis":
            s, size = wolff_update(s, beta, g)
            clusters[0] += int(size.sum())
            clusters[1] += chains
        return s

    done = 0
    first = cfg.equilibration if cfg.equilibration is not None else cfg.min_equilibration
    for _ in range(first):
        s = sweep(s)
    done += first
    e_series, m_series = [], []
    for _ in range(cfg.pilot):
        s = sweep(s)
        e_series.append(energy_per_spin(s))
        m_series.append(magnetisation(s).abs())
    done += cfg.pilot
    tau_e = integrated_autocorrelation_time(torch.stack(e_series))  # series (pilot, chains)
    tau_m = integrated_autocorrelation_time(torch.stack(m_series))
    tau = max(tau_e, tau_m)
    if cfg.equilibration is None:
        for _ in range(max(0, math.ceil(20 * tau) - done)):
            s = sweep(s)
            done += 1
    equilibration = done
    dec = cfg.decorrelation if cfg.decorrelation is not None else max(1, math.ceil(2 * tau))
    kept = []
    rounds = -(-cfg.n // chains)
    for r in range(rounds):
        if r:  # the first snapshot follows the equilibration directly
            for _ in range(dec):
                s = sweep(s)
            done += dec
        kept.append(s.to(torch.int8))
        if on_progress:
            on_progress(r + 1, rounds)
    spins = torch.cat(kept)[: cfg.n]  # (n, L, L): round-major, so neighbours in the list are different chains
    report = SamplingReport(T=float(T), algorithm=mode, chains=chains, tau_energy=round(tau_e, 3),
                            tau_abs_m=round(tau_m, 3), equilibration=equilibration, decorrelation=dec, sweeps=done,
                            mean_cluster=round(clusters[0] / clusters[1], 2) if clusters[1] else None,
                            seconds=round(time.perf_counter() - t0, 3))
    return spins, report


def sample(cfg: IsingConfig, *, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor,
                                                                             list[SamplingReport]]:
    """Every temperature of cfg: spins (len(T) * n, L, L) int8 +-1, their temperatures (len(T) * n,), the reports."""
    spins, temps, reports = [], [], []
    for T in cfg.temperatures:
        s, report = sample_temperature(cfg, float(T), device=device)
        spins.append(s)
        temps.append(torch.full((s.shape[0],), float(T)))
        reports.append(report)
    return torch.cat(spins), torch.cat(temps), reports
