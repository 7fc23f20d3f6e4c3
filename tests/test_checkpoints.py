"""Checkpoints: self-describing, atomic, and never a way to run code (a real malicious pickle must do nothing)."""

import os
import pickle
import zipfile

import pytest
import torch

from genlib.runs.checkpoints import CheckpointError, load_checkpoint, model_from_checkpoint, read_checkpoint, save_checkpoint
from genlib.models import build_model


class _Evil:
    """Unpickling this runs os.system: the canonical malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def vae(tmp_path):
    m = build_model("vae", {"hidden": 16, "latent": 2})
    m.configure_training(lr=1e-3)
    return m


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"model": _Evil(marker)}))
    # sanity: the file really is malicious when unpickled
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe)))
    assert probe.exists()
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)
    assert not marker.exists()


def test_torch_save_zip_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"x": _Evil(marker)}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)
    assert not marker.exists()


def test_self_describing_round_trip(tmp_path, vae):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, vae, train_config={"lr": 1e-3, "epochs": 2}, progress={"step": 12, "images": 99})
    ckpt = load_checkpoint(path)
    assert ckpt.model_name == "vae" and ckpt.step == 12
    assert ckpt.model_config["latent"] == 2 and ckpt.train_config["epochs"] == 2
    model = model_from_checkpoint(ckpt)
    for (k, a), (_, b) in zip(vae.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob("*.tmp")), "no temporary files are left behind"


def test_truncated_file_is_refused(tmp_path, vae):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, vae, train_config={}, progress={"step": 1})
    data = path.read_bytes()
    for cut in (5, 100, len(data) // 2, len(data) - 1):
        with pytest.raises(CheckpointError):
            read_checkpoint(data[:cut])


def test_wrong_model_and_wrong_shapes_are_refused(tmp_path, vae):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, vae, train_config={}, progress={"step": 1})
    ckpt = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a GAN"):
        model_from_checkpoint(ckpt, expect="gan")
    bad = ckpt.model_config | {"latent": 3}
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(type(ckpt)(**{**ckpt.__dict__, "model_config": bad}))


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a genlib checkpoint"):
        load_checkpoint(path)


def test_size_limit(tmp_path, vae):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, vae, train_config={}, progress={"step": 1})
    with pytest.raises(CheckpointError, match="limit"):
        load_checkpoint(path, max_bytes=100)


def test_half_precision_checkpoint_loads_as_float32(tmp_path, vae):
    path = tmp_path / "small.safetensors"
    save_checkpoint(path, vae, train_config={}, progress={"step": 1}, half=True)
    ckpt = load_checkpoint(path)
    assert ckpt.training_state is None
    model = model_from_checkpoint(ckpt)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.allclose(model.enc_mu.weight, vae.enc_mu.weight, atol=1e-3)


def test_valid_files_whose_header_length_starts_like_a_pickle_load(tmp_path, vae):
    """A header length whose first byte is 0x80 must not be mistaken for a pickle's protocol marker."""
    from genlib.runs.checkpoints import checkpoint_bytes

    hits = 0
    for pad in range(400):
        data = checkpoint_bytes(vae, train_config={"pad": "x" * pad}, progress={"step": 1})
        if data[:1] == b"\x80":
            hits += 1
            assert read_checkpoint(data).step == 1
    assert hits > 0
