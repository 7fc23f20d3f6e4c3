"""AppTest of the latent-space explorers (dashboard.explore.widgets) on tiny untrained models saved as runs.

AppTest reruns the whole script on every interaction (fragments run inline), so these tests check content and
wiring: keyed images and sliders exist, a slider move changes exactly the image it drives, a newer snapshot is
picked up. Fragment-only reruns and browser latency are the Playwright tests' job.
"""

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from genlib.runs.checkpoints import save_checkpoint
from genlib.images import read_png
from genlib.models import build_model
from genlib.runs.store import RunStore

TIMEOUT = 60  # the first run imports torch and plotly
TINY = {"vae": {"hidden": 32, "latent": 4}, "gan": {"preset": "fast"}, "rbm": {"n_hidden": 32, "sample_steps": 20}}
# per explorer tab (only the open tab runs): container keys (without the run suffix) that must each hold one PNG,
# and the slider keys it must show
PANELS = {
    ("vae", "Latent sliders"): (["zimg"], ["z0", "z1", "z2", "z3"]),
    ("vae", "Manifold"): ([], ["mn", "mspan"]),
    ("vae", "Interpolation"): (["interp-ends", "interp-img", "interp-strip"], ["it"]),
    ("vae", "Reconstructions"): (["recon-orig", "recon-img"], ["rn"]),
    ("gan", "The seed's latent points"): (["grid"], ["means", "stds"]),
    ("gan", "Directions"): (["dir-img", "dir-strip"], ["dir0", "dir1", "dir2", "dir3"]),
    ("gan", "Interpolation"): (["slerp-img", "slerp-strip"], ["st"]),
    ("rbm", "Filters"): (["filters"], []),
    ("rbm", "Gibbs chain"): (["chain-img"], ["gframe"]),
    ("rbm", "Clamp hidden units"): (["clamp-base", "clamp-filters", "clamp-img"], ["h0", "h1", "h2", "h3"]),
}


def _app(model_name, run_id):
    from dashboard.explore.panel import render
    from genlib.runs.store import RunStore

    render(model_name, RunStore().get(run_id) if run_id else None)


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLIB_RUNS_DIR", str(tmp_path))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    st.cache_resource.clear()
    st.cache_data.clear()


def _model(name, seed=0, **changes):
    torch.manual_seed(seed)
    model = build_model(name, {**TINY[name], **changes})
    if name == "rbm":
        with torch.no_grad():
            model.W.mul_(100)  # untrained weights are ~0.01: make each hidden unit visible in p(v|h)
    return model


def _save_run(runs_dir, name, model, step=0):
    run = RunStore(runs_dir).create({"model": name, "model_config": model.config_dict(), "dataset": "digits",
                                     "train_config": {"dataset": "digits"}})
    save_checkpoint(run.snapshot_path, model, train_config={"dataset": "digits"}, progress={"step": step})
    return run


def _open(name, run):
    at = AppTest.from_function(_app, args=(name, run.id if run else None), default_timeout=TIMEOUT)
    # the server-side latent and clamp sliders (the in-browser ones, the default, are tests/test_latent_click_manifold's)
    at.session_state["vae-server"] = at.session_state["rbm-server"] = True
    return at.run()


def _tab(at, name, label):
    """Open the explorer tab `label` (the tabs are bound to the URL, so the query parameter picks it) and rerun."""
    at.query_params[f"{name}-tab"] = label
    at.run()
    assert not at.exception, at.exception
    return at


def _png(at, media, container_key):
    """The PNG bytes of the one image inside a keyed container."""
    images = at.get_by_key(container_key).image
    assert len(images) == 1, container_key
    data = media[images[0].value[0]]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", container_key
    return data


def _moved(at, media, slider_key, value, image_key):
    """(bytes before, bytes after) of image_key when slider_key is set to value."""
    before = _png(at, media, image_key)
    at.slider(key=slider_key).set_value(value).run()
    assert not at.exception, at.exception
    return before, _png(at, media, image_key)


# ---- no weights ----

def test_no_run_says_how_to_start():
    at = _open("vae", None)
    assert not at.exception
    assert "No run of this model yet" in at.info[0].value


def test_run_without_weights_says_exploration_opens_with_the_first_snapshot(runs_dir):
    run = RunStore(runs_dir).create({"model": "gan", "dataset": "digits"})
    at = _open("gan", run)
    assert not at.exception
    assert "once the first snapshot is saved" in at.info[0].value
    assert not at.image and not at.slider


# ---- every explorer renders its keyed images and sliders ----

