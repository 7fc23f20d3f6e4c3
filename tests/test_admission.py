"""The job cap across app servers (genlib.jobs.admission): two managers on one runs folder admit no more than the
cap together, each shows the other's queued run with its place, and one stops the other's job; evaluations queue
behind training under the same cap, with their place in line, and two clicks at once start one evaluation."""

from __future__ import annotations

import threading

import pytest

from genlib.jobs.manager import JobManager
from genlib.runs.store import RunStore
from waiting import wait_for

VAE = {"hidden": 16, "latent": 2}
LONG = {"dataset": "digits", "epochs": 1000, "batch_size": 50, "log_every": 2, "device": "cpu", "n_samples": 4,
        "lr": 1e-3}


@pytest.fixture
def two(tmp_path):
    ms = [JobManager(RunStore(tmp_path / "runs"), backend="thread", max_jobs=1) for _ in range(2)]
    yield ms
    for m in ms:
        m.close(stop_jobs=True, timeout=30)


def running(m: JobManager, run_id: str) -> bool:
    s = m.status(run_id)
    return s.state == "running" and s.step > 0


def test_two_servers_on_one_runs_folder_share_the_cap(two):
    a, b = two
    first = a.submit("vae", VAE, LONG)
    wait_for(lambda: running(a, first), 120, "the first run training")
    second = b.submit("vae", VAE, LONG)  # b runs nothing itself, but the folder shows a's job in the only slot
    assert (b.status(second).state, b.status(second).queue_position) == ("queued", 1)
    assert (a.status(second).state, a.status(second).queue_position) == ("queued", 1)  # not 'interrupted'
    assert b.status(first).state == "running"
    b.stop(first)  # through the server that does not own it: the run folder's Stop command
    assert a.wait(first, timeout=60).state == "stopped"
    wait_for(lambda: running(b, second), 120, "the queued run starting once the slot is free")
    a.stop(second)
    assert b.wait(second, timeout=60).state == "stopped"


def test_a_queued_run_stopped_through_another_server_never_starts(two):
    a, b = two
    first = a.submit("vae", VAE, LONG)
    second = a.submit("vae", VAE, LONG)
    assert a.status(second).queue_position == 1
    b.stop(second)
    assert b.status(second).state == "stopped" and a.status(second).state == "stopped"
    wait_for(lambda: second not in a._queue, 10, "a dropping it from its queue")
    a.stop(first)
    assert a.wait(first, timeout=60).state == "stopped"
    assert a.store.get(second).state().get("pid") is None  # no worker ever took it


def test_an_evaluation_waits_for_the_slot_and_two_clicks_start_one(tmp_path):
    m = JobManager(RunStore(tmp_path / "runs"), backend="thread", max_jobs=1)
    try:
        saved = m.submit("vae", VAE, LONG)
        wait_for(lambda: running(m, saved), 120, "training")
        m.stop(saved)
        assert m.wait(saved, timeout=60).state == "stopped"
        busy = m.submit("vae", VAE, LONG)
        wait_for(lambda: running(m, busy), 120, "the other run training")

        errors: list[Exception] = []
        gate = threading.Barrier(2)

        def click() -> None:
            gate.wait()
            try:
                m.evaluate(saved, "cheap")
            except ValueError as e:
                errors.append(e)

        clicks = [threading.Thread(target=click) for _ in range(2)]
        for t in clicks:
            t.start()
        for t in clicks:
            t.join(30)
        assert len(errors) == 1 and "already" in str(errors[0])
        run = m.store.get(saved)
        status = run.quality_status()
        assert status["state"] == "running" and status.get("queued") and "next" in status["message"], status
        assert m.evaluation_position(saved) == 1  # behind the training job's slot, in the same queue
        m.stop(busy)
        assert m.wait(busy, timeout=60).state == "stopped"
        wait_for(lambda: run.quality_status().get("state") not in ("running", None), 180, "the evaluation's end")
        assert run.quality_status()["state"] == "done", run.quality_status()
        assert run.quality_records()[0][-1]["kind"] == "cheap"
    finally:
        m.close(stop_jobs=True, timeout=30)
