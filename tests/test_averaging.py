"""The weight average (genlib.models.averaging): its recurrence against a float64 reference, showing and restoring
the live weights, the training loop's update after every step, and a worker whose checkpoints hold the average
while a resume continues the live weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from genlib.data import load_dataset
from genlib.jobs import worker
from genlib.models import build_model
from genlib.models.averaging import WeightAverage
from genlib.runs.checkpoints import load_checkpoint
from genlib.runs.store import RunStore
from genlib.training import TrainConfig, train


def test_the_average_follows_its_recurrence_with_the_warm_up():
    torch.manual_seed(0)
    live = {"w": torch.zeros(5), "b": torch.zeros(2, 3)}
    avg = WeightAverage(0.9)
    ref: dict[str, torch.Tensor] | None = None
    for t in range(1, 100):
        for v in live.values():
            v.copy_(torch.randn_like(v))
        avg.update(live)
        d = min(0.9, (1 + t) / (10 + t))  # TensorFlow's ExponentialMovingAverage(num_updates=t)
        if ref is None:  # the first update starts at the weights (any d leaves them)
            ref = {k: v.double().clone() for k, v in live.items()}
        else:
            ref = {k: d * ref[k] + (1 - d) * live[k].double() for k in live}
        assert avg.updates == t
    for k in live:
        torch.testing.assert_close(avg.average[k].double(), ref[k], rtol=1e-6, atol=1e-6)
    assert avg.current_decay() == 0.9  # past the warm-up: (1 + 99) / (10 + 99) > 0.9


def test_shown_swaps_the_average_in_and_the_live_weights_back():
    live = {"w": torch.tensor([1.0, 2.0])}
    avg = WeightAverage(0.5)
    with avg.shown(live):  # no average yet: nothing changes
        assert torch.equal(live["w"], torch.tensor([1.0, 2.0]))
    avg.update(live)
    live["w"].copy_(torch.tensor([3.0, 6.0]))
    avg.update(live)  # the second update: d = min(0.5, (1 + 2) / (10 + 2)) = 1/4
    expected = torch.tensor([1.0, 2.0]) * 0.25 + torch.tensor([3.0, 6.0]) * 0.75
    with avg.shown(live):
        torch.testing.assert_close(live["w"], expected)
        with avg.shown(live):  # nested: a no-op, and the outer block still restores the live weights
            torch.testing.assert_close(live["w"], expected)
        # a checkpoint saved inside the block still records the live weights for resuming
        assert torch.equal(avg.state(live)["live"]["w"], torch.tensor([3.0, 6.0]))
        with pytest.raises(RuntimeError, match="training step"):
            avg.update(live)
    assert torch.equal(live["w"], torch.tensor([3.0, 6.0]))


def test_bad_decays_and_a_mismatched_state_are_refused():
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(bad)
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(ema=1.0)
    avg = WeightAverage(0.9)
    with pytest.raises(ValueError, match="does not match"):
        avg.restore({"updates": 3, "live": {"other": torch.zeros(2)}}, {"w": torch.zeros(2)})
    avg.update({"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="changed"):  # never a silent restart of the average
        avg.update({"w": torch.zeros(2), "b": torch.zeros(1)})


def test_the_training_loop_updates_the_average_after_every_step():
    data = load_dataset("digits")
    model = build_model("vae", {"hidden": 16, "latent": 2})
    model.configure_training(lr=1e-3, ema=0.99)
    cfg = TrainConfig(dataset="digits", epochs=1, max_steps=7, batch_size=64, device="cpu", ema=0.99)
    train(model, data, cfg)
    assert model.weight_average.updates == 7
    live = {k: v.clone() for k, v in model.averaged_entries().items()}
    with model.averaged_weights():
        shown = {k: v.clone() for k, v in model.averaged_entries().items()}
    assert any(not torch.equal(live[k], shown[k]) for k in live)
    assert all(torch.equal(live[k], v) for k, v in model.averaged_entries().items())


def test_a_worker_saves_the_average_and_resumes_the_live_weights(tmp_path):
    cfg = TrainConfig(dataset="digits", epochs=1, max_steps=10, batch_size=100, log_every=5, device="cpu",
                      n_samples=16, snapshot_every_s=1000.0, live_every_s=1000.0, ema=0.9)
    run = RunStore(tmp_path / "runs").create({"model": "vae", "model_config": {"hidden": 32, "latent": 2},
                                              "train_config": dataclasses.asdict(cfg), "dataset": "digits"})
    assert worker.run_job(run, evaluate="none")["steps"] == 10
    ckpt = load_checkpoint(run.checkpoint_path)
    saved = ckpt.training_state["weight_average"]
    assert saved["updates"] == 10
    # the checkpoint's weights (what pages, evaluations and exports read) are the average, not the live weights
    assert any(not torch.equal(ckpt.model_state[k], saved["live"][k]) for k in saved["live"])
    job = worker.Job(run)
    job.load_data()
    job.build()
    entries = job.model.averaged_entries()
    assert all(torch.equal(entries[k], saved["live"][k]) for k in entries)
    assert all(torch.equal(job.model.weight_average.average[k], ckpt.model_state[k]) for k in entries)
    assert job.model.weight_average.updates == 10
