"""The Ray job backend (genlib.jobs.ray_launcher) on a real two-node Ray cluster on 127.0.0.1 (scripts/
ray_local_cluster.py): a head node that takes no jobs and one worker node of one CPU, token authentication on.

Checked: three runs with one slot give one running on the worker node and two queued with their places; the first
chart point arrives (its latency printed); pause, a knob change, resume and stop work through the run folder; a
worker node that dies marks its run failed with the cluster's reason, and Continue resumes it on a new node from its
checkpoint with no gap in the curve; the job API refuses a request without the token; nothing the cluster started is
left afterwards. Skipped without ray (an optional extra, requirements-ray.txt), except where GENLIB_REQUIRE_RAY=1
(CI, .ci/run), where a missing ray fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from genlib.runs.store import RunStore
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray

VAE = {"hidden": 32, "latent": 2}
LONG = {"dataset": "digits", "epochs": 1000, "batch_size": 50, "log_every": 2, "device": "cpu", "n_samples": 16,
        "lr": 1e-3, "checkpoint_every_s": 2.0}
START_S = 240  # a Ray job's start (runtime env, supervisor actor, the worker's imports) on a loaded 2-core machine


def test_a_pid_of_another_host_is_not_taken_as_alive(tmp_path):
    """state.json written on another machine with a pid that happens to be alive here: only the heartbeat counts."""
    store = RunStore(tmp_path / "runs")
    run = store.create({"model": "vae", "model_config": {}, "train_config": {}, "dataset": "digits"})
    run.write_state(state="running", pid=os.getpid(), host="another-machine.example")
    assert run.effective_state() == "running"  # its heartbeat is fresh
    state = {**run.state(), "updated": time.time() - 60}  # silent for a minute (write_state would stamp it fresh)
    run.state_path.write_text(json.dumps(state))
    assert run.effective_state() == "interrupted", run.state()


def _ray_missing() -> str | None:
    try:
        import ray  # noqa: F401
        import ray.job_submission  # noqa: F401
    except ImportError as e:
        return f"ray is not installed ({e}); pip install -r requirements-ray.txt"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _ray_missing()
    if reason:
        if os.environ.get("GENLIB_REQUIRE_RAY", "") not in ("", "0", "false", "no"):
            pytest.fail(f"GENLIB_REQUIRE_RAY=1 but {reason}")
        pytest.skip(reason)
    sys.path.append(str(ROOT / "scripts"))
    from ray_local_cluster import LocalCluster

    c = LocalCluster()
    try:
        head_s = c.start_head()
        worker_s = c.add_worker("worker1")
        print(f"\ncluster start-up: head node (job API answering) {head_s:.1f} s, then a worker node {worker_s:.1f} s")
        yield c
    finally:
        left = c.shutdown()
    assert left == [], f"processes the cluster started were left running: {left}"


@pytest.fixture(scope="module")
def manager(cluster, tmp_path_factory):
    from genlib.jobs.manager import JobManager

    saved = {k: os.environ.get(k) for k in ("GENLIB_RAY_ADDRESS", "GENLIB_RAY_TOKEN", "GENLIB_RAY_WORKDIR",
                                            "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):  # the token must come from our setting, not Ray's
        os.environ.pop(k, None)
    os.environ.update(GENLIB_RAY_ADDRESS=cluster.address, GENLIB_RAY_TOKEN=cluster.token,
                      GENLIB_RAY_WORKDIR=str(ROOT))
    m = JobManager(RunStore(tmp_path_factory.mktemp("ray") / "runs"), backend="ray", max_jobs=1, worker_nice=10)
    try:
        yield m
    finally:
        m.close(stop_jobs=True, timeout=60)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _rows(run) -> list[dict]:
    return [r for r in run.metrics()[0] if "event" not in r]


def _job_node(manager, run_id: str) -> str | None:
    with manager._lock:
        job = manager._jobs.get(run_id)
        return manager.launcher.status(job.handle).node if job is not None and job.handle is not None else None


def test_the_job_api_refuses_a_request_without_the_token(cluster):
    assert cluster.api("/api/jobs/", token=None)[0] == 401
    assert cluster.api("/api/jobs/", token="not-the-token")[0] == 403
    assert cluster.api("/api/jobs/")[0] == 200


def test_one_slot_one_job_on_the_worker_node_two_queued_then_controls(cluster, manager):
    t0 = time.monotonic()
    ids = [manager.submit("vae", VAE, LONG) for _ in range(3)]
    first, second, third = ids
    assert [manager.status(i).queue_position for i in ids] == [None, 1, 2]
    assert manager.status(first).state in ("queued", "running")  # admitted: its Ray job is starting
    assert [manager.status(i).state for i in (second, third)] == ["queued"] * 2
    run = manager.store.get(first)
    wait_for(lambda: _rows(run), START_S, "the first chart point")
    print(f"\nfirst chart point on Ray: {time.monotonic() - t0:.1f} s after Start")
    worker_ids = {n["node_id"] for n in cluster.worker_nodes()}
    assert _job_node(manager, first) in worker_ids  # not the head, which has no CPU for jobs
    assert manager.status(first).state == "running" and manager.status(second).queue_position == 1

    manager.pause(first)
    wait_for(lambda: manager.status(first).state == "paused", 60, "paused")
    paused_at = manager.status(first).step
    time.sleep(1.0)
    assert manager.status(first).step == paused_at
    manager.set_knobs(first, lr=5e-4)
    manager.unpause(first)
    wait_for(lambda: manager.status(first).step > paused_at + 4, 60, "training again after the pause")
    knobs = [r for r in run.metrics()[0] if r.get("event") == "knob"]
    assert knobs and knobs[-1]["lr"] == pytest.approx(5e-4)

    manager.stop(third)  # queued: stopped at once, never started
    assert manager.status(third).state == "stopped"
    manager.stop(first)
    assert manager.wait(first, timeout=120).state == "stopped"
    wait_for(lambda: manager.status(second).state == "running", START_S, "the queued run to start after the stop")


def test_a_dead_worker_node_fails_its_run_and_continue_resumes_it_on_another(cluster, manager):
    second = next(s.run_id for s in manager.statuses() if s.state == "running")
    run = manager.store.get(second)
    wait_for(lambda: run.checkpoint_path.exists() and len(_rows(run)) >= 3, START_S, "a checkpoint")
    before = _rows(run)
    assert cluster.kill_node("worker1") > 0
    killed = time.monotonic()
    last_step = max(r["step"] for r in _rows(run))
    status = manager.wait(second, timeout=120)
    assert status.state == "failed" and "Ray job" in status.error, status
    print(f"\nthe dead node's run failed {time.monotonic() - killed:.1f} s after the kill, with: "
          f"{status.error.splitlines()[0][:200]}")

    started = cluster.add_worker("worker2")
    print(f"a replacement worker node joined in {started:.1f} s")
    manager.resume(second)
    n = len(_rows(run))
    wait_for(lambda: len(_rows(run)) >= n + 3, START_S, "chart points after Continue")
    after = _rows(run)[n:]
    log_every = LONG["log_every"]
    assert after[0]["step"] <= last_step + log_every, (after[0], last_step)  # no gap: from the checkpoint on
    assert after[0]["step"] > 0 and [r["step"] for r in after] == sorted(r["step"] for r in after)
    assert before[0]["step"] == log_every
    manager.stop(second)
    assert manager.wait(second, timeout=120).state == "stopped"
