"""AppTest of the EBM page and its explorer (dashboard.explore.ebm) on tiny EBM and RBM runs saved as run folders:
the page and its form render, the chain viewer prints the true energy under each image, its step slider scrubs
the chain (step 0 is the start), the replay grid shows, and the RBM tab runs Langevin and Gibbs on one start."""

from __future__ import annotations

import re

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from conftest import APP
from genlib.runs.checkpoints import save_checkpoint
from genlib.data import load_dataset, to_unit
from genlib.images import grid, png_bytes, read_png
from genlib.models import build_model
from genlib.runs.store import RunStore

TIMEOUT = 60
TINY = {"channels": (4, 4, 8, 8), "hidden": 8, "langevin_steps": 3, "buffer_size": 16, "sample_steps": 3}


def _app(run_id):
    from dashboard.explore.panel import render
    from genlib.runs.store import RunStore

    render("ebm", RunStore().get(run_id) if run_id else None)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLIB_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("GENLIB_JOB_BACKEND", "thread")  # the RBM tab lists runs through the JobManager
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    st.cache_resource.clear()
    st.cache_data.clear()


def _save_run(runs_dir, name, model, step=0):
    run = RunStore(runs_dir).create({"model": name, "model_config": model.config_dict(), "dataset": "digits",
                                     "train_config": {"dataset": "digits"}})
    save_checkpoint(run.snapshot_path, model, train_config={"dataset": "digits"}, progress={"step": step})
    run.write_state(state="finished", step=step)
    return run


def _ebm(seed=0):
    torch.manual_seed(seed)
    return build_model("ebm", TINY).eval()


def _images(at, container_key, media):
    """(list of 28x28 uint8 arrays, list of captions) of the image element in a keyed container."""
    els = at.get_by_key(container_key).image
    assert len(els) == 1, container_key
    proto = els[0].proto
    arrays = [read_png(media[img.url]) for img in proto.imgs]
    return [a[::a.shape[0] // 28, ::a.shape[1] // 28] for a in arrays], [img.caption for img in proto.imgs]


def test_page_renders_with_title_form_and_explanations(dashboard_env):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page("app_pages/ebm.py").run()
    assert not at.exception, at.exception
    assert any("Energy-based model (EBM)" in t.value for t in at.title)
    text = " ".join(m.value for m in at.markdown)
    assert "Langevin" in text and "low energy means likely" in text and "replay buffer" in text
    # the form offers the EBM's own fields with their defaults, and the seed defaults for training
    assert at.number_input(key="ebm-form-langevin_steps").value == 20
    assert at.number_input(key="ebm-form-step_size").value == pytest.approx(10.0)
    assert at.number_input(key="ebm-form-lr").value == pytest.approx(1e-4)
    assert "No run of this model yet" in " ".join(i.value for i in at.info)


def test_chain_viewer_prints_each_images_energy_and_scrubs(runs_dir, media):
    model = _ebm()
    run = _save_run(runs_dir, "ebm", model, step=7)
    at = AppTest.from_function(_app, args=(run.id,), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert at.subheader[0].value == "Exploring the energy landscape"
    chain = f"ebm-chain-img-{run.id}"
    frames, captions = _images(at, chain, media)
    assert len(frames) == 4 and all(re.fullmatch(r"E = -?\d+\.\d{3}", c) for c in captions), captions
    # the printed energies are the model's energies of the shown images (up to the PNG's 8-bit rounding)
    shown = torch.tensor(np.stack(frames), dtype=torch.float32)[:, None] / 255
    with torch.no_grad():
        energies = model.energy(shown)
    printed = torch.tensor([float(c.split("= ")[1]) for c in captions])
    assert torch.allclose(printed, energies, atol=0.01), (printed, energies)
    # step 0 of chains started from test images is those test images
    at.radio(key=f"ebm-lstart-{run.id}").set_value("test").run()
    at.slider(key=f"ebm-lframe-{run.id}").set_value(0).run()
    assert not at.exception, at.exception
    frames, _ = _images(at, chain, media)
    digits = load_dataset("digits")
    expected = (to_unit(digits.x_test[:4])[:, 0] * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(np.stack(frames), expected)
    # the knobs exist, with the model's sampler settings as defaults
    assert at.slider(key=f"ebm-llr-{run.id}").value == pytest.approx(model.config.step_size)
    assert at.slider(key=f"ebm-lnoise-{run.id}").value == pytest.approx(model.config.noise)
    assert at.slider(key=f"ebm-lsteps-{run.id}").value == 500
    assert len(at.get("plotly_chart")) >= 1


def test_replay_tab_shows_the_workers_grid(runs_dir, media):
    model = _ebm()
    run = _save_run(runs_dir, "ebm", model)
    at = AppTest.from_function(_app, args=(run.id,), default_timeout=TIMEOUT)
    at.query_params["ebm-tab"] = "Replay buffer"  # only the open tab runs (dashboard.explore.widgets.tabbed_panels)
    at.run()
    assert "replay buffer's grid appears" in " ".join(i.value for i in at.info)
    (run.path / "replay.png").write_bytes(png_bytes(grid(torch.rand(16, 1, 28, 28))))
    at.run()
    assert not at.exception
    assert at.get_by_key(f"ebm-replay-img-{run.id}").image


def test_rbm_tab_runs_langevin_and_gibbs_from_one_start(runs_dir, media):
    run = _save_run(runs_dir, "ebm", _ebm())
    torch.manual_seed(0)
    rbm = build_model("rbm", {"n_hidden": 16})
    with torch.no_grad():
        rbm.W.mul_(100)
    rbm_run = _save_run(runs_dir, "rbm", rbm)
    at = AppTest.from_function(_app, args=(run.id,), default_timeout=TIMEOUT)
    at.query_params["ebm-tab"] = "An RBM as an EBM"
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key=f"ebm-rbm-run-{run.id}").set_value(rbm_run.id).run()  # (a shipped RBM may be listed too)
    at.radio(key=f"ebm-rstart-{run.id}").set_value("test").run()
    at.slider(key=f"ebm-rframe-{run.id}").set_value(0).run()
    langevin, f_l = _images(at, f"ebm-rbm-langevin-{run.id}", media)
    gibbs, f_g = _images(at, f"ebm-rbm-gibbs-{run.id}", media)
    assert len(langevin) == len(gibbs) == 4
    assert all(re.fullmatch(r"F = -?\d+\.\d{3}", c) for c in f_l + f_g)
    assert np.array_equal(np.stack(langevin), np.stack(gibbs))  # both chains start from the same binary images
    assert f_l == f_g
    at.slider(key=f"ebm-rframe-{run.id}").set_value(500).run()
    langevin, f_l = _images(at, f"ebm-rbm-langevin-{run.id}", media)
    gibbs, f_g = _images(at, f"ebm-rbm-gibbs-{run.id}", media)
    assert not np.array_equal(np.stack(langevin), np.stack(gibbs))
