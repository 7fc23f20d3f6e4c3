"""Training RBMs on Ising data: the RBM's linearly decaying step size (lr_decay_steps) and its resumption, the sweep
plan's recipe, and `python -m genlib train rbm --dataset ising:...` giving the RBM an L x L image shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rbm(**overrides):
    from genlib.models import build_model

    torch.manual_seed(0)
    cfg = {"image_shape": (1, 4, 4), "n_hidden": 8, "k": 1, "binarize": "threshold", **overrides}
    model = build_model("rbm", cfg)
    model.configure_training(lr=0.1)
    return model


def _batch(n: int = 20) -> torch.Tensor:
    return (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", 10**10])
def test_lr_decay_steps_is_validated(bad):
    from genlib.models.rbm import RBMConfig

    with pytest.raises(ValueError, match="lr_decay_steps"):
        RBMConfig(lr_decay_steps=bad)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_step_size_falls_linearly_to_zero_then_training_stops_moving(momentum):
    model = _rbm(lr_decay_steps=4, momentum=momentum)
    x = _batch()
    seen = []
    for _ in range(4):
        seen.append(model.step_lr())
        model.train_step(x)
    assert seen == pytest.approx([0.1, 0.075, 0.05, 0.025])
    assert model.step_lr() == 0.0 and model.updates == 4
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train_step(x)  # step size 0: the momentum buffer is applied with lr 0, nothing moves
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # constant lr (the default) keeps moving
    plain = _rbm()
    w0 = plain.W.clone()
    for _ in range(5):
        plain.train_step(x)
    assert plain.step_lr() == 0.1 and not torch.equal(w0, plain.W)


def test_a_decayed_step_equals_a_constant_step_of_that_size():
    """The decay scales the update and nothing else: step 2 of a decaying run = one step at 0.05 from the same state."""
    x = _batch()
    decaying = _rbm(lr_decay_steps=4)
    decaying.train_step(x)
    decaying.train_step(x)  # now at updates = 2: step size 0.05
    const = _rbm()
    const.load_state_dict(decaying.state_dict())
    const.set_lr(0.05)
    torch.manual_seed(7)
    decaying.train_step(x)
    torch.manual_seed(7)
    const.train_step(x)
    assert torch.allclose(decaying.W, const.W, atol=1e-7) and torch.allclose(decaying.v_bias, const.v_bias)


def test_the_update_count_survives_a_checkpoint(tmp_path):
    from genlib.runs.checkpoints import load_checkpoint, save_checkpoint

    model = _rbm(lr_decay_steps=10)
    for _ in range(3):
        model.train_step(_batch())
    save_checkpoint(tmp_path / "c.safetensors", model, train_config={}, progress={"step": 3})
    ckpt = load_checkpoint(tmp_path / "c.safetensors")
    again = _rbm(lr_decay_steps=10)
    again.load_training_state(ckpt.training_state)
    assert again.updates == 3 and again.step_lr() == pytest.approx(0.07)
    again.configure_training(lr=0.1)  # a fresh optimiser state starts the count again
    assert again.updates == 0


def test_sweep_plan_decays_over_exactly_the_run():
    from genlib.data import ImageData
    from genlib.ising.compare import SweepPlan
    from genlib.models import make_config
    from genlib.training import TrainConfig, total_steps

    plan = SweepPlan(sweep_id="s", L=8, temperatures=(2.0,), n=1000, batch_size=100, epochs=3)
    job = plan.jobs()[0]
    cfg = TrainConfig(**job["train_config"])
    data = ImageData(name="x", source="", classes=("a",), x_train=torch.zeros(1000, 1, 8, 8, dtype=torch.uint8),
                     y_train=torch.zeros(1000, dtype=torch.int64), x_test=torch.zeros(10, 1, 8, 8, dtype=torch.uint8),
                     y_test=torch.zeros(10, dtype=torch.int64))
    assert make_config("rbm", job["model_config"]).lr_decay_steps == total_steps(cfg, data.steps_per_epoch(100)) == 30


def test_cli_trains_an_rbm_on_ising_with_the_lattice_as_image_shape(tmp_path):
    runs = tmp_path / "runs"
    p = subprocess.run([sys.executable, "-m", "genlib", "train", "rbm", "--dataset", "ising:L=6,T=2.5,n=200",
                        "--data-root", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "50", "--hidden", "8",
                        "--device", "cpu", "--threads", "1", "--runs-dir", str(runs), "--quiet"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["steps"] == 4
    info = json.loads((Path(out["run_dir"]) / "run.json").read_text())
    assert info["model_config"]["image_shape"] == [1, 6, 6] and info["dataset"].startswith("ising:L=6,T=2.5")