@pytest.mark.parametrize("name", ["vae", "gan", "rbm"])
def test_explorer_renders_keyed_images_and_sliders(runs_dir, media, name):
    run = _save_run(runs_dir, name, _model(name), step=0)
    at = _open(name, run)
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "step 0" in captions and "follows newer snapshots" in captions  # a queued run counts as live
    assert at.toggle(key=f"{name}-follow-{run.id}").value is True
    for (model_name, label), (images, sliders) in PANELS.items():
        if model_name != name:
            continue
        _tab(at, name, label)
        for k in images:
            img = read_png(_png(at, media, f"{name}-{k}-{run.id}"))
            assert img.ndim == 2 and img.shape[1] >= 28
        slider_keys = {s.key for s in at.slider}
        assert {f"{name}-{k}-{run.id}" for k in sliders} <= slider_keys, label
    if name == "vae":
        _tab(at, name, "Latent map")
        assert at.get("plotly_chart"), "the latent map is a plotly chart"


def test_only_the_open_tab_runs(runs_dir, media):
    """Hidden tabs compute nothing (they would rerun every few seconds while a run trains): the Interpolation tab's
    images exist only once that tab is open, and the sliders' image only while its tab is."""
    run = _save_run(runs_dir, "vae", _model("vae"))
    at = _open("vae", run)
    keys = {f"vae-zimg-{run.id}", f"vae-interp-img-{run.id}"}

    def shown():
        found = set()
        for k in keys:
            try:
                at.get_by_key(k)
                found.add(k)
            except KeyError:  # AppTest: no element with that key on the page
                pass
        return found

    assert shown() == {f"vae-zimg-{run.id}"}
    _tab(at, "vae", "Interpolation")
    assert shown() == {f"vae-interp-img-{run.id}"}


# ---- a slider move changes the image it drives (and not the others) ----

def test_vae_latent_slider_changes_the_decoded_image_only(runs_dir, media):
    run = _save_run(runs_dir, "vae", _model("vae"))
    untouched = _tab(_open("vae", run), "vae", "Manifold")
    manifold = untouched.get_by_key(f"vae-manifold-{run.id}").get("plotly_chart")[0].proto.spec  # the image inside
    at = _open("vae", run)  # the default tab: the latent sliders (AppTest cannot switch back to a default tab)
    before, after = _moved(at, media, f"vae-z0-{run.id}", 2.5, f"vae-zimg-{run.id}")
    assert before != after
    _tab(at, "vae", "Manifold")
    assert at.get_by_key(f"vae-manifold-{run.id}").get("plotly_chart")[0].proto.spec == manifold
    _tab(at, "vae", "Interpolation")
    before, after = _moved(at, media, f"vae-it-{run.id}", 0.0, f"vae-interp-img-{run.id}")
    assert before != after


def test_vae_wide_latent_gets_a_dimension_chooser(runs_dir, media):
    run = _save_run(runs_dir, "vae", _model("vae", latent=12))
    at = _open("vae", run)
    chooser = at.multiselect(key=f"vae-dims-{run.id}")
    assert chooser.value == list(range(8))
    assert f"vae-z9-{run.id}" not in {s.key for s in at.slider}
    chooser.set_value([0, 9]).run()
    assert not at.exception
    keys = {s.key for s in at.slider}
    assert f"vae-z9-{run.id}" in keys and f"vae-z1-{run.id}" not in keys
    before, after = _moved(at, media, f"vae-z9-{run.id}", -3.0, f"vae-zimg-{run.id}")
    assert before != after


def test_gan_seed_sliders_seed_and_new_noise_drive_the_grid(runs_dir, media):
    run = _save_run(runs_dir, "gan", _model("gan"))
    at = _open("gan", run)
    grid = f"gan-grid-{run.id}"
    first = _png(at, media, grid)
    at.run()
    assert _png(at, media, grid) == first  # the same seed draws the same noise
    before, after = _moved(at, media, f"gan-means-{run.id}", 5.0, grid)
    assert before != after
    before, after = _moved(at, media, f"gan-stds-{run.id}", 10.0, grid)
    assert before != after
    at.number_input(key=f"gan-seed-{run.id}").set_value(3).run()
    third = _png(at, media, grid)
    assert third != after
    at.button(key=f"gan-newnoise-{run.id}").click().run()
    assert not at.exception
    assert at.number_input(key=f"gan-seed-{run.id}").value != 3
    assert _png(at, media, grid) != third
    _tab(at, "gan", "Directions")
    before, after = _moved(at, media, f"gan-dir0-{run.id}", 4.0, f"gan-dir-img-{run.id}")
    assert before != after
    _tab(at, "gan", "Interpolation")
    before, after = _moved(at, media, f"gan-st-{run.id}", 0.0, f"gan-slerp-img-{run.id}")
    assert before != after


