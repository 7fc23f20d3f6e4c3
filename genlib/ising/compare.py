"""The thermodynamics of an RBM's samples beside the Monte Carlo truth, temperature by temperature, as in Torlai &
Melko, "Learning thermodynamics with Boltzmann machines", PRB 94, 165134 (2016): sample the RBM with Gibbs chains,
read its visibles as spins, and compare energy, |m|, specific heat and susceptibility with error bars.

Also the plumbing of a "temperature sweep": the run configs of one RBM per temperature, and finding those runs again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from genlib.ising.observables import Thermo, thermodynamics, to_spins
from genlib.devices import device_generator
from genlib.runs.schema import RunRecord
from genlib.sampling.bernoulli import bernoulli, random_binary
from genlib.sampling.gibbs import gibbs_chain

SWEEP_KIND = "ising-sweep"  # a run's "sweep" (genlib.runs.schema.SweepMember) marks one temperature of a sweep


@torch.no_grad()
def rbm_spins(model: Any, n: int, *, steps: int = 1000, seed: int = 0) -> torch.Tensor:
    """n configurations (n, L, L) of +-1 spins from n independent Gibbs chains of `steps` steps, started at random
    visibles; the last visibles are drawn v ~ p(v|h) (not the mean-field image), so they are states of the model."""
    if n < 2 or steps < 1:
        raise ValueError(f"need n >= 2 chains and steps >= 1, got n={n}, steps={steps}")
    g = device_generator(torch.Generator().manual_seed(seed), model.device)
    dtype = model.W.dtype
    v0 = random_binary(n, model.n_visible, generator=g, device=model.device, dtype=dtype)  # (n, n_v)
    pv = gibbs_chain(model, v0, steps, generator=g)  # (n, n_v): p(v|h) of the last step
    v = bernoulli(pv, g)  # one draw of the visibles
    side = model.image_shape[-1]
    return to_spins(v.reshape(n, side, side).cpu())


def live_spins(model: Any, *, chains: int, steps: int, seed: int = 0) -> tuple[torch.Tensor | None, Any]:
    """The dashboard's sampling of one RBM snapshot within genlib.work_budget's cap: spins (n, L, L) from up to
    `chains` chains (fewer for large RBMs), or None when even the fewest useful chains would exceed it; and the
    plan (its `note` says what the cap did)."""
    from genlib.work_budget import plan_ising

    plan = plan_ising(model.n_visible, model.latent_dim, chains, steps)
    if plan.chains == 0:
        return None, plan
    return rbm_spins(model, plan.chains, steps=plan.steps, seed=seed), plan


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """One temperature: the Monte Carlo averages, the RBM's, and their gaps in units of the combined error."""

    T: float
    mc: Thermo
    rbm: Thermo

    def z(self, name: str) -> float:
        """(RBM - MC) / sqrt(err_RBM^2 + err_MC^2) for "energy", "abs_m", "heat" or "chi"."""
        a, b = getattr(self.rbm, name), getattr(self.mc, name)
        err = math.hypot(getattr(self.rbm, name + "_err"), getattr(self.mc, name + "_err"))
        return (a - b) / err if err > 0 else (0.0 if a == b else math.inf)


def compare(model: Any, mc_spins: torch.Tensor, T: float, *, n: int = 4000, steps: int = 1000,
            seed: int = 0) -> Comparison:
    """Monte Carlo spins (m, L, L) at T against n samples of the RBM (see rbm_spins)."""
    side = model.image_shape[-1]
    if tuple(mc_spins.shape[1:]) != (side, side):
        raise ValueError(f"the Monte Carlo lattice {tuple(mc_spins.shape[1:])} is not the RBM's {side}x{side}")
    return Comparison(T=float(T), mc=thermodynamics(mc_spins.float(), T, seed=seed),
                      rbm=thermodynamics(rbm_spins(model, n, steps=steps, seed=seed), T, seed=seed))


