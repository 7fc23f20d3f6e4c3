"""The training worker's Job (genlib.jobs.worker) in its parts: building and resuming alone, the control read, the
heartbeat while the data loads (a slow fake loader), a stop while it loads, what the job evaluates at the end
(`--evaluate none|cheap|final`), and a real `python -m genlib worker` process stopped cleanly by a SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from genlib.jobs import worker
from genlib.runs.checkpoints import load_checkpoint
from genlib.runs.store import RunStore
from genlib.training import TrainConfig
from waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(tmp_path, epochs=1, **train):
    cfg = TrainConfig(**{"dataset": "digits", "epochs": epochs, "batch_size": 100, "log_every": 5, "device": "cpu",
                         "n_samples": 16, "snapshot_every_s": 1000.0, "live_every_s": 1000.0, **train})
    return RunStore(tmp_path / "runs").create({"model": "vae", "model_config": {"hidden": 32, "latent": 2},
                                               "train_config": dataclasses.asdict(cfg), "dataset": "digits"})


# ---- the parts alone ----

def test_build_resumes_from_the_checkpoint_and_read_control_obeys_stop(tmp_path):
    run = _run(tmp_path)
    assert worker.run_job(run, evaluate="none")["steps"] == 15
    job = worker.Job(run)
    job.load_data()
    job.build()
    assert job.progress.step == 15 and job.end == 15 and job.spe == 15  # resumed: nothing left to train
    assert job.model.name == "vae" and job.data.name == "digits"
    assert job.read_control(job.progress) is True
    run.send(command="stop")
    job._poll_next = 0.0
    assert job.read_control(job.progress) is False
    run.send(command="run")
    job._poll_next = 0.0
    assert job.read_control(job.progress) is True
    job.stop_reason = "test"
    assert job.read_control(job.progress) is False  # a SIGTERM's stop needs no control file
    with pytest.raises(ValueError, match="evaluate must be one of"):
        worker.Job(run, evaluate="quick")


def test_an_epochs_grid_is_also_the_live_grid_and_restarts_the_live_cadence(tmp_path, monkeypatch):
    job = worker.Job(_run(tmp_path, live_every_s=2.0), evaluate="none")
    job.load_data()
    job.build()
    draws = []
    real = worker.fixed_noise_grid
    monkeypatch.setattr(worker, "fixed_noise_grid", lambda model, cfg: draws.append(1) or real(model, cfg))
    job.live.next = 0.0  # a live grid is due
    job.on_epoch_end(0, job.progress)
    assert len(draws) == 1  # one draw for both images
    assert job.run.live_png.read_bytes() == job.run.epoch_grids()[0].read_bytes()
    assert not job.live.due()  # the next live draw waits its interval from this one
    job.side_tasks()
    assert len(draws) == 1
    live = job.run.live_png.read_bytes()
    job.finish("finished")  # ending at that epoch's end: its grid is the last one, not drawn again
    assert len(draws) == 1 and job.run.live_png.read_bytes() == live and job.run.state()["state"] == "finished"
    job.progress.step += 1  # a stop between epochs: the last grid is drawn at the end
    job.finish("stopped")
    assert len(draws) == 2


@pytest.mark.parametrize("epoch_s", [3.0, 30.0])
def test_epoch_grids_stay_within_the_sampling_budget_however_short_the_epochs(tmp_path, monkeypatch, epoch_s):
    """On a clock the test moves: each grid takes 1 s, so the live cadence allows one per 1 / SAMPLING_BUDGET = 10 s.
    Epochs of 3 s (shorter than that) get a grid when it is due, at their end only; epochs of 30 s get one each."""
    job = worker.Job(_run(tmp_path, live_every_s=2.0), evaluate="none")
    job.load_data()
    job.build()
    now = [0.0]
    monkeypatch.setattr(worker, "time", type("Clock", (), {"monotonic": lambda: now[0], "perf_counter": lambda: now[0],
                                                           "time": lambda: 1e9 + now[0]}))
    draws, real = [], worker.fixed_noise_grid

    def grid(model, cfg):
        draws.append(now[0])
        now[0] += 1.0
        return real(model, cfg)
    monkeypatch.setattr(worker, "fixed_noise_grid", grid)
    job._epoch_began, job.live.next = 0.0, 0.0
    epochs = 40
    for epoch in range(1, epochs + 1):
        for _ in range(3):  # the log rows' side tasks, evenly through the epoch
            now[0] += epoch_s / 3
            job.side_tasks()
        job.on_epoch_end(epoch, job.progress)
    with_grid = sorted(int(p.stem[6:]) for p in job.run.epoch_grids())
    assert with_grid[0] == 1 and with_grid[-1] <= epochs
    if epoch_s < 1.0 / worker.SAMPLING_BUDGET:
        assert len(draws) == 1 + len(with_grid)  # after the first epoch's live draw, every draw is an epoch's grid
        assert len(draws) * 1.0 <= worker.SAMPLING_BUDGET * now[0] + 2  # within the budget, but for the first two
        assert len(with_grid) >= epochs * epoch_s * worker.SAMPLING_BUDGET / 1.5  # and not far under it
        assert job.run.live_png.read_bytes() == job.run.epoch_grids()[-1].read_bytes()
    else:
        assert with_grid == list(range(1, epochs + 1))  # long epochs: each has its grid, live grids between


def test_a_stop_while_the_data_loads_ends_the_job_stopped_at_once(tmp_path, monkeypatch):
    run = _run(tmp_path)
    jobs = []

    def loader(*args, **kwargs):  # the signal handler runs in the loading thread, as a SIGTERM's would
        jobs[0].request_stop(worker.SIGTERM_MESSAGE)
        raise AssertionError("request_stop should have raised Terminated")

    monkeypatch.setattr(worker, "load_dataset", loader)
    job = worker.Job(run)
    jobs.append(job)
    summary = job.run_all()
    assert summary["state"] == "stopped" and summary["steps"] == 0 and summary["error"] is None
    assert run.state()["state"] == "stopped" and "SIGTERM" in run.state()["message"]
    assert not run.checkpoint_path.exists()


# ---- the heartbeat while the data loads ----

def test_the_heartbeat_advances_while_the_data_loads(tmp_path, monkeypatch):
    """A loader that takes longer than the server's stale limit: the run stays 'running', never 'interrupted'."""
    import genlib.runs.store as store

    monkeypatch.setattr(worker, "HEARTBEAT_S", 0.1)
    monkeypatch.setattr(store, "HEARTBEAT_STALE_S", 1.0)  # what a (re)started server calls silent
    run = _run(tmp_path)
    real = worker.load_dataset
    release, loading = threading.Event(), threading.Event()

    def slow_loader(*args, **kwargs):  # Ising Monte Carlo data, say: minutes
        loading.set()
        assert release.wait(120), "the test never released the loader"
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "load_dataset", slow_loader)
    job = worker.Job(run, evaluate="none")
    thread = threading.Thread(target=job.run_all, daemon=True)
    thread.start()
    try:
        wait_for(loading.is_set, 60, "the loader to start")
        stamps = [run.state()["updated"]]

        def beat_seen() -> bool:
            stamp = run.state().get("updated")
            if stamp is not None and stamp > stamps[-1]:
                stamps.append(stamp)
            return len(stamps) >= 4 and stamps[-1] - stamps[0] > store.HEARTBEAT_STALE_S

        wait_for(beat_seen, 60, "heartbeats during a load longer than the stale limit")
        assert loading.is_set() and not release.is_set()  # all of that while the loader was still busy
        assert run.state()["message"].startswith("loading digits") and run.effective_state() == "running"
    finally:
        release.set()
        thread.join(120)
    assert run.state()["state"] == "finished"


