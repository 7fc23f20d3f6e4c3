"""Background jobs: start, pause, resume, stop, queue and resume from a checkpoint, with threads and processes."""

import time
from pathlib import Path

import pytest

from genlib.jobs.manager import JobManager
from genlib.runs.store import RunStore
from waiting import wait_for

VAE = {"hidden": 32, "latent": 2}


def train_cfg(**kw):
    return {"dataset": "digits", "epochs": 1, "batch_size": 50, "log_every": 2, "device": "cpu", "n_samples": 16,
            "lr": 1e-3, **kw}


@pytest.fixture(params=["thread", "process"])
def manager(request, tmp_path):
    m = JobManager(RunStore(tmp_path / "runs"), backend=request.param, max_jobs=1)
    yield m
    m.close(stop_jobs=True)


def test_job_runs_to_the_end(manager):
    run_id = manager.submit("vae", VAE, train_cfg())
    status = manager.wait(run_id, timeout=120)
    assert status.state == "finished" and status.step == 30 and status.metrics["loss"] > 0


def test_pause_resume_stop_and_continue(manager):
    run_id = manager.submit("vae", VAE, train_cfg(epochs=1000))
    wait_for(lambda: manager.status(run_id).state == "running" and manager.status(run_id).step > 0, 120)
    manager.pause(run_id)
    wait_for(lambda: manager.status(run_id).state == "paused")
    paused_at = manager.status(run_id).step
    time.sleep(0.6)
    assert manager.status(run_id).step == paused_at
    manager.unpause(run_id)
    wait_for(lambda: manager.status(run_id).step > paused_at + 2)
    manager.stop(run_id)
    status = manager.wait(run_id, timeout=60)
    assert status.state == "stopped"
    stopped_at = status.step
    manager.resume(run_id, max_steps=stopped_at + 10)
    status = manager.wait(run_id, timeout=120)
    assert status.state == "finished" and status.step == stopped_at + 10


def test_queue_respects_the_limit(manager):
    first = manager.submit("vae", VAE, train_cfg(epochs=1000))
    second = manager.submit("vae", VAE, train_cfg())
    assert manager.status(second).state == "queued" and manager.status(second).queue_position == 1
    manager.stop(first)
    assert manager.wait(second, timeout=120).state == "finished"


def test_bad_config_is_refused_before_anything_is_written(manager):
    with pytest.raises(ValueError, match="latent"):
        manager.submit("vae", {"latent": 0}, train_cfg())
    with pytest.raises(ValueError, match="lr"):
        manager.submit("vae", VAE, train_cfg(lr=-1))
    assert manager.statuses() == []


def test_failure_is_reported_not_hidden(manager):
    run_id = manager.submit("vae", VAE, train_cfg(dataset="mnist", data_root="/nonexistent"))
    status = manager.wait(run_id, timeout=120)
    assert status.state == "failed" and "digits" in status.error


def test_second_manager_sees_runs_and_marks_orphans_interrupted(manager, tmp_path):
    run_id = manager.submit("vae", VAE, train_cfg())
    manager.wait(run_id, timeout=120)
    other = JobManager(manager.store, backend="thread")
    try:
        assert [s.run_id for s in other.statuses()] == [run_id]
    finally:
        other.close()


def test_process_workers_run_at_a_lower_cpu_priority(tmp_path):
    """Training yields the CPU to the server: a worker process starts `worker_nice` steps nicer than its parent."""
    import os

    import psutil

    from genlib.jobs.priority import autogroup_nice

    with pytest.raises(ValueError, match="worker_nice"):
        JobManager(RunStore(tmp_path / "bad"), worker_nice=25)
    m = JobManager(RunStore(tmp_path / "runs"), backend="process", worker_nice=3)
    try:
        run_id = m.submit("vae", VAE, train_cfg(epochs=1000))
        wait_for(lambda: m.status(run_id).state == "running" and m.status(run_id).step > 0, 120)
        pid = m.store.get(run_id).state()["pid"]
        assert psutil.Process(pid).nice() == min(os.getpriority(os.PRIO_PROCESS, 0) + 3, 19)
        # and its session's group, where the kernel shares the CPU between sessions first (genlib/jobs/priority.py)
        if autogroup_nice() is not None:
            assert autogroup_nice(Path(f"/proc/{pid}/autogroup")) == 3
    finally:
        m.close(stop_jobs=True)