def markdown_table(rows: list[Comparison]) -> str:
    """The comparison as a Markdown table: value +- error for MC and RBM, and the gaps in combined errors (z)."""
    head = ("| T | E/N (MC) | E/N (RBM) | z_E | \\|m\\| (MC) | \\|m\\| (RBM) | z_m | C (MC) | C (RBM) "
            "| chi (MC) | chi (RBM) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")

    def pm(v: float, e: float, digits: int = 4) -> str:
        return f"{v:.{digits}f} ± {e:.{digits}f}"

    lines = [f"| {c.T:.3f} | {pm(c.mc.energy, c.mc.energy_err)} | {pm(c.rbm.energy, c.rbm.energy_err)} "
             f"| {c.z('energy'):+.1f} | {pm(c.mc.abs_m, c.mc.abs_m_err)} | {pm(c.rbm.abs_m, c.rbm.abs_m_err)} "
             f"| {c.z('abs_m'):+.1f} | {pm(c.mc.heat, c.mc.heat_err, 3)} | {pm(c.rbm.heat, c.rbm.heat_err, 3)} "
             f"| {pm(c.mc.chi, c.mc.chi_err, 3)} | {pm(c.rbm.chi, c.rbm.chi_err, 3)} |" for c in rows]
    return head + "\n".join(lines) + "\n"


# ---- temperature sweeps: one RBM per temperature ----

@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    """One RBM per temperature on L x L Ising data: everything the job manager needs to start the runs."""

    sweep_id: str
    L: int
    temperatures: tuple[float, ...]
    n: int = 50_000  # Monte Carlo configurations per temperature (Torlai & Melko: 10^5)
    seed: int = 0
    # the recipe of the Ising study in docs/ising.md (L = 8): four hidden units per spin (two per nearest-neighbour bond;
    # one per bond represents the Ising Boltzmann weight exactly, but 2N = 128 units left E/N 0.005-0.018 too high),
    # centred gradient steps, CD-10, weights started at std 0.1 (the seed's 0.01 starts the couplings at the W = 0
    # saddle), 20,000 updates of 500 configurations with momentum 0.9 and a step size decaying linearly to 0
    n_hidden: int = 256
    k: int = 10
    persistent: bool = False
    centering: bool = True  # centred gradient steps (RBMConfig.centering)
    momentum: float = 0.9
    lr: float = 0.1
    batch_size: int = 500
    epochs: int = 200
    lr_decay: bool = True  # the step size falls linearly to 0 over the run (RBMConfig.lr_decay_steps)
    init_std: float = 0.1

    def jobs(self) -> list[dict[str, Any]]:
        """Keyword arguments of JobManager.submit, one per temperature (checked by the configs when submitted)."""
        from genlib.ising.dataset import IsingDataOptions

        out = []
        for T in self.temperatures:
            name = IsingDataOptions(L=self.L, temperatures=(T,), n=self.n, seed=self.seed).name
            model = {"image_shape": (1, self.L, self.L), "n_hidden": self.n_hidden, "k": self.k,
                     "persistent": self.persistent, "centering": self.centering, "momentum": self.momentum,
                     "binarize": "threshold", "init_std": self.init_std,
                     "sample_steps": 200,  # the live sample grids: 200 Gibbs steps suffice for these lattices
                     # the run's total steps (the loop drops the last partial batch of each epoch)
                     "lr_decay_steps": self.epochs * (self.n // self.batch_size) if self.lr_decay else 0}
            train = {"dataset": name, "lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs,
                     "seed": self.seed, "n_samples": 64,
                     # small lattices are small matrices: a second thread only waits (and on a shared CPU, much)
                     "threads": 1 if self.L <= 16 else None}
            out.append({"model_name": "rbm", "model_config": model, "train_config": train,
                        "title": f"Ising L={self.L} T={T:g}",
                        "sweep": {"kind": SWEEP_KIND, "id": self.sweep_id, "T": float(T)}})
        return out


def sweep_of(info: dict[str, Any]) -> tuple[str, float] | None:
    """(sweep id, T) of a run's info when it is an Ising run (a lone Ising run is a sweep of one), else None."""
    record = RunRecord.from_dict(info, where=f"run {info.get('id', '?')}")  # old folders: the sweep was "parent"
    dataset = record.resolved_dataset
    if record.model != "rbm" or dataset.partition(":")[0] != "ising":
        return None
    if record.sweep is not None and record.sweep.kind == SWEEP_KIND:
        return record.sweep.id, record.sweep.T
    from genlib.ising.dataset import parse

    temps = parse(dataset.partition(":")[2]).temperatures
    if len(temps) != 1:  # trained on several temperatures pooled: no one temperature to compare at
        return None
    return record.id, float(temps[0])
