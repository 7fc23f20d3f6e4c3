"""genlib.jobs.budget against what training really allocates: the EBM's replay buffer, made on its first step and so
invisible to the meta-device model, must be in the estimate, and a buffer too large for the memory must be refused
before anything is allocated."""

from __future__ import annotations

import pytest
import torch

from genlib.jobs.budget import SAFETY, STATE_COPIES, check_fits, estimate
from genlib.models import build_model


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _measured_ebm(config: dict, batch: int) -> dict[str, int]:
    """Bytes of every tensor an EBM keeps after one training step and one checkpoint's training_state()."""
    torch.manual_seed(0)
    model = build_model("ebm", config)
    model.configure_training(lr=1e-4)
    model.train_step(torch.rand(batch, 1, 28, 28))
    params = list(model.parameters())
    state = model.training_state()
    return {
        "weights": _nbytes(params),
        "grads": _nbytes(p.grad for p in params),
        "optimizer": _nbytes(v for s in model.opt.state.values() for v in s.values()),
        "replay": _nbytes([model.replay]),
        "replay_copy": _nbytes([state["replay"]]),
    }


@pytest.mark.parametrize("buffer_size", [64, 4096])
def test_the_ebm_estimate_covers_its_measured_tensors_and_its_replay_buffer(buffer_size):
    config = {"channels": (8, 16, 16, 16), "hidden": 16, "buffer_size": buffer_size, "langevin_steps": 2}
    measured = _measured_ebm(config, batch=8)
    est = estimate("ebm", config, batch_size=8)
    # the replay buffer (buffer_size, 1, 28, 28) fp32 and the clone each checkpoint makes: exactly what is held
    assert measured["replay"] == buffer_size * 784 * 4
    assert est.state_bytes == measured["replay"] + measured["replay_copy"] == STATE_COPIES * measured["replay"]
    # weights, gradients and Adam's two moments: the estimate's upper bound, within a few bytes per tensor (steps)
    held = measured["weights"] + measured["grads"] + measured["optimizer"]
    assert held <= est.parameter_bytes + 8 * len(list(build_model("ebm", config).parameters()))
    assert est.parameter_bytes <= 1.1 * held
    assert "replay buffer" in est.describe()


def test_models_without_a_buffer_have_no_state_bytes():
    for name, config in (("vae", {"hidden": 64, "latent": 2}), ("rbm", {"n_hidden": 16}), ("gan", {"preset": "fast"})):
        est = estimate(name, config, batch_size=4)
        assert est.state_bytes == 0 and "replay buffer" not in est.describe()


def test_a_replay_buffer_too_large_for_the_memory_is_refused_before_allocating():
    config = {"buffer_size": 100_000}  # 100,000 x 784 fp32 = 314 MB, twice with the checkpoint's copy
    est = estimate("ebm", config, batch_size=128)
    without_buffer = est.total - est.state_bytes
    # the buffer, not the network, is what fills the memory: 627 MB against 1.2 MB of weights and Adam moments
    assert est.state_bytes > 100 * est.parameter_bytes and est.state_bytes > 10 * without_buffer
    available = int(2 * without_buffer / SAFETY)  # would have fit had the buffer been left out
    with pytest.raises(ValueError, match=r"replay buffer .*smaller replay buffer \(buffer_size\)"):
        check_fits("ebm", config, batch_size=128, device="cpu", available=available)
    fits = check_fits("ebm", {"buffer_size": 64}, batch_size=128, device="cpu", available=available)
    assert fits.total <= SAFETY * available
