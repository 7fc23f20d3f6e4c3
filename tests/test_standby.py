"""The standby worker (genlib.jobs.standby): a process started ahead of time takes the next job and trains it as a fresh
worker would (its pid in the run's state, its output in the run's log), a new one waits after it, a dead one is
replaced by a fresh worker, one that keeps dying is given up on, and closing the manager ends the waiting one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genlib.jobs import standby
from genlib.jobs.manager import JobManager
from genlib.runs.store import RunStore
from waiting import wait_for

RBM = {"n_hidden": 16}
TRAIN = {"dataset": "digits", "max_steps": 12, "batch_size": 50, "log_every": 4, "device": "cpu", "n_samples": 16,
         "lr": 0.1}


@pytest.fixture
def manager(tmp_path, monkeypatch):
    monkeypatch.setattr(standby, "START_DELAY_S", 0.0)
    # the end-of-run FINAL evaluation (minutes on a loaded CPU) is not what these tests are about
    monkeypatch.setenv("GENLIB_WORKER_EVALUATE", "cheap")
    m = JobManager(RunStore(tmp_path / "runs"), backend="process", worker_nice=2, standby=True)
    yield m
    m.close(stop_jobs=True)


def waiting_pid(m: JobManager) -> int:
    wait_for(lambda: m._standby.proc is not None and m._standby.proc.poll() is None, 30)
    return m._standby.proc.pid


def test_the_standby_takes_the_next_job_and_another_waits_after_it(manager):
    pid = waiting_pid(manager)
    run_id = manager.submit("rbm", RBM, TRAIN)
    status = manager.wait(run_id, timeout=180)
    assert status.state == "finished" and status.step == 12
    run = manager.store.get(run_id)
    assert run.state()["pid"] == pid  # the standby trained it, not a fresh worker
    summary = json.loads(run.log_path.read_text().strip().splitlines()[-1])  # its output went to the run's log
    assert summary["run_id"] == run_id and summary["state"] == "finished"
    next_pid = waiting_pid(manager)
    assert next_pid != pid
    proc = manager._standby.proc
    manager.close()
    assert proc.wait(30) == 0  # closing its input ends a waiting standby quietly


def test_a_dead_standby_is_replaced_by_a_fresh_worker(manager):
    pid = waiting_pid(manager)
    manager._standby.proc.kill()
    manager._standby.proc.wait(10)
    run_id = manager.submit("rbm", RBM, TRAIN)
    assert manager.wait(run_id, timeout=180).state == "finished"
    assert manager.store.get(run_id).state()["pid"] != pid


def test_a_standby_that_keeps_dying_is_given_up_on(tmp_path):
    s = standby.Standby(str(tmp_path / "no-such-python"), 0, delay_s=0.0)
    s.tend()  # no process at all: counted, not raised
    assert s.proc is None and s.unexpected_exits == 1
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    s.python = str(broken)
    for _ in range(standby.MAX_UNEXPECTED_EXITS + 2):
        if s.proc is not None:
            s.proc.wait(10)
        s.tend()
    assert s.given_up and s.proc is None and s.take(tmp_path) is None


def test_an_ended_input_ends_the_standby_without_a_trace(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-m", "genlib", "standby"], input="", capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout == "" and list(tmp_path.iterdir()) == []
