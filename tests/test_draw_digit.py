"""AppTest of the classroom panels: your own digit (VAE, RBM, EBM), the in-browser decoder's payload (smooth
dragging) and the latent map's click-to-decode logic.

AppTest cannot draw on a canvas, run a component's JavaScript or click a Plotly chart, so the drawing is injected
where the canvas's output is read (dashboard.explore.draw_digit.read_canvas) and the click's selection state is fed to the
function that interprets it; the real canvas-free browser paths are tests/browser/test_browser_decoder.py's.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from genlib.runs.checkpoints import save_checkpoint
from genlib.digit_input import prepare_digit
from genlib.images import read_png
from genlib.models import build_model
from genlib.runs.store import RunStore

TIMEOUT = 60
TINY = {"vae": {"hidden": 32, "latent": 4}, "rbm": {"n_hidden": 32}}


def _app(model_name, run_id):
    from dashboard.explore.panel import render
    from genlib.runs.store import RunStore

    render(model_name, RunStore().get(run_id))


@pytest.fixture(autouse=True)
def runs_dir(explorer_runs_dir):
    return explorer_runs_dir


def _seven() -> np.ndarray:
    """A thick white '7' on a black 280 x 280 RGBA canvas, as the drawing component returns it."""
    c = np.zeros((280, 280, 4), dtype=np.uint8)
    c[..., 3] = 255
    c[60:76, 80:180, :3] = 255
    for r in range(76, 220):
        x = 180 - (r - 76) * 60 // 144
        c[r, x - 8:x + 8, :3] = 255
    return c


@pytest.fixture
def drawing(monkeypatch):
    """Inject a drawing where the page reads the canvas; returns the picture."""
    from dashboard.explore import draw_digit

    picture = _seven()
    monkeypatch.setattr(draw_digit, "read_canvas", lambda canvas_key: picture)
    return picture


def _model(name, seed=0, **changes):
    torch.manual_seed(seed)
    model = build_model(name, {**TINY.get(name, {}), **changes})
    if name == "rbm":
        with torch.no_grad():
            model.W.mul_(100)
    return model.eval()


def _save_run(runs_dir, name, model):
    run = RunStore(runs_dir).create({"model": name, "model_config": model.config_dict(), "dataset": "digits",
                                     "train_config": {"dataset": "digits"}})
    save_checkpoint(run.checkpoint_path, model, train_config={"dataset": "digits"}, progress={"step": 7})
    run.write_state(state="finished")
    return run


def _open(name, run, tab="Your digit"):
    at = AppTest.from_function(_app, args=(name, run.id), default_timeout=TIMEOUT)
    at.query_params[f"{name}-tab"] = tab  # only the open tab runs (dashboard.explore.widgets.tabbed_panels)
    at.run()
    assert not at.exception, at.exception
    return at


def _png(at, media, container_key):
    images = at.get_by_key(container_key).image
    assert len(images) == 1, container_key
    return media[images[0].value[0]]


def _tile(png: bytes, n_frames: int, i: int) -> np.ndarray:
    """Frame i (28 x 28 uint8) of a strip of n_frames 28x28 images with 2-pixel padding, upscaled by an integer."""
    img = read_png(png)
    factor = img.shape[0] // 32  # one row: 28 + 2 * 2 padding
    small = img[::factor, ::factor]
    return small[2:30, 2 + 30 * i:30 + 30 * i]


# ---- your digit ----

def test_vae_digit_tab_asks_for_a_drawing_when_there_is_none(runs_dir):
    run = _save_run(runs_dir, "vae", _model("vae"))
    at = _open("vae", run)
    assert any("Draw a digit in the box" in i.value for i in at.info)


@pytest.mark.parametrize("latent", [2, 4])
def test_vae_encodes_the_drawing_shows_its_reconstruction_and_its_place(runs_dir, media, drawing, latent):
    model = _model("vae", latent=latent)
    run = _save_run(runs_dir, "vae", model)
    at = _open("vae", run)
    x = prepare_digit(drawing)
    with torch.inference_mode():
        mu, _ = model.encode(x)
        recon = model.decode(mu)
    seen = read_png(_png(at, media, f"vae-draw-input-{run.id}"))
    assert np.abs(seen[::5, ::5].astype(int) - np.round(x[0, 0].numpy() * 255)).max() <= 1
    shown = read_png(_png(at, media, f"vae-draw-recon-{run.id}"))
    assert np.abs(shown[::5, ::5].astype(int) - np.round(recon[0, 0].numpy() * 255)).max() <= 1
    figure = json.loads(at.get_by_key(f"vae-draw-map-{run.id}").get("plotly_chart")[0].proto.spec)
    star = [t for t in figure["data"] if t.get("name") == "your digit"]
    assert len(star) == 1
    if latent == 2:  # the plane itself: the star is at mu
        assert star[0]["x"][0] == pytest.approx(float(mu[0, 0]), abs=1e-5)
        assert star[0]["y"][0] == pytest.approx(float(mu[0, 1]), abs=1e-5)
    else:  # PCA of the test codes with the drawing's: the star lies within the cloud's scale
        assert figure["layout"]["xaxis"]["title"]["text"].startswith("PC1")
    assert any("mean code for your digit" in c.value for c in at.caption)


def test_rbm_cleans_the_drawing_by_gibbs_steps(runs_dir, media, drawing):
    model = _model("rbm")
    run = _save_run(runs_dir, "rbm", model)
    at = _open("rbm", run)
    png = _png(at, media, f"rbm-draw-chain-{run.id}")
    first = _tile(png, 11, 0)
    expected = np.round(prepare_digit(drawing)[0, 0].numpy() * 255)
    assert np.abs(first.astype(int) - expected).max() <= 1  # the chain starts at the drawing
    last = _tile(png, 11, 10)
    assert np.abs(last.astype(int) - expected).mean() > 5  # and the RBM has changed it
    at.select_slider(key=f"rbm-draw-steps-{run.id}").set_value(50).run()
    assert not at.exception
    assert _png(at, media, f"rbm-draw-chain-{run.id}") != png
    assert "every 5 Gibbs steps" in at.get_by_key(f"rbm-draw-chain-{run.id}").image[0].captions[0]


def test_ebm_pulls_the_drawing_downhill(runs_dir, media, drawing):
    model = _model("ebm", channels=(4, 4, 8, 8), hidden=8)
    run = _save_run(runs_dir, "ebm", model)
    at = _open("ebm", run)  # the EBM explorer's "Your digit" tab
    png = _png(at, media, f"ebm-draw-chain-{run.id}")
    assert read_png(png).shape[1] > 10 * 28
    pattern = r"Energy along the way: (-?\d+\.\d+) \(your digit\) -> (-?\d+\.\d+)"
    found = [re.search(pattern, c.value) for c in at.caption]
    found = [f for f in found if f]
    assert found, [c.value for c in at.caption]
    first, last = float(found[0].group(1)), float(found[0].group(2))
    assert last < first, (first, last)  # downhill


# ---- smooth dragging: what the page receives ----

def _decoder_data(at, uid):
    found = [e for e in at.get("bidi_component") if json.loads(e.proto.json or "{}").get("uid") == uid]
    assert len(found) == 1, uid
    return json.loads(found[0].proto.json)


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
def test_vae_decoder_payload_decodes_like_genlib_and_is_sent_once(runs_dir, decoder):
    from dashboard.explore.browser_decoder import decode_payload

    model = _model("vae", decoder=decoder)
    run = _save_run(runs_dir, "vae", model)
    at = _open("vae", run, "Latent sliders")
    data = _decoder_data(at, f"vae-smooth-{run.id}")
    assert [s["label"] for s in data["sliders"]] == ["z0", "z1", "z2", "z3"] and data["base"] == [0.0] * 4
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    ref = model.decode(z).reshape(5, -1).double().numpy()
    for i in range(5):
        np.testing.assert_allclose(decode_payload(data["weights"], z[i].numpy()), ref[i], atol=1e-6)
    at.run()  # a rerun of the same weights: the page has them already
    assert _decoder_data(at, f"vae-smooth-{run.id}")["weights"] is None


def test_rbm_payload_is_p_v_given_h(runs_dir):
    from dashboard.explore.browser_decoder import decode_payload

    model = _model("rbm")
    run = _save_run(runs_dir, "rbm", model)
    at = _open("rbm", run, "Clamp hidden units")
    data = _decoder_data(at, f"rbm-smooth-{run.id}")
    assert [s["index"] for s in data["sliders"]] == list(range(8))
    h = torch.tensor(data["base"], dtype=torch.float32)
    with torch.no_grad():
        ref = model.p_v_given_h(h[None])[0].double().numpy()
    np.testing.assert_allclose(decode_payload(data["weights"], h.numpy()), ref, atol=1e-6)


def test_the_page_asking_again_gets_the_weights_again(runs_dir):
    model = _model("vae")
    run = _save_run(runs_dir, "vae", model)
    at = _open("vae", run, "Latent sliders")
    uid = f"vae-smooth-{run.id}"
    at.run()
    assert _decoder_data(at, uid)["weights"] is None
    del at.session_state[f"{uid}--sent-version"]  # what the page's "need" trigger does (_forget_sent)
    at.run()
    assert _decoder_data(at, uid)["weights"] is not None


# ---- click the latent map ----

def test_a_click_picks_a_test_code_or_a_point_of_the_plane():
    from dashboard.explore.latent_click import clicked_code, map_figure

    means = np.array([[0.1, 0.2], [-1.0, 0.5], [2.0, -2.0]], dtype=np.float32)
    z, index = clicked_code({"points": [{"x": -1.0, "y": 0.5, "customdata": 1}]}, means)
    assert index == 1 and z.tolist() == pytest.approx([-1.0, 0.5])
    z, index = clicked_code({"points": [{"x": 0.25, "y": -0.75, "customdata": -1}]}, means)
    assert index is None and z.tolist() == pytest.approx([0.25, -0.75])
    assert clicked_code({"points": []}, means) is None and clicked_code(None, means) is None
    wide = np.zeros((3, 8), dtype=np.float32)  # PCA map: only dots decode (the plane is not the latent space)
    assert clicked_code({"points": [{"x": 0.3, "y": 0.1, "customdata": -1}]}, wide) is None
    fig = map_figure(means, np.array([0, 1, 1]), tuple("0123456789"), ("z0", "z1"), latent_plane=True)
    grid = fig.data[-1]
    assert grid.name == "click to decode" and len(grid.x) == 50 * 50
    assert min(grid.x) < -1.0 and max(grid.x) > 2.0 and min(grid.y) < -2.0 and max(grid.y) > 0.5
    assert [list(t.customdata) for t in fig.data[:-1]] == [[0], [1, 2]]
    assert len(map_figure(means, np.array([0, 1, 1]), tuple("0123456789"), ("PC1", "PC2"), False).data) == 2


def test_latent_map_is_clickable(runs_dir):
    run = _save_run(runs_dir, "vae", _model("vae", latent=2))
    at = _open("vae", run, "Latent map")
    chart = at.get_by_key(f"vae-map-{run.id}")
    assert chart.proto.selection_mode, "on_select must be on"
    assert any("Click a dot or anywhere in the plane" in c.value for c in at.caption)
