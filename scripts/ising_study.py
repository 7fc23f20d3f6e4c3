#!/usr/bin/env python3
"""Torlai & Melko's experiment (PRB 94, 165134, 2016) end to end: Monte Carlo data of the 2-D Ising model at several
temperatures, one RBM trained per temperature through the dashboard's own job manager, and the table of the RBM
samples' energy, |m|, specific heat and susceptibility beside the Monte Carlo values, with error bars.

    nice -n 10 .venv/bin/python scripts/ising_study.py                       # L=8, T = 1.5..3.5 (9), ~30 min, 2 cores
    .venv/bin/python scripts/ising_study.py --quick                          # smoke run: 3 temperatures, few epochs
    .venv/bin/python scripts/ising_study.py --out artifacts/ising-results.md --runs-dir /tmp/ising-runs

The runs stay in --runs-dir (a temporary folder by default): start the dashboard with GENLIB_RUNS_DIR pointing there
to see the sweep on the RBM page. The Monte Carlo data are cached under --data-root/ising.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--L", type=int, default=8)
    p.add_argument("--t-min", type=float, default=1.5)
    p.add_argument("--t-max", type=float, default=3.5)
    p.add_argument("--count", type=int, default=9, help="temperatures, evenly spaced from t-min to t-max")
    p.add_argument("--n", type=int, default=50_000, help="Monte Carlo configurations per temperature")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--pcd", action="store_true")
    p.add_argument("--no-centering", action="store_true", help="plain gradient steps (default: centred, Melchior 2016)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--init-std", type=float, default=0.1, help="std of the initial weights")
    p.add_argument("--no-lr-decay", action="store_true", help="constant lr (default: linear decay to 0 over the run)")
    p.add_argument("--rbm-samples", type=int, default=4000, help="independent Gibbs chains sampled from each RBM")
    p.add_argument("--rbm-steps", type=int, default=1000, help="Gibbs steps of each chain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (1: these matrices are small)")
    p.add_argument("--jobs", type=int, default=2, help="runs training at once (one per core)")
    p.add_argument("--data-root", default=None, help="Monte Carlo data cache (default $GENLIB_DATA_ROOT or ./data)")
    p.add_argument("--runs-dir", default=None, help="where the RBM runs go (default: a new temporary folder)")
    p.add_argument("--out", default=None, help="write the Markdown results here (e.g. artifacts/ising-results.md)")
    p.add_argument("--quick", action="store_true", help="3 temperatures, 2,000 configurations, 5 epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.count, args.n, args.epochs, args.rbm_samples, args.rbm_steps = 3, 2000, 5, 1000, 200

    import torch

    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.data import default_data_root, load_dataset
    from genlib.ising.compare import SweepPlan, compare, markdown_table
    from genlib.ising.dataset import sampling_reports, spins_of, temperature_grid
    from genlib.jobs.manager import JobManager
    from genlib.runs.store import RunStore

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data_root) if args.data_root else default_data_root()
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="ising-runs-"))
    temps = temperature_grid(args.t_min, args.t_max, args.count)
    plan = SweepPlan(sweep_id=f"study-{int(time.time())}", L=args.L, temperatures=temps, n=args.n, seed=args.seed,
                     n_hidden=args.hidden, k=args.k, persistent=args.pcd, centering=not args.no_centering,
                     momentum=args.momentum, lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                     lr_decay=not args.no_lr_decay, init_std=args.init_std)
    jobs = plan.jobs()
    t0 = time.perf_counter()
    # the Monte Carlo data first (cached per temperature), so the training time below is training alone
    for job in jobs:
        load_dataset(job["train_config"]["dataset"], root=root)
    t_mc = time.perf_counter() - t0
    print(f"Monte Carlo data ready in {t_mc:.1f} s (cache {root / 'ising'})", file=sys.stderr)

    # one RBM per temperature, --jobs at a time, through the job manager the dashboard uses (worker processes: the
    # Gibbs chains are small matrices, so the runs are bound by Python overhead and one process per core scales)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))  # workers
    manager = JobManager(RunStore(runs_dir), backend="process", max_jobs=args.jobs)
    t1 = time.perf_counter()
    ids = []
    for job in jobs:
        job["train_config"]["data_root"] = str(root)
        if args.threads:
            job["train_config"]["threads"] = args.threads
        ids.append(manager.submit(**job))
    for run_id, T in zip(ids, temps):
        status = manager.wait(run_id, timeout=3600)
        print(f"T={T:g}: {status.state}, {status.step} steps", file=sys.stderr)
        if status.state != "finished":
            raise SystemExit(f"run {run_id} at T={T} ended {status.state}: {status.error}")
    t_train = time.perf_counter() - t1
    manager.close()

    # the comparison: every RBM sampled by fresh Gibbs chains, against its own Monte Carlo data (train + test split)
    t2 = time.perf_counter()
    rows = []
    for run_id, job, T in zip(ids, jobs, temps):
        run = RunStore(runs_dir).get(run_id)
        model = model_from_checkpoint(load_checkpoint(run.checkpoint_path), device="cpu").eval()
        data = load_dataset(job["train_config"]["dataset"], root=root)
        mc = spins_of(torch.cat([data.x_train, data.x_test]))
        rows.append(compare(model, mc, T, n=args.rbm_samples, steps=args.rbm_steps, seed=args.seed))
        print(f"T={T:g}: z_E={rows[-1].z('energy'):+.1f} z_m={rows[-1].z('abs_m'):+.1f}", file=sys.stderr)
    t_cmp = time.perf_counter() - t2

    reports = [r for job in jobs for r in sampling_reports(root, job["train_config"]["dataset"])]
    table = markdown_table(rows)
    n_mc = args.n + max(1, args.n // 10)
    within = sum(abs(c.z("energy")) <= 2 and abs(c.z("abs_m")) <= 2 for c in rows)
    text = [
        f"# Ising L={args.L}: RBM thermodynamics against Monte Carlo\n",
        f"Command: `scripts/ising_study.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n",
        f"One RBM per temperature: {args.hidden} hidden units, CD-{args.k}{' (PCD)' if args.pcd else ''}"
        f"{', plain gradient' if args.no_centering else ', centred gradient'}, lr "
        f"{args.lr}{' constant' if args.no_lr_decay else ' decaying linearly to 0 over the run'}, momentum "
        f"{args.momentum}, initial weights std {args.init_std}, batch {args.batch_size}, {args.epochs} epochs "
        f"({args.epochs * (args.n // args.batch_size):,} updates) on {args.n:,} Monte "
        f"Carlo configurations. Monte Carlo columns: all {n_mc:,} configurations of the temperature; RBM columns: "
        f"{args.rbm_samples:,} independent Gibbs chains of {args.rbm_steps} steps from random visibles, last "
        f"visibles drawn from p(v|h). Errors: one standard error (blocking for E and |m|, bootstrap for C and chi). "
        f"z = (RBM - MC) / combined error; {within} of {len(rows)} temperatures have |z| <= 2 for both E and |m|.\n",
        table,
        "\n## Monte Carlo schedule per temperature\n",
        "| T | algorithm | tau_int(E) | tau_int(\\|m\\|) | equilibration sweeps | sweeps between samples | mean Wolff "
        "cluster | seconds |\n|---|---|---|---|---|---|---|---|",
    ]
    text += [f"| {r['T']:.3f} | {r['algorithm']} | {r['tau_energy']:.2f} | {r['tau_abs_m']:.2f} | {r['equilibration']} "
             f"| {r['decorrelation']} | {r['mean_cluster'] if r['mean_cluster'] is not None else '-'} "
             f"| {r['seconds']:.1f} |" for r in reports]
    text.append(f"\nTimes on this machine: Monte Carlo {t_mc:.0f} s (0 when cached), training {t_train:.0f} s for "
                f"{len(rows)} RBMs, comparison sampling {t_cmp:.0f} s. Runs in {runs_dir}.\n")
    out = "\n".join(text)
    print(out)
    if args.out:
        from genlib.runs.io import atomic_write_bytes

        atomic_write_bytes(args.out, out.encode())
    print(json.dumps({"runs_dir": str(runs_dir), "within_2_sigma": within, "temperatures": len(rows),
                      "seconds": {"monte_carlo": round(t_mc, 1), "training": round(t_train, 1),
                                  "comparison": round(t_cmp, 1)}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
