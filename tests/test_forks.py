"""Live knobs (lr, the VAE's beta, the RBM's k) survive checkpoints and resumes and are logged as knob events; forks
start from any saved checkpoint with one setting changed and record it; per-epoch checkpoints are thinned."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from genlib.runs.checkpoints import checkpoint_bytes, load_checkpoint, read_checkpoint
from genlib.runs.forks import (MAX_EPOCH_CHECKPOINTS, branch_points, create_fork, current_settings, epoch_checkpoints,
                          family, thin)
from genlib.models import build_model
from genlib.runs.store import RunStore
from genlib.training import TrainConfig
from genlib.jobs.worker import run_job

VAE = {"hidden": 32, "latent": 2}
RBM = {"n_hidden": 16, "sample_steps": 5}


pytestmark = pytest.mark.usefixtures("no_quality_evaluation")  # see tests/conftest.py


def make_run(store: RunStore, model: str, model_config: dict, **train):
    from genlib.models import make_config

    tc = dataclasses.asdict(TrainConfig(**{"dataset": "digits", "batch_size": 50, "log_every": 5,
                                           "live_every_s": 1000.0, "snapshot_every_s": 1000.0, **train}))
    run = store.create({"model": model, "model_config": dataclasses.asdict(make_config(model, model_config)),
                        "train_config": tc, "dataset": "digits"})
    run.send(command="run", lr=tc["lr"])
    return run


def knob_events(run) -> list[dict]:
    rows, _ = run.metrics()
    return [r for r in rows if r.get("event") == "knob"]


# ---- the models' knobs ----

def test_vae_beta_and_rbm_k_travel_in_the_training_state():
    vae = build_model("vae", VAE)
    vae.configure_training(lr=1e-3)
    vae.set_beta(3.5)
    ckpt = read_checkpoint(checkpoint_bytes(vae, train_config={}, progress={}))
    fresh = build_model("vae", VAE)
    fresh.configure_training(lr=1e-3)
    assert fresh.beta == 1.0
    fresh.load_training_state(ckpt.training_state)
    assert fresh.beta == 3.5 and fresh.knobs() == {"lr": 1e-3, "beta": 3.5}
    rbm = build_model("rbm", RBM)
    rbm.configure_training(lr=0.1)
    rbm.set_knob("k", 4)
    fresh = build_model("rbm", RBM)
    fresh.configure_training(lr=0.1)
    fresh.load_training_state(read_checkpoint(checkpoint_bytes(rbm, train_config={}, progress={})).training_state)
    assert fresh.k == 4


def test_knobs_are_checked_before_they_are_set():
    vae = build_model("vae", VAE)
    vae.configure_training(lr=1e-3)
    for name, value in (("beta", 11.0), ("beta", True), ("lr", 0.0), ("k", 2)):
        with pytest.raises(ValueError):
            vae.set_knob(name, value)
    assert vae.knobs() == {"lr": 1e-3, "beta": 1.0}
    with pytest.raises(ValueError, match="k must be an int"):
        build_model("rbm", RBM).check_knob("k", 2.5)


# ---- the worker: live changes, logged, persisted through a resume ----

def test_a_live_beta_change_is_logged_checkpointed_and_kept_by_a_resume(tmp_path, monkeypatch):
    monkeypatch.setattr("genlib.jobs.worker.CONTROL_POLL_S", 0.0)  # tiny steps take a millisecond: read control every step
    store = RunStore(tmp_path)
    run = make_run(store, "vae", VAE, lr=1e-3, epochs=1, max_steps=20)

    def change(row):  # while the job runs, as the dashboard's Apply button does
        if row["step"] >= 10 and "beta" not in run.control():
            run.send(beta=2.5, lr=5e-4)

    assert run_job(run, on_log=change)["state"] == "finished"
    events = knob_events(run)
    assert len(events) == 1 and events[0]["beta"] == 2.5 and events[0]["lr"] == 5e-4
    assert 10 <= events[0]["step"] < 20
    ckpt = load_checkpoint(run.checkpoint_path)
    assert ckpt.training_state["beta"] == 2.5 and ckpt.extra["knobs"] == {"lr": 5e-4, "beta": 2.5}
    # the control file forgets beta (as a fork or an old run folder would): the checkpoint still knows it
    control = run.control()
    del control["beta"]
    from genlib.runs.io import atomic_write_json

    atomic_write_json(run.control_path, control)
    info = run.info()
    info["train_config"]["max_steps"] = 30
    run.write_info(info)
    assert run_job(run)["state"] == "finished"
    ckpt = load_checkpoint(run.checkpoint_path)
    assert ckpt.step == 30 and ckpt.training_state["beta"] == 2.5
    assert len(knob_events(run)) == 1  # nothing changed at the resume: nothing marked


def test_a_knob_changed_while_stopped_is_applied_and_marked_at_the_resume(tmp_path):
    store = RunStore(tmp_path)
    run = make_run(store, "rbm", RBM, lr=0.1, epochs=1, max_steps=10)
    assert run_job(run)["state"] == "finished"
    assert load_checkpoint(run.checkpoint_path).extra["knobs"] == {"lr": 0.1, "k": 1}
    run.send(k=3)
    info = run.info()
    info["train_config"]["max_steps"] = 20
    run.write_info(info)
    assert run_job(run)["state"] == "finished"
    assert [(e["step"], e.get("k"), e.get("lr")) for e in knob_events(run)] == [(10, 3, None)]
    assert load_checkpoint(run.checkpoint_path).training_state["k"] == 3


def test_a_bad_knob_value_is_refused_without_killing_the_job(tmp_path):
    store = RunStore(tmp_path)
    run = make_run(store, "vae", VAE, lr=1e-3, epochs=1, max_steps=15)
    run.send(beta=50.0)  # out of [0, 10]: the worker must carry on with beta 1
    assert run_job(run)["state"] == "finished"
    assert knob_events(run) == []
    assert load_checkpoint(run.checkpoint_path).training_state["beta"] == 1.0


# ---- forks ----

@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A VAE trained for two epochs on the offline digits (30 steps each), with its per-epoch checkpoints."""
    store = RunStore(tmp_path_factory.mktemp("runs"))
    run = make_run(store, "vae", VAE, lr=1e-3, epochs=2)
    assert run_job(run)["state"] == "finished"
    return store, run


