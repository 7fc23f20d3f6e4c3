"""Importing an uploaded checkpoint (genlib.runs.store.import_checkpoint): a valid genlib checkpoint becomes a new run that
loads and continues; truncated files, pickles (a real malicious one, which must run nothing), foreign safetensors,
unknown models, wrong shapes, absurd sizes and oversized files are refused with a message, and nothing is written."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import pytest
import torch

from genlib.runs.checkpoints import CheckpointError, checkpoint_bytes, load_checkpoint, model_from_checkpoint
from genlib.jobs.manager import JobManager
from genlib.models import build_model
from genlib.runs.store import RunStore, import_checkpoint
from genlib.training import TrainConfig

TRAIN = dataclasses.asdict(TrainConfig(dataset="digits", epochs=1, batch_size=50, log_every=2, device="cpu",
                                       n_samples=4, lr=1e-3))


class Evil:
    """Unpickling this runs a shell command that creates `marker`: a real malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def vae_bytes(step: int = 7, **config) -> bytes:
    model = build_model("vae", {"hidden": 16, "latent": 2, **config})
    model.configure_training(lr=1e-3)
    return checkpoint_bytes(model, train_config={**TRAIN, "device": "cuda:3", "data_root": "/home/someone/data"},
                            progress={"step": step, "epoch": 0, "images": step * 50, "seconds": 1.5},
                            extra={"run_id": "vae-elsewhere"})


def with_header(data: bytes, **changes) -> bytes:
    """The same tensors under a changed header (what a forged or foreign checkpoint looks like)."""
    from safetensors.torch import load, save

    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + n])["__metadata__"]
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in changes.items()})
    return save(load(data), metadata=meta)


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def test_a_valid_checkpoint_becomes_a_run_that_loads_and_continues(store):
    run = import_checkpoint(store, vae_bytes(step=7), filename="../../etc/my vae.safetensors")
    assert run.path.parent == store.root.resolve() or run.path.parent == store.root  # the name is never a path
    assert [r.id for r in store.list()] == [run.id]
    info, state = run.info(), run.state()
    assert info["model"] == "vae" and info["model_config"]["latent"] == 2
    assert info["train_config"]["device"] == "auto" and info["train_config"]["data_root"] is None
    assert state["state"] == "stopped" and state["step"] == 7
    model_from_checkpoint(load_checkpoint(run.checkpoint_path))
    mgr = JobManager(store, backend="thread")
    try:
        mgr.resume(run.id, max_steps=11)
        status = mgr.wait(run.id, timeout=90)
        assert status.state == "finished" and status.step == 11  # continued from step 7, not from 0
    finally:
        mgr.close(stop_jobs=True)


def test_a_malicious_pickle_is_refused_and_runs_nothing(store, tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"model": Evil(marker)})
    probe = tmp_path / "probe"  # the file really is malicious: unpickling it runs the command
    pickle.loads(pickle.dumps(Evil(probe)))
    assert probe.exists()
    with pytest.raises(CheckpointError, match="pickle"):
        import_checkpoint(store, evil, filename="model.safetensors")
    zipped = tmp_path / "evil.pt"
    torch.save({"model": Evil(marker)}, zipped)
    with pytest.raises(CheckpointError, match="pickle"):
        import_checkpoint(store, zipped.read_bytes(), filename="model.safetensors")
    assert not marker.exists()
    assert store.list() == []


@pytest.mark.parametrize("cut", [0, 5, 9, 200, 0.5, -1])
def test_truncated_files_are_refused(store, cut):
    data = vae_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
    with pytest.raises(CheckpointError):
        import_checkpoint(store, data[:n])
    assert store.list() == []


def test_wrong_model_wrong_shapes_and_foreign_files_are_refused(store):
    from safetensors.torch import save

    data = vae_bytes()
    cases = {
        "unknown model": (with_header(data, model="diffusion"), "diffusion"),
        "wrong shapes": (with_header(data, model_config={"hidden": 16, "latent": 3}), "do not fit"),
        "another model's weights": (with_header(data, model="gan", model_config={}), "do not fit|GAN"),
        "bad settings": (with_header(data, model_config={"hidden": -5, "latent": 2}), "hidden"),
        "absurd size": (with_header(data, model_config={"hidden": 4096, "latent": 2,
                                                        "image_shape": [1, 10**6, 10**6]}), "pixels|parameters"),
        "bad training settings": (with_header(data, train_config={**TRAIN, "lr": -1}), "lr"),
        "damaged progress": (with_header(data, progress=["step", 3]), "progress"),
        "negative step": (with_header(data, progress={"step": -3}), "negative"),
        "foreign safetensors": (save({"w": torch.zeros(3)}), "not a genlib checkpoint"),
        "random bytes": (os.urandom(4096), "not a safetensors|too short|truncated"),
    }
    for name, (blob, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            import_checkpoint(store, blob, filename=f"{name}.safetensors")
    assert store.list() == []


def test_oversized_uploads_are_refused_before_parsing(store):
    with pytest.raises(CheckpointError, match="limit"):
        import_checkpoint(store, vae_bytes(), max_bytes=1000)
    assert store.list() == []
