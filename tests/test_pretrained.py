"""The shipped pretrained runs: scripts/pretrain.py exports a trained run as a small read-only run folder,
genlib.runs.pretrained installs it once (never over an existing folder), the job manager refuses to resume or delete it,
and a fork of it trains; and the repository's own pretrained/ folder holds every model, small, in float16, with
samples that its weights reproduce."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genlib.models import MODEL_NAMES, build_model
from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
from genlib.runs.pretrained import default_pretrained_dir, install, is_pretrained, shipped
from genlib.runs.store import RunStore
from genlib.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "pretrained"
MAX_TOTAL_BYTES = 25 * 2**20


pytestmark = pytest.mark.usefixtures("no_quality_evaluation")  # see tests/conftest.py


def _load_script():
    spec = importlib.util.spec_from_file_location("genlib_pretrain_script", REPO / "scripts" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny VAE trained on the offline digits by the script's own functions and exported to a pretrained folder."""
    script = _load_script()
    spec = script.PretrainSpec(run_id="pretrained-vae-tiny", model="vae", title="tiny",
                               model_config={"hidden": 32, "latent": 2}, train={"epochs": 2, "batch_size": 50})
    base = tmp_path_factory.mktemp("pretrain")
    run, seconds = script.train_one(spec, base / "work", None, threads=1, epochs=None, dataset="digits")
    row = script.export(run, spec, base / "pretrained", seconds, order=0, threads=1)
    script.write_manifest(base / "pretrained", [row])
    return base / "pretrained", row


def test_export_writes_a_small_float16_run_folder(exported):
    folder, row = exported
    target = folder / "pretrained-vae-tiny"
    info = json.loads((target / "run.json").read_text())
    assert info["pretrained"]["script"] == "scripts/pretrain.py" and info["train_config"]["data_root"] is None
    assert json.loads((target / "state.json").read_text())["state"] == "finished"
    ckpt = load_checkpoint(target / "checkpoints" / "last.safetensors")
    assert ckpt.training_state is None and ckpt.extra["pretrained"] is True
    assert all(v.dtype == torch.float16 for v in ckpt.model_state.values() if v.is_floating_point())
    assert row["half_max_pixel_diff"] <= 2 / 255  # float16 weights decode what the float32 ones did
    assert [p.name for p in sorted((target / "samples").iterdir())] == ["epoch-0001.png", "epoch-0002.png"]
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert manifest["runs"][0]["run_id"] == "pretrained-vae-tiny" and manifest["total_bytes"] == row["bytes"]


def test_an_export_takes_the_specs_sampler_which_training_never_reads(tmp_path):
    """A run trained with one `sample_steps` ships with the spec's: the weights are the same, the checkpoint and
    run.json carry the new value, run.json says what changed, and the last grid (what pages show) is redrawn."""
    script = _load_script()
    trained = script.PretrainSpec(run_id="pretrained-rbm-tiny", model="rbm", title="tiny",
                                  model_config={"n_hidden": 16, "sample_steps": 3, "init_std": 0.5},
                                  train={"epochs": 1})  # large weights: chains of 3 and 7 steps differ
    run, seconds = script.train_one(trained, tmp_path / "work", None, threads=1, epochs=None, dataset="digits")
    shipped = dataclasses.replace(trained, model_config={**trained.model_config, "sample_steps": 7})
    script.export(run, shipped, tmp_path / "pretrained", seconds, order=0, threads=1)
    target = tmp_path / "pretrained" / "pretrained-rbm-tiny"
    info = json.loads((target / "run.json").read_text())
    assert info["model_config"]["sample_steps"] == 7 and info["pretrained"]["resampled"] == {"sample_steps": [3, 7]}
    ckpt = load_checkpoint(target / "checkpoints" / "last.safetensors")
    assert ckpt.model_config["sample_steps"] == 7
    trained_ckpt = load_checkpoint(run.checkpoint_path)
    for k, v in trained_ckpt.model_state.items():  # the weights themselves are untouched (float16 of the same)
        assert torch.allclose(ckpt.model_state[k].float(), v.float(), atol=1e-2)
    last = sorted((target / "samples").iterdir())[-1]
    assert last.read_bytes() == (target / "live.png").read_bytes()
    assert last.read_bytes() != run.epoch_grids()[-1].read_bytes()  # redrawn with 7 steps, not the run's 3


def test_evaluate_export_scores_every_models_samples_the_ebms_too(monkeypatch, tmp_path):
    """A page's FINAL evaluation leaves the EBM's Langevin samples out for their cost; a shipped run is evaluated
    once, offline, with them, so its MANIFEST row and quality panel carry a Fréchet distance."""
    script = _load_script()
    seen = {}

    def fake_evaluation(run, settings, *, data_root=None):
        seen.update(settings=settings, folder=run.path, data_root=data_root)
        return {"error": None, "figures": {"frechet_distance": 113.42461, "class_min_share": 0.0188,
                                           "classifier_accuracy": 0.993, "samples_skipped": "not here"}}

    monkeypatch.setattr("genlib.quality.records.evaluate_saved_run", fake_evaluation)
    folder = tmp_path / "pretrained-ebm"
    folder.mkdir()
    figures = script.evaluate_export(folder, "DATA")
    settings = seen["settings"]
    assert settings.kind == "final" and settings.n_samples == 5_000
    assert all(settings.scores_samples(m) for m in ("ebm", "rbm", "vae", "gan"))
    assert seen["folder"] == folder and seen["data_root"] == "DATA"
    assert figures == {"frechet_distance": 113.4246, "class_min_share": 0.0188}  # the MANIFEST's figures only