# ---- what the job evaluates at the end ----

def test_evaluate_none_records_nothing_and_cheap_one_cheap_record(tmp_path, monkeypatch, capsys):
    from genlib.cli import main

    monkeypatch.setattr(worker, "QUALITY_EVERY_S", 0.0)  # periodic evaluations as often as allowed: none with 'none'
    monkeypatch.setenv("GENLIB_CACHE", str(tmp_path / "cache"))
    base = ["train", "vae", "--dataset", "digits", "--max-steps", "10", "--batch-size", "50", "--device", "cpu",
            "--hidden", "32", "--latent", "2", "--runs-dir", str(tmp_path / "runs"), "--threads", "1"]
    assert main(base + ["--evaluate", "none"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["state"] == "finished" and "quality" not in summary and "evaluation" not in out.err
    assert "\nsaving the last checkpoint and drawing the last sample grid...\n" in out.err  # after the bar's line
    assert not (Path(summary["run_dir"]) / "quality.jsonl").exists()

    assert main(base + ["--quiet"]) == 0  # the default: cheap
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["quality"]["kind"] == "cheap" and summary["quality"]["error"] is None
    assert summary["quality"]["figures"]["neg_elbo"] > 0 and summary["quality"]["expected_seconds"] >= 0
    assert "cheap evaluation (IWAE, ~" in out.err and "--evaluate none skips it" in out.err
    records = [json.loads(line) for line in (Path(summary["run_dir"]) / "quality.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "cheap" and records[-1]["step"] == 10
    assert records[-1]["figures"] == summary["quality"]["figures"]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--evaluate {none,cheap,final}" in help_text and "'cheap' (default" in help_text


def test_a_final_evaluation_says_what_it_does_with_progress(tmp_path):
    import io

    from genlib.cli import EvaluationReport

    stream = io.StringIO()
    report = EvaluationReport(stream, "final", skip_hint="--evaluate none skips it")
    report.plan({"AIS": 80.0, "classifier": 60.0, "samples": 10.0})
    report.progress(0.5, "AIS: AIS step 7,250/14,500 (100 chains)")
    report.progress(1.0, "samples: sampling 5,000/5,000 images")
    lines = stream.getvalue().splitlines()
    assert lines[0] == ("final evaluation (AIS, training the classifier once and samples, ~2.5 min on this machine; "
                        "--evaluate none skips it)")
    assert lines[1].startswith("final evaluation:  27% (AIS: AIS step 7,250/14,500") and " left" in lines[1]
    assert lines[-1].startswith("final evaluation: 100% (samples:")


# ---- SIGTERM ----

def test_a_worker_process_stops_cleanly_on_sigterm(tmp_path):
    """What Ray's job stop sends: the worker checkpoints, records 'stopped' and exits 0, as after the Stop button."""
    run = _run(tmp_path, epochs=10_000, checkpoint_every_s=1000.0)  # far more than the test lets it train
    env = dict(os.environ, OMP_NUM_THREADS="1", GENLIB_WORKER_THREADS="1")
    with open(run.log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "genlib", "worker", str(run.path)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: (run.state().get("step") or 0) >= 20 or proc.poll() is not None, 180, "training steps")
        assert proc.poll() is None, run.log_path.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, run.log_path.read_text()[-2000:]
    state = run.state()
    assert state["state"] == "stopped" and "SIGTERM" in state["message"] and state["error"] is None
    assert json.loads(out.decode().strip().splitlines()[-1])["state"] == "stopped"
    ckpt = load_checkpoint(run.checkpoint_path)
    assert ckpt.step == state["step"] >= 20  # the checkpoint was written at the stop, not only at an epoch's end
    assert run.effective_state() == "stopped"