def test_a_run_keeps_a_half_precision_checkpoint_per_epoch(parent):
    _, run = parent
    assert [p.name for p in epoch_checkpoints(run)] == ["epoch-0001.safetensors", "epoch-0002.safetensors"]
    ckpt = load_checkpoint(epoch_checkpoints(run)[0])
    assert ckpt.step == 30 and ckpt.training_state is None and ckpt.extra["knobs"]["beta"] == 1.0
    assert all(v.dtype == torch.float16 for v in ckpt.model_state.values() if v.is_floating_point())
    points = branch_points(run)
    assert [(b.name, b.step, b.epoch) for b in points] == [("last", 60, 2), ("epoch-0002", 60, 2),
                                                           ("epoch-0001", 30, 1)]


def test_thinning_keeps_the_ends_and_at_most_the_limit():
    paths = [Path(f"epoch-{i:04d}.safetensors") for i in range(1, 31)]
    drop = thin(paths, MAX_EPOCH_CHECKPOINTS)
    kept = [p for p in paths if p not in drop]
    assert len(kept) <= MAX_EPOCH_CHECKPOINTS and kept[0] == paths[0] and kept[-1] == paths[-1]
    assert thin(paths[:5], MAX_EPOCH_CHECKPOINTS) == []


def test_a_fork_from_an_epoch_checkpoint_records_its_parent_and_trains_with_the_change(parent):
    store, run = parent
    fork = create_fork(store, run, {"lr": 1e-4}, checkpoint="epoch-0001")
    info = fork.info()
    assert info["forked_from"] == {"run_id": run.id, "checkpoint": "epoch-0001", "step": 30, "epoch": 1,
                              "changed": {"lr": [1e-3, 1e-4]}}
    assert info["train_config"]["lr"] == 1e-4 and fork.control()["lr"] == 1e-4
    assert [p.name for p in fork.epoch_grids()] == ["epoch-0001.png"]  # the shared history, up to the branch
    rows, _ = fork.metrics()
    assert max(r["step"] for r in rows) == 30 and rows[-1]["event"] == "fork"
    assert run_job(fork)["state"] == "finished"
    rows, _ = fork.metrics()
    after = [r for r in rows if "event" not in r and r["step"] > 30]
    assert after and all(r["lr"] == 1e-4 for r in after) and after[-1]["step"] == 60
    assert current_settings(fork) == {"lr": 1e-4, "beta": 1.0}
    assert {r.id for r in family(store, run)} >= {run.id, fork.id}
    assert run.id in {r.id for r in family(store, fork)}


def test_a_beta_fork_starts_from_the_parents_weights(parent):
    store, run = parent
    fork = create_fork(store, run, {"beta": 4.0, "epochs": 3})
    assert fork.info()["model_config"]["beta"] == 4.0
    assert fork.info()["forked_from"]["changed"] == {"beta": [1.0, 4.0], "epochs": [2, 3]}
    a, b = load_checkpoint(run.checkpoint_path), load_checkpoint(fork.checkpoint_path)
    assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
    assert run_job(fork)["state"] == "finished"
    ckpt = load_checkpoint(fork.checkpoint_path)
    assert ckpt.step == 90 and ckpt.training_state["beta"] == 4.0


def test_forks_refuse_what_they_cannot_do(parent):
    store, run = parent
    before = len(store.list())
    with pytest.raises(ValueError, match="nothing left to train"):
        create_fork(store, run, {"lr": 1e-4})  # the last checkpoint is at the planned end
    with pytest.raises(ValueError, match="cannot change k"):
        create_fork(store, run, {"k": 3, "epochs": 3})
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, 10\]"):
        create_fork(store, run, {"beta": 20.0, "epochs": 3})
    with pytest.raises(ValueError, match="no checkpoint 'epoch-0007'"):
        create_fork(store, run, {"epochs": 9}, checkpoint="epoch-0007")
    with pytest.raises(ValueError, match="exactly as its parent"):
        create_fork(store, run, {"lr": 1e-3}, checkpoint="epoch-0001")
    assert len(store.list()) == before  # nothing half-made was left behind


def test_the_job_manager_forks_and_validates_knobs(parent, tmp_path):
    from genlib.jobs.manager import JobManager

    store, run = parent
    mgr = JobManager(store, backend="thread", max_jobs=1)
    try:
        new_id = mgr.fork(run.id, {"lr": 3e-4}, checkpoint="epoch-0001")
        assert mgr.wait(new_id, timeout=120).state == "finished"
        with pytest.raises(ValueError, match="no live setting 'k'"):
            mgr.set_knobs(run.id, k=3)
        with pytest.raises(ValueError, match=r"beta must be a number in \[0, 10\]"):
            mgr.set_knobs(run.id, beta=-1.0)
    finally:
        mgr.close(stop_jobs=True)
