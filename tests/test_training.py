"""End-to-end: short runs on the offline dataset lower each model's loss; resume continues the step count."""

import dataclasses

import pytest
import torch

from genlib.data import load_dataset
from genlib.models import build_model
from genlib.runs.store import RunStore
from genlib.training import Callbacks, Diverged, Progress, TrainConfig, train
from genlib.jobs.worker import run_job

SETTINGS = {
    "rbm": ({"n_hidden": 64, "sample_steps": 20}, {"lr": 0.1, "batch_size": 64}),
    "vae": ({"hidden": 128, "latent": 4}, {"lr": 1e-3, "batch_size": 64}),
    "gan": ({"preset": "fast"}, {"lr": 2e-4, "batch_size": 64}),
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_short_training_lowers_the_monitored_loss(name, digits):
    torch.manual_seed(0)
    model_cfg, train_cfg = SETTINGS[name]
    model = build_model(name, model_cfg)
    cfg = TrainConfig(dataset="digits", epochs=4, log_every=5, **train_cfg)
    model.configure_training(lr=cfg.lr)
    rows = []
    progress = train(model, digits, cfg, callbacks=Callbacks(on_log=rows.append))
    assert progress.step == 4 * digits.steps_per_epoch(cfg.batch_size)
    first, last = rows[0][model.monitor], sum(r[model.monitor] for r in rows[-3:]) / 3
    assert last < 0.9 * first, (name, first, last)
    assert all(r["images_per_second"] > 0 for r in rows)


def test_control_can_stop_and_resume_continues_the_steps(digits):
    model = build_model("vae", {"hidden": 32, "latent": 2})
    cfg = TrainConfig(dataset="digits", epochs=3, batch_size=100, log_every=1)
    model.configure_training(lr=1e-3)
    p = train(model, digits, cfg, callbacks=Callbacks(control=lambda p: p.step < 7))
    assert p.step == 7
    seen = []
    p = train(model, digits, cfg, progress=p, callbacks=Callbacks(on_log=lambda r: seen.append(r["step"])))
    assert p.step == 3 * 15 and seen[0] == 8 and seen[-1] == 45


def test_nan_loss_raises_diverged(digits):
    model = build_model("vae", {"hidden": 32, "latent": 2})
    model.configure_training(lr=1e-3)
    with torch.no_grad():
        model.enc_mu.weight.fill_(float("nan"))
    with pytest.raises(Diverged, match="Lower the learning rate"):
        train(model, digits, TrainConfig(dataset="digits", epochs=1, batch_size=100, log_every=2))


def test_run_job_writes_a_complete_run_folder_and_resumes(tmp_path):
    store = RunStore(tmp_path)
    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=100, log_every=5, device="cpu", n_samples=16)
    run = store.create({"model": "vae", "model_config": {"hidden": 32, "latent": 2},
                        "train_config": dataclasses.asdict(cfg), "dataset": "digits"})
    summary = run_job(run)
    assert summary["state"] == "finished" and summary["steps"] == 15 and summary["images_per_second"] > 0
    assert run.checkpoint_path.exists() and run.live_png.exists() and len(run.epoch_grids()) == 1
    rows, _ = run.metrics()
    assert rows[-1]["step"] == 15 and "loss" in rows[-1]
    assert run.state()["state"] == "finished"
    info = run.info()
    info["train_config"]["epochs"] = 2
    run.write_info(info)
    summary = run_job(run)
    assert summary["state"] == "finished" and summary["steps"] == 30
    assert len(run.epoch_grids()) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the CI machine)")
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_gpu_steps_never_wait_for_the_host(name, digits):
    """On a GPU the loop reads metrics once per log window: between reads no step synchronises with the host
    (torch.cuda.set_sync_debug_mode('error') raises on any synchronising call: .item(), nonzero, a blocking copy)."""
    device = torch.device("cuda")
    data = load_dataset("digits", device=device)
    model_cfg, train_cfg = SETTINGS[name]
    model = build_model(name, model_cfg).to(device)
    model.configure_training(lr=train_cfg["lr"], precision="bf16" if torch.cuda.is_bf16_supported() else "fp32")
    batches = data.batches(train_cfg["batch_size"], generator=torch.Generator().manual_seed(0))
    from genlib.data import to_unit

    xs = [to_unit(next(batches)) for _ in range(6)]
    model.train_step(xs[0])  # the first step may initialise lazily (cuBLAS handles, optimiser state)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        window = [model.train_step(x) for x in xs[1:]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(v.device.type == "cuda" for m in window for v in m.values())
