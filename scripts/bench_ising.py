#!/usr/bin/env python3
"""Spin-flip rate of genlib.ising.monte_carlo on this machine: checkerboard Metropolis (attempted single-spin updates per second,
and the accepted share) and Wolff cluster flips (spins flipped per second) at T_c, for several lattice sizes.

    nice -n 10 .venv/bin/python scripts/bench_ising.py                 # CPU, ~2 s per row
    .venv/bin/python scripts/bench_ising.py --device cuda --seconds 3  # the same on a GPU

Each row: warm up, then sweep until --seconds of wall clock have passed (synchronising the device) and divide.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_metropolis(L: int, chains: int, T: float, seconds: float, device) -> dict:
    import torch

    from genlib.ising.monte_carlo import checkerboard, metropolis_sweep, random_spins

    g = torch.Generator(device=device).manual_seed(0)
    s = random_spins(chains, L, generator=g, device=device)
    masks, beta = checkerboard(L, device), torch.full((chains, 1, 1), 1 / T, device=device)
    for _ in range(20):  # warm-up (and most of the equilibration)
        s = metropolis_sweep(s, beta, masks, g)
    _sync(device)
    sweeps, flipped, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            new = metropolis_sweep(s, beta, masks, g)
            flipped += int((new != s).sum())  # a site flipped in both half-sweeps cannot happen (it is on one)
            s = new
        sweeps += 10
        _sync(device)
    dt = time.perf_counter() - t0
    attempts = sweeps * chains * L * L
    return {"algorithm": "metropolis", "L": L, "chains": chains, "T": round(T, 4),
            "sweeps_per_s": round(sweeps / dt, 1),
            "attempted_flips_per_s": round(attempts / dt), "accepted_share": round(flipped / attempts, 3)}


def bench_wolff(L: int, chains: int, T: float, seconds: float, device) -> dict:
    import torch

    from genlib.ising.monte_carlo import random_spins, wolff_update

    g = torch.Generator(device=device).manual_seed(0)
    s = random_spins(chains, L, generator=g, device=device)
    beta = torch.full((chains, 1, 1), 1 / T, device=device)
    for _ in range(20):
        s, _ = wolff_update(s, beta, g)
    _sync(device)
    updates, flipped, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s, size = wolff_update(s, beta, g)
        flipped += int(size.sum())
        updates += 1
    dt = time.perf_counter() - t0
    return {"algorithm": "wolff", "L": L, "chains": chains, "T": round(T, 4),
            "cluster_flips_per_s": round(updates * chains / dt), "spins_flipped_per_s": round(flipped / dt),
            "mean_cluster": round(flipped / max(1, updates * chains), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--sizes", default="8,16,32,64")
    p.add_argument("--spins", type=int, default=2**18, help="chains x L^2 per batch (the batch size in spins)")
    args = p.parse_args(argv)

    import torch

    from genlib.ising.observables import T_C

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for L in (int(x) for x in args.sizes.split(",")):
        chains = max(1, args.spins // (L * L))
        rows.append(bench_metropolis(L, chains, T_C, args.seconds, device))
        rows.append(bench_wolff(L, chains, T_C, args.seconds, device))
    print(f"genlib.ising.monte_carlo on {device} ({torch.get_num_threads()} threads, torch {torch.__version__}), T = T_c")
    print(f"{'algorithm':<11} {'L':>3} {'chains':>7} {'rate':>34} {'detail':>26}")
    for r in rows:
        if r["algorithm"] == "metropolis":
            rate = f"{r['attempted_flips_per_s'] / 1e6:8.1f} M attempted flips/s"
            detail = f"accepted {r['accepted_share']:.1%}, {r['sweeps_per_s']:.0f} sweeps/s"
        else:
            rate = f"{r['spins_flipped_per_s'] / 1e6:8.3f} M spins flipped/s"
            detail = f"{r['cluster_flips_per_s']:,} clusters/s, <size> {r['mean_cluster']}"
        print(f"{r['algorithm']:<11} {r['L']:>3} {r['chains']:>7} {rate:>34} {detail:>26}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
