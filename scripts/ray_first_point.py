"""Start -> first chart point of one training run, on the Ray backend (a local two-node cluster: scripts/
ray_local_cluster.py) against the one-machine default (a worker process started ahead of time: genlib.jobs.standby),
the same run side by side, interleaved; also the cluster's start-up cost. Prints a table (markdown with --markdown).

    python scripts/ray_first_point.py [--rounds 2]

This host's speed drifts and others load it: compare the two columns of one table, never figures across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "scripts"))

VAE = {"hidden": 32, "latent": 2}
TRAIN = {"dataset": "digits", "epochs": 1000, "batch_size": 50, "log_every": 2, "device": "cpu", "n_samples": 16,
         "lr": 1e-3}


def first_point(manager, timeout: float = 300.0) -> float:
    """Seconds from submit to the first metric row of a fresh run (then the run is stopped and waited for)."""
    t0 = time.monotonic()
    run_id = manager.submit("vae", VAE, TRAIN)
    run = manager.store.get(run_id)
    while not [r for r in run.metrics()[0] if "event" not in r]:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no chart point within {timeout:.0f} s: {manager.status(run_id)}")
        time.sleep(0.05)
    took = time.monotonic() - t0
    manager.stop(run_id)
    manager.wait(run_id, timeout=120)
    return took


def standby_ready(manager, timeout: float = 120.0) -> None:
    """Wait until the standby worker exists and has finished its imports (its CPU use has gone quiet)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = manager._standby.proc if manager._standby is not None else None
        if proc is not None and proc.poll() is None:
            try:
                p = psutil.Process(proc.pid)
                if time.time() - p.create_time() > 2 and p.cpu_percent(interval=1.0) < 5:
                    return
            except psutil.Error:
                pass
        time.sleep(0.2)
    raise TimeoutError("the standby worker did not become ready")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    from genlib.jobs import standby
    from genlib.jobs.manager import JobManager
    from genlib.runs.store import RunStore
    from ray_local_cluster import LocalCluster

    standby.START_DELAY_S = 0.0
    base = Path(tempfile.mkdtemp(prefix="genlib-rayfp-"))
    cluster = LocalCluster()
    try:
        head_s = cluster.start_head()
        worker_s = cluster.add_worker("worker1")
        for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):
            os.environ.pop(k, None)
        os.environ.update(GENLIB_RAY_ADDRESS=cluster.address, GENLIB_RAY_TOKEN=cluster.token,
                          GENLIB_RAY_WORKDIR=str(ROOT))
        ray_mgr = JobManager(RunStore(base / "ray"), backend="ray", max_jobs=1, worker_nice=10)
        local = JobManager(RunStore(base / "local"), backend="process", max_jobs=1, worker_nice=10, standby=True)
        times: dict[str, list[float]] = {"standby worker (one machine)": [], "Ray job (worker node)": []}
        try:
            for _ in range(args.rounds):  # interleaved, so a drift of the host's speed hits both alike
                standby_ready(local)
                times["standby worker (one machine)"].append(first_point(local))
                times["Ray job (worker node)"].append(first_point(ray_mgr))
        finally:
            local.close(stop_jobs=True)
            ray_mgr.close(stop_jobs=True)
    finally:
        left = cluster.shutdown()
    sep = " | " if args.markdown else "  "
    print(f"cluster start-up: head node {head_s:.1f} s (until its job API answered), worker node {worker_s:.1f} s")
    print(sep.join(["backend", "Start -> first chart point, each round (s)", "median (s)"]))
    for name, values in times.items():
        print(sep.join([name, ", ".join(f"{v:.1f}" for v in values), f"{statistics.median(values):.1f}"]))
    if left:
        print(f"left running after the cluster's shutdown (killed): {left}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
