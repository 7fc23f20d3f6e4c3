"""Faults in genlib: a worker thread or process that dies shows as failed with its error (never running forever),
a full disk (os.fsync raising ENOSPC, which every genlib write goes through) fails the job alone and damages
nothing saved, an unwritable runs folder is refused with a message, and run ids or folders never lead outside the
runs directory."""

from __future__ import annotations

import errno
import functools
import os
import signal

import pytest

from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
from genlib.runs.io import append_jsonl, atomic_write_json, read_json, read_jsonl
from genlib.jobs.manager import JobManager
from genlib.runs.store import RunStore
import waiting

VAE = {"hidden": 16, "latent": 2}


def train_cfg(**kw):
    return {"dataset": "digits", "epochs": 1, "batch_size": 50, "log_every": 2, "device": "cpu", "n_samples": 4,
            "lr": 1e-3, "checkpoint_every_s": 0.1, "threads": 1, **kw}


wait_for = functools.partial(waiting.wait_for, timeout=90.0)  # pages and jobs here can take a while on 2 cores


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def saved_files(run) -> dict[str, bytes]:
    return {str(p.relative_to(run.path)): p.read_bytes() for p in sorted(run.path.rglob("*")) if p.is_file()}


@pytest.fixture
def threads(tmp_path):
    m = JobManager(RunStore(tmp_path / "runs"), backend="thread", max_jobs=2)
    yield m
    m.close(stop_jobs=True)


# ---- workers that die ----

def test_a_thread_that_dies_shows_failed_with_its_error(threads, monkeypatch):
    import genlib.jobs.worker

    def dying(run, **kwargs):  # a bug that escapes run_job's own error handling
        run.write_state(state="running", pid=os.getpid(), message="starting")
        raise RuntimeError("worker bug: boom")

    monkeypatch.setattr(genlib.jobs.worker, "run_job", dying)
    run_id = threads.submit("vae", VAE, train_cfg())
    status = threads.wait(run_id, timeout=30)
    assert status.state == "failed" and "RuntimeError: worker bug: boom" in status.error
    assert threads.store.get(run_id).state()["state"] == "failed"  # recorded on disk too: a restart sees it


def test_a_killed_worker_process_fails_alone_and_says_so(tmp_path):
    mgr = JobManager(RunStore(tmp_path / "runs"), backend="process", max_jobs=2)
    try:
        victim = mgr.submit("vae", VAE, train_cfg(epochs=10_000))
        other = mgr.submit("vae", VAE, train_cfg(epochs=10_000))
        wait_for(lambda: all(mgr.status(r).state == "running" and mgr.status(r).step > 0 for r in (victim, other))
                 and mgr.store.get(victim).checkpoint_path.exists())
        os.kill(mgr.store.get(victim).state()["pid"], signal.SIGKILL)
        status = mgr.wait(victim, timeout=30)
        assert status.state == "failed" and "SIGKILL" in status.error, status
        step = mgr.status(other).step
        wait_for(lambda: mgr.status(other).step > step)  # the other job goes on
        mgr.stop(other)
        assert mgr.wait(other, timeout=60).state == "stopped"
        # the victim's checkpoint is intact and it continues from it
        ckpt = load_checkpoint(mgr.store.get(victim).checkpoint_path)
        mgr.resume(victim, max_steps=ckpt.step + 4)
        assert mgr.wait(victim, timeout=90).state == "finished"
    finally:
        mgr.close(stop_jobs=True)


# ---- a full disk ----

def test_full_disk_fails_the_job_alone_and_damages_nothing(threads, monkeypatch):
    run_id = threads.submit("vae", VAE, train_cfg(epochs=10_000))
    run = threads.store.get(run_id)
    wait_for(lambda: run.checkpoint_path.exists() and threads.status(run_id).step > 20)
    rows_before, _ = read_jsonl(run.metrics_path)
    step_before = load_checkpoint(run.checkpoint_path).step
    monkeypatch.setattr(os, "fsync", enospc)  # from now on every genlib write fails as on a full disk
    status = threads.wait(run_id, timeout=60)
    assert status.state == "failed" and "No space left on device" in status.error, status
    monkeypatch.undo()
    ckpt = load_checkpoint(run.checkpoint_path)  # the last complete checkpoint, never a torn one
    model_from_checkpoint(ckpt)
    assert ckpt.step >= step_before
    rows_after, offset = read_jsonl(run.metrics_path)
    assert rows_after[:len(rows_before)] == rows_before and offset == run.metrics_path.stat().st_size
    assert not list(run.path.rglob("*.tmp"))
    # once there is space again, it continues from that checkpoint
    threads.resume(run_id, max_steps=ckpt.step + 4)
    assert threads.wait(run_id, timeout=60).state == "finished"


def test_full_disk_refuses_new_runs_and_resumes_with_a_message_and_changes_nothing(threads, monkeypatch):
    run_id = threads.submit("vae", VAE, train_cfg(max_steps=6))
    threads.wait(run_id, timeout=60)
    run = threads.store.get(run_id)
    before = saved_files(run)
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(OSError, match="Free some disk space"):
        threads.resume(run_id, max_steps=12)
    with pytest.raises(OSError, match="Free some disk space"):
        threads.submit("vae", VAE, train_cfg())
    monkeypatch.undo()
    assert saved_files(run) == before  # byte for byte
    assert [s.run_id for s in threads.statuses()] == [run_id]  # no half-made run folder


def test_low_level_writes_roll_back_on_a_full_disk(tmp_path, monkeypatch):
    log, js = tmp_path / "m.jsonl", tmp_path / "s.json"
    append_jsonl(log, [{"step": 1}])
    atomic_write_json(js, {"a": 1})
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(OSError):
        append_jsonl(log, [{"step": 2}])
    with pytest.raises(OSError):
        atomic_write_json(js, {"a": 2})
    monkeypatch.undo()
    assert log.read_bytes() == b'{"step":1}\n' and read_json(js) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "s.json"]


def test_a_torn_line_never_swallows_the_next_row(tmp_path):
    log = tmp_path / "m.jsonl"
    append_jsonl(log, [{"step": 1}])
    with open(log, "ab") as f:
        f.write(b'{"step": 2, "lo')  # a worker killed mid-append
    append_jsonl(log, [{"step": 3}])  # the next worker's first row
    rows, _ = read_jsonl(log)
    assert rows == [{"step": 1}, {"step": 3}]


# ---- folders ----

def test_unwritable_runs_folder_refuses_new_runs_with_a_message(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    mgr = JobManager(RunStore(blocker / "runs"), backend="thread")
    try:
        with pytest.raises(OSError, match="Runs cannot be saved"):
            mgr.submit("vae", VAE, train_cfg())
        assert mgr.statuses() == []
    finally:
        mgr.close()


def test_symlinks_and_odd_names_never_lead_outside_the_runs_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "run.json").write_text("{}")
    (outside / "precious").write_text("keep me")
    store = RunStore(tmp_path / "runs")
    store.ensure_writable()
    (store.root / "escape").symlink_to(outside, target_is_directory=True)
    assert store.list() == []
    with pytest.raises(ValueError):
        store.get("escape")
    with pytest.raises(ValueError):
        store.delete("escape")
    for bad in ("../outside", "escape/../../outside", "..\\outside", "%2e%2e", "run\nid", " run", "a" * 97):
        with pytest.raises(ValueError):
            store.get(bad)
        with pytest.raises(ValueError):
            store.create({"model": "vae"}, run_id=bad)
    assert (outside / "precious").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "runs"]