def test_install_copies_once_and_never_overwrites(exported, tmp_path):
    folder, _ = exported
    store = RunStore(tmp_path / "runs")
    assert install(store, folder) == ["pretrained-vae-tiny"]
    run = store.get("pretrained-vae-tiny")
    assert is_pretrained(run) and run.effective_state() == "finished"
    info = run.info()
    info["title"] = "renamed by a teacher"
    run.write_info(info)
    assert install(store, folder) == []  # already there: left as it is
    assert store.get("pretrained-vae-tiny").info()["title"] == "renamed by a teacher"
    assert [r.id for r in store.list()] == ["pretrained-vae-tiny"]  # no temporary folder is listed


def test_pretrained_runs_are_read_only_but_can_be_forked(exported, tmp_path):
    from genlib.jobs.manager import JobManager

    folder, _ = exported
    store = RunStore(tmp_path / "runs")
    install(store, folder)
    mgr = JobManager(store, backend="thread", max_jobs=1)
    try:
        with pytest.raises(ValueError, match="kept read-only"):
            mgr.delete("pretrained-vae-tiny")
        with pytest.raises(ValueError, match="kept read-only"):
            mgr.resume("pretrained-vae-tiny", epochs=5)
        fork_id = mgr.fork("pretrained-vae-tiny", {"beta": 2.0, "epochs": 3})
        status = mgr.wait(fork_id, timeout=120)
        assert status.state == "finished" and status.step == 90
        fork = store.get(fork_id)
        assert not is_pretrained(fork) and fork.info()["forked_from"]["run_id"] == "pretrained-vae-tiny"
        assert load_checkpoint(fork.checkpoint_path).training_state["beta"] == 2.0
        assert store.get("pretrained-vae-tiny").state()["step"] == 60  # the original is untouched
    finally:
        mgr.close(stop_jobs=True)


def test_the_pretrained_folder_can_be_switched_off(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLIB_PRETRAINED_DIR", "none")
    assert default_pretrained_dir() is None and shipped() == []
    assert install(RunStore(tmp_path)) == []
    monkeypatch.delenv("GENLIB_PRETRAINED_DIR")
    assert default_pretrained_dir() == SHIPPED


# ---- what the repository ships ----

def test_the_repository_ships_every_model_small_and_in_float16():
    folders = {p.name: p for p in shipped(SHIPPED)}
    expected = {"pretrained-rbm", "pretrained-vae-latent2", "pretrained-vae", "pretrained-gan"}
    assert expected <= set(folders), sorted(folders)
    if "ebm" in MODEL_NAMES and "pretrained-ebm" not in folders:
        pytest.fail("genlib has an EBM but pretrained/ has no pretrained-ebm: run scripts/pretrain.py --only "
                    "pretrained-ebm")
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total < MAX_TOTAL_BYTES, f"pretrained/ is {total / 2**20:.1f} MB"
    for name, folder in folders.items():
        info = json.loads((folder / "run.json").read_text())
        ckpt = load_checkpoint(folder / "checkpoints" / "last.safetensors")
        assert info["pretrained"] and info["dataset"] == "mnist" and ckpt.model_name == info["model"], name
        assert all(v.dtype == torch.float16 for v in ckpt.model_state.values() if v.is_floating_point()), name
        assert json.loads((folder / "state.json").read_text())["state"] == "finished", name
    assert load_checkpoint(folders["pretrained-vae-latent2"] / "checkpoints" / "last.safetensors"
                           ).model_config["latent"] == 2


def test_each_shipped_run_is_what_its_spec_would_train_again():
    """scripts/pretrain.py's spec of each shipped run has the run's model settings and step, so a retrain makes the
    same model (a recipe that changes after a run was adopted must not silently change what a retrain makes)."""
    script = _load_script()
    for spec in script.specs(MODEL_NAMES):
        info = json.loads((SHIPPED / spec.run_id / "run.json").read_text())
        ours = json.loads(json.dumps(build_model(spec.model, spec.model_config).config_dict()))  # as run.json has it
        assert info["model_config"] == ours, (spec.run_id, info["model_config"], ours)
        for key in ("lr", "batch_size", "ema"):  # a run.json from before a field existed had its default
            assert info["train_config"].get(key, getattr(TrainConfig(), key)) == spec.train[key], (spec.run_id, key)


@pytest.mark.parametrize("name", ["pretrained-vae-latent2", "pretrained-vae", "pretrained-gan"])
def test_shipped_weights_reproduce_their_shipped_samples(name):
    """live.png was drawn by the float16 weights from the fixed noise: loading them draws it again."""
    from genlib.images import grid, read_png
    from genlib.training import TrainConfig

    folder = SHIPPED / name
    ckpt = load_checkpoint(folder / "checkpoints" / "last.safetensors")
    model = model_from_checkpoint(ckpt).eval()
    cfg = TrainConfig(**json.loads((folder / "run.json").read_text())["train_config"])
    with torch.no_grad():
        images = model.sample(cfg.n_samples, generator=torch.Generator().manual_seed(cfg.sample_seed))
    drawn = grid(images).astype(int)
    stored = read_png((folder / "live.png").read_bytes()).astype(int)
    assert drawn.shape == stored.shape
    assert np.abs(drawn - stored).max() <= 2  # the same picture, up to a rounding of threads' float sums
    assert stored.std() > 20  # digits, not a blank or grey page