def test_rbm_chain_slider_picks_frames_and_clamps_change_p_v_given_h(runs_dir, media):
    run = _save_run(runs_dir, "rbm", _model("rbm"))
    at = _tab(_open("rbm", run), "rbm", "Gibbs chain")
    assert at.slider(key=f"rbm-gframe-{run.id}").value == 200  # the chain's end
    before, after = _moved(at, media, f"rbm-gframe-{run.id}", 0, f"rbm-chain-img-{run.id}")
    assert before != after  # step 0 shows the random start
    at.select_slider(key=f"rbm-gsteps-{run.id}").set_value(1000).run()
    assert not at.exception
    frame = at.slider(key=f"rbm-gframe-{run.id}")
    assert frame.max == 1000 and frame.step == 5  # 1000 steps, 200 recorded frames
    before, after = _moved(at, media, f"rbm-gframe-{run.id}", 500, f"rbm-chain-img-{run.id}")
    assert before != after
    _tab(at, "rbm", "Clamp hidden units")
    base = _png(at, media, f"rbm-clamp-base-{run.id}")
    h0 = at.slider(key=f"rbm-h0-{run.id}")
    before, after = _moved(at, media, f"rbm-h0-{run.id}", 0.0 if h0.value > 0.5 else 1.0, f"rbm-clamp-img-{run.id}")
    assert before != after
    assert _png(at, media, f"rbm-clamp-base-{run.id}") == base  # the unclamped image stays


# ---- the explorer follows the run's newest weights ----

def test_a_newer_snapshot_is_picked_up(runs_dir, media):
    run = _save_run(runs_dir, "vae", _model("vae", seed=0), step=0)
    at = _open("vae", run)
    before = _png(at, media, f"vae-zimg-{run.id}")
    save_checkpoint(run.snapshot_path, _model("vae", seed=1), train_config={"dataset": "digits"},
                    progress={"step": 500})
    at.run()
    assert not at.exception
    assert "step 500" in " ".join(c.value for c in at.caption)
    assert _png(at, media, f"vae-zimg-{run.id}") != before


def test_a_finished_run_is_explored_without_follow_toggle(runs_dir, media):
    run = _save_run(runs_dir, "gan", _model("gan"), step=40)
    run.write_state(state="finished")
    at = _open("gan", run)
    assert not at.exception
    assert not at.toggle
    captions = " ".join(c.value for c in at.caption)
    assert "step 40" in captions and "finished" in captions and "follows newer" not in captions


def test_missing_dataset_falls_back_to_the_offline_digits(runs_dir, tmp_path_factory):
    from dashboard.explore.widgets import test_data

    empty = tmp_path_factory.mktemp("no-data")
    run = RunStore(runs_dir).create({"model": "vae", "dataset": "mnist",
                                     "train_config": {"dataset": "mnist", "data_root": str(empty)}})
    data, note = test_data(run)
    assert data.name == "digits" and "mnist is not on this machine" in note


# ---- the RBM's persistent chains (PCD) ----

@pytest.mark.usefixtures("no_quality_evaluation")
def test_rbm_page_shows_the_persistent_chains_of_a_pcd_run(runs_dir, media):
    import dataclasses

    from genlib.images import grid, png_bytes
    from genlib.jobs.worker import run_job
    from genlib.models.rbm import PCD_SHOWN
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.training import TrainConfig

    tc = TrainConfig(dataset="digits", epochs=1, batch_size=100, log_every=5, device="cpu")
    run = RunStore(runs_dir).create({"model": "rbm", "model_config": {"n_hidden": 32, "persistent": True},
                                     "train_config": dataclasses.asdict(tc), "dataset": "digits"})
    assert run_job(run)["state"] == "finished"
    saved = (run.path / "pcd_chains.png").read_bytes()
    ckpt = load_checkpoint(run.checkpoint_path, device="cpu")  # the chain as training left it: (batch, n_hidden)
    chain = ckpt.training_state["pcd_chain"]
    assert chain.shape == (100, 32)
    model = model_from_checkpoint(ckpt, device="cpu")
    assert saved == png_bytes(grid(model.decode(chain[:PCD_SHOWN])))  # p(v|h) of the particles, not fresh samples
    at = _tab(_open("rbm", run), "rbm", "Persistent chains")
    img = read_png(_png(at, media, f"rbm-pcd-img-{run.id}"))
    assert img.shape[1] >= read_png(saved).shape[1]
    image_caption = at.get_by_key(f"rbm-pcd-img-{run.id}").image[0].proto.imgs[0].caption
    assert f"{PCD_SHOWN} persistent chains" in image_caption
    assert "Tieleman" in " ".join(c.value for c in at.caption)


def test_rbm_without_pcd_says_it_has_no_persistent_chains(runs_dir, media):
    run = _save_run(runs_dir, "rbm", _model("rbm"))
    at = _tab(_open("rbm", run), "rbm", "Persistent chains")
    assert any("no persistent chains to show" in i.value for i in at.info)
    with pytest.raises(KeyError):
        at.get_by_key(f"rbm-pcd-img-{run.id}")
