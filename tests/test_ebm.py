"""The EBM: its config's bounds, what a training step does, that short training lowers the energy of real images
relative to noise, and that the replay buffer survives a checkpoint (so a resumed run keeps its chains)."""

import dataclasses

import pytest
import torch

from genlib.runs.checkpoints import checkpoint_bytes, load_checkpoint, read_checkpoint
from genlib.data import load_dataset, to_unit
from genlib.models import build_model
from genlib.models.ebm import EBM, EBMConfig
from genlib.runs.store import RunStore
from genlib.training import TrainConfig
from genlib.jobs.worker import run_job

TINY = {"channels": (4, 4, 8, 8), "hidden": 8, "langevin_steps": 3, "buffer_size": 16, "sample_steps": 3}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def one_thread():
    """One torch thread: on a small shared CPU, two threads of tiny convolutions fight each other (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("field, value", [
    ("channels", (4, 4, 8)), ("channels", (0, 4, 8, 8)), ("hidden", 0), ("langevin_steps", 0),
    ("step_size", 0.0), ("noise", -0.1), ("grad_clip", 0), ("buffer_size", 0), ("reinit", 1.5),
    ("reg_weight", -1.0), ("adam_beta1", 1.0), ("sample_steps", 0), ("langevin_steps", 2.5), ("hidden", True),
    ("spectral_norm", 1),
])
def test_config_refuses_values_out_of_bounds(field, value):
    with pytest.raises(ValueError, match=field):
        EBMConfig(**{field: value})


def test_config_is_frozen_and_defaults_are_valid():
    cfg = EBMConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.step_size = 1.0  # type: ignore[misc]
    assert EBM(cfg).energy(torch.rand(2, 1, 28, 28)).shape == (2,)
    with pytest.raises(ValueError, match="shape"):
        EBM(cfg).energy(torch.rand(2, 1, 32, 32))


def test_train_step_fills_the_buffer_and_reports_consistent_metrics():
    torch.manual_seed(0)
    model = build_model("ebm", TINY)
    model.configure_training(lr=1e-3)
    assert model.replay is None and "replay" not in model.state_dict()
    m = model.train_step(torch.rand(8, 1, 28, 28))
    assert model.replay.shape == (16, 1, 28, 28) and 0 <= model.replay.min() and model.replay.max() <= 1
    assert torch.isclose(m["energy_gap"], m["energy_sample"] - m["energy_real"], atol=1e-5)
    assert float(m["grad_norm"]) > 0
    assert float(m["loss"]) >= -float(m["energy_gap"]) - 1e-5  # loss = -gap + a never-negative regulariser
    assert all(p.grad is not None for p in model.net.parameters())  # the update reached every parameter


def test_short_training_lowers_the_energy_of_real_images_relative_to_noise(digits, one_thread):
    torch.manual_seed(0)
    model = build_model("ebm", {"channels": (8, 16, 16, 16), "hidden": 32, "langevin_steps": 5, "buffer_size": 256})
    model.configure_training(lr=1e-3)
    real = to_unit(digits.x_test[:256])  # (256, 1, 28, 28) held-out digits
    noise = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    def gap() -> float:  # mean E(noise) - mean E(real): positive when real digits are the more likely
        with torch.no_grad():
            return float(model.energy(noise).mean() - model.energy(real).mean())

    before = gap()
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        idx = torch.randint(0, digits.x_train.shape[0], (64,), generator=g)
        model.train_step(to_unit(digits.x_train[idx]))
    after = gap()
    assert after > 0.5 and after > before + 0.5, (before, after)


def test_replay_buffer_survives_a_checkpoint_and_resume():
    torch.manual_seed(0)
    model = build_model("ebm", TINY)
    model.configure_training(lr=1e-3)
    model.train_step(torch.rand(4, 1, 28, 28))
    ckpt = read_checkpoint(checkpoint_bytes(model, train_config={}, progress={"step": 1}))
    again = build_model("ebm", ckpt.model_config)
    again.load_state_dict(ckpt.model_state)
    again.configure_training(lr=1e-3)
    again.load_training_state(ckpt.training_state)
    assert torch.equal(again.replay, model.replay)
    # both continue identically from here: same weights, same Adam moments, same buffer, same random draws
    torch.manual_seed(3)
    a = model.train_step(torch.rand(4, 1, 28, 28))
    torch.manual_seed(3)
    b = again.train_step(torch.rand(4, 1, 28, 28))
    assert torch.equal(a["loss"], b["loss"]) and torch.equal(again.replay, model.replay)
    # a weights-only file (the live snapshot) holds no buffer, and a buffer of the wrong shape is refused
    snap = read_checkpoint(checkpoint_bytes(model, train_config={}, progress={}, with_training_state=False))
    assert snap.training_state is None
    with pytest.raises(ValueError, match="replay buffer"):
        again.load_training_state({"replay": torch.rand(4, 1, 32, 32)})


def _largest_singular_value(layer: torch.nn.Module) -> float:
    return float(torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2))


def test_spectral_norm_bounds_every_layer_and_the_average_keeps_only_weights():
    torch.manual_seed(0)
    model = build_model("ebm", {**TINY, "spectral_norm": True})
    model.configure_training(lr=1e-3, ema=0.9)
    for _ in range(5):
        model.train_step(torch.rand(8, 1, 28, 28))
    layers = [model.net.conv1, model.net.conv2, model.net.conv3, model.net.conv4, model.net.fc1, model.net.fc2]
    # the normalised weight's top singular value is 1 up to the power iteration's error; the raw weight's is not
    assert all(abs(_largest_singular_value(layer) - 1.0) < 0.05 for layer in layers)
    raw = [float(torch.linalg.matrix_norm(layer.parametrizations.weight.original.detach().flatten(1), ord=2))
           for layer in layers]
    assert any(abs(r - 1.0) > 0.05 for r in raw), raw
    keys = model.averaged_entries().keys()
    assert "net.conv1.parametrizations.weight.original" in keys and "net.conv1.bias" in keys
    assert not [k for k in keys if k.endswith(("._u", "._v"))]
    with model.averaged_weights():  # the average's weights are normalised too, with the live singular vectors
        assert all(abs(_largest_singular_value(layer) - 1.0) < 0.1 for layer in layers)


def test_spectral_norm_chain_with_weights_normalised_once_matches_the_plain_chain():
    """EBM.langevin normalises the weights once per chain (parametrize.cached): the same chain as normalising them
    at every step, which is what the energy function alone does; and a chain leaves the model as it was."""
    from genlib.sampling.langevin import langevin_chain

    torch.manual_seed(0)
    model = build_model("ebm", {**TINY, "spectral_norm": True})
    x0 = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    cfg = model.config
    fast = model.langevin(x0, 7, generator=torch.Generator().manual_seed(2), step_size=1000.0)
    plain = langevin_chain(model.energy, x0, 7, step_size=1000.0, noise=cfg.noise, clip=cfg.grad_clip,
                           generator=torch.Generator().manual_seed(2))
    assert not torch.equal(fast.x, x0)
    torch.testing.assert_close(fast.x, plain.x, atol=1e-5, rtol=0)
    again = model.langevin(x0, 7, generator=torch.Generator().manual_seed(2), step_size=1000.0)
    assert torch.equal(again.x, fast.x)  # sampling moved no singular-vector estimate


def test_a_spectral_norm_checkpoint_loads_into_the_same_energies():
    torch.manual_seed(0)
    model = build_model("ebm", {**TINY, "spectral_norm": True})
    model.configure_training(lr=1e-3)
    model.train_step(torch.rand(4, 1, 28, 28))
    ckpt = read_checkpoint(checkpoint_bytes(model, train_config={}, progress={"step": 1}))
    again = build_model("ebm", ckpt.model_config)
    again.load_state_dict(ckpt.model_state)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(again.eval().energy(x), model.eval().energy(x))


def test_worker_writes_the_replay_grid_and_resumes_with_the_buffer(tmp_path):
    store = RunStore(tmp_path)
    cfg = TrainConfig(dataset="digits", epochs=1, max_steps=3, batch_size=32, log_every=1, device="cpu",
                      n_samples=4, lr=1e-3)
    run = store.create({"model": "ebm", "model_config": TINY, "train_config": dataclasses.asdict(cfg),
                        "dataset": "digits"})
    summary = run_job(run)
    assert summary["state"] == "finished" and summary["steps"] == 3, summary
    assert (run.path / "replay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["metrics"]) == set(EBM.metric_names)
    ckpt = load_checkpoint(run.checkpoint_path)
    assert ckpt.training_state["replay"].shape == (16, 1, 28, 28)
