"""AppTest of the clickable manifold and of the latent sliders' modes: a click on a manifold tile decodes that tile's
code beside the grid (and can move the latent sliders there); the sliders decode in the browser by default, with
Streamlit sliders as a fallback, and both keep one code per run (in the session and in the page's link).

AppTest cannot click a Plotly chart, so a click is fed in as the chart's selection state (what Streamlit stores for a
click); the real click is tests/browser/test_browser_decoder.py's
(test_click_on_a_manifold_tile_decodes_its_code).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from genlib.runs.checkpoints import save_checkpoint
from genlib.images import read_png
from genlib.latent import manifold_grid, manifold_values
from genlib.models import build_model
from genlib.runs.store import RunStore

TIMEOUT = 90


def _app(model_name, run_id):
    from dashboard.explore.panel import render
    from genlib.runs.store import RunStore

    render(model_name, RunStore().get(run_id))


@pytest.fixture(autouse=True)
def runs_dir(explorer_runs_dir):
    return explorer_runs_dir


def _vae_run(runs_dir, latent=2):
    torch.manual_seed(0)
    model = build_model("vae", {"hidden": 32, "latent": latent}).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(4)  # untrained decoders give near-uniform grey: make codes visibly different
    run = RunStore(runs_dir).create({"model": "vae", "model_config": model.config_dict(), "dataset": "digits",
                                     "train_config": {"dataset": "digits"}})
    save_checkpoint(run.checkpoint_path, model, train_config={"dataset": "digits"}, progress={"step": 7})
    run.write_state(state="finished")
    return run, model


def _open(run, model_name="vae", **params):
    at = AppTest.from_function(_app, args=(model_name, run.id), default_timeout=TIMEOUT)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _shown(at, media, container_key) -> np.ndarray:
    images = at.get_by_key(container_key).image
    assert len(images) == 1, container_key
    return read_png(media[images[0].value[0]])


def _decoded(model, z) -> np.ndarray:
    from genlib.images import to_uint8

    with torch.inference_mode():
        return to_uint8(model.decode(torch.tensor([z], dtype=torch.float32)))[0]


# ---- the figure ----

def test_click_targets_sit_on_the_tiles_of_the_manifold_image():
    from dashboard.explore.latent_click import clicked_tile, manifold_figure, tile_centres
    from genlib.images import grid

    n = 5
    values = manifold_values(n, 2.0).numpy()
    tiles = torch.zeros(n * n, 1, 28, 28)
    png = b"\x89PNG fake"  # the figure only embeds the bytes
    fig = manifold_figure(png, values, ("z0", "z1"))
    targets = fig.data[0]
    assert len(targets.x) == n * n and list(targets.customdata) == list(range(n * n))
    # where the layout image puts each tile: pixel column of tile c's centre in genlib.images.grid's layout, mapped
    # through the image's placement (x, sizex), must be the click target's x (and likewise for rows and y)
    pixels = grid(tiles, nrow=n)  # (n * 30 + 2) square
    image = fig.layout.images[0]
    assert image.source.startswith("data:image/png;base64,")
    x, y = tile_centres(n)
    for index in (0, 3, n * n - 1):
        r, c = divmod(index, n)
        px = 2 + c * 30 + 14  # tile centre in source pixels (pad 2, 28-pixel tiles)
        py = 2 + r * 30 + 14
        assert image.x + px / pixels.shape[1] * image.sizex == pytest.approx(x[index])
        assert image.y - py / pixels.shape[0] * image.sizey == pytest.approx(y[index])
        assert targets.x[index] == x[index] and targets.y[index] == y[index]
    # the hover text of a tile names its code: column c -> values[c], row r -> values[n - 1 - r] (top row largest)
    z = manifold_grid(2, 0, 1, n, 2.0, quantiles=False)
    assert targets.text[7] == f"z = ({float(z[7, 0]):.2f}, {float(z[7, 1]):.2f})"
    assert fig.layout.hoverdistance == -1 and fig.layout.clickmode == "event+select"
    # a click picks a tile; stale or empty selections pick none
    assert clicked_tile({"points": [{"customdata": 7, "x": 2.5, "y": 3.5}]}, n) == 7
    assert clicked_tile({"points": [{"customdata": [7]}]}, n) == 7
    assert clicked_tile({"points": [{"customdata": 99}]}, n) is None
    assert clicked_tile({"points": []}, n) is None and clicked_tile(None, n) is None


# ---- the page ----

def _manifold_chart_key(run, i=0, j=1, n=12, span=2.0, quantiles=True):
    return f"vae-mclick-{i}-{j}-{n}-{span}-{int(quantiles)}-{run.id}"


def test_a_click_on_a_manifold_tile_decodes_its_code(runs_dir, media):
    run, model = _vae_run(runs_dir)
    at = _open(run, **{"vae-tab": "Manifold"})  # only the open tab runs
    chart_key = _manifold_chart_key(run)
    chart = at.get_by_key(chart_key)
    assert chart.proto.selection_mode, "on_select must be on"
    figure = json.loads(chart.proto.spec)
    assert figure["layout"]["images"][0]["source"].startswith("data:image/png")
    assert any("Click a tile" in c.value for c in at.caption)
    tile = 5 * 12 + 9  # row 5, column 9
    at.session_state[chart_key] = {"selection": {"points": [{"customdata": tile, "x": 9.5, "y": 6.5}]}}
    at.run()
    assert not at.exception, at.exception
    z = manifold_grid(2, 0, 1, 12, 2.0, quantiles=True)[tile]
    z = [round(float(v), 2) for v in z]
    shown = _shown(at, media, f"vae-manifold-img-{run.id}")
    factor = shown.shape[1] // 28
    assert np.abs(shown[::factor, ::factor].astype(int) - _decoded(model, z).astype(int)).max() <= 1
    caption = at.get_by_key(f"vae-manifold-img-{run.id}").image[0].captions[0]
    assert f"z0 = {z[0]:.2f}" in caption and f"z1 = {z[1]:.2f}" in caption and "row, column" in caption
    # another tile decodes another code
    at.session_state[chart_key] = {"selection": {"points": [{"customdata": 0, "x": 0.5, "y": 11.5}]}}
    at.run()
    other = _shown(at, media, f"vae-manifold-img-{run.id}")
    assert not np.array_equal(other, shown)
    # and the button moves the latent sliders (and the link) to the clicked code
    at.button(key=f"vae-mto-sliders-{run.id}").click().run()
    assert not at.exception, at.exception
    z0 = [round(float(v), 2) for v in manifold_grid(2, 0, 1, 12, 2.0, quantiles=True)[0]]
    assert at.session_state[f"vae-code-{run.id}"] == z0
    link = at.query_params[f"vae-z0-{run.id}"]
    assert float(link if isinstance(link, str) else link[0]) == z0[0]


def test_latent_sliders_decode_in_the_browser_by_default_and_on_the_server_as_a_fallback(runs_dir, media):
    run, model = _vae_run(runs_dir)
    at = _open(run, **{f"vae-z0-{run.id}": "1.25"})  # a shared link's code
    # the default: the in-browser decoder starting at the link's code, no Streamlit latent sliders
    assert f"vae-z0-{run.id}" not in {s.key for s in at.slider}
    found = [e for e in at.get("bidi_component")
             if json.loads(e.proto.json or "{}").get("uid") == f"vae-smooth-{run.id}"]
    assert len(found) == 1
    data = json.loads(found[0].proto.json)
    assert at.session_state[f"vae-code-{run.id}"] == [1.25, 0.0]
    assert data["sliders"][0]["value"] == 1.25 and data["base"] == [1.25, 0.0]
    # the fallback: Streamlit sliders at the same code, decoded on the server
    at.toggle(key="vae-server").set_value(True).run()
    assert not at.exception, at.exception
    assert at.slider(key=f"vae-z0-{run.id}").value == 1.25
    shown = _shown(at, media, f"vae-zimg-{run.id}")
    factor = shown.shape[1] // 28
    assert np.abs(shown[::factor, ::factor].astype(int) - _decoded(model, [1.25, 0.0]).astype(int)).max() <= 1
    # moving a server slider moves the shared code, which the in-browser sliders start from when switched back
    at.slider(key=f"vae-z1-{run.id}").set_value(-2.0).run()
    assert at.session_state[f"vae-code-{run.id}"] == [1.25, -2.0]
    at.toggle(key="vae-server").set_value(False).run()
    assert not at.exception, at.exception
    assert f"vae-z1-{run.id}" not in {s.key for s in at.slider}
    assert at.session_state[f"vae-code-{run.id}"] == [1.25, -2.0]
    # "All to 0" resets the code and leaves the link without slider parameters
    at.button(key=f"vae-zero-{run.id}").click().run()
    assert at.session_state[f"vae-code-{run.id}"] == [0.0, 0.0]
    assert f"vae-z0-{run.id}" not in at.query_params


def _finished_rbm_run(runs_dir):
    """A finished 32-hidden-unit RBM run on digits (untrained weights, seed 0) in the runs folder."""
    torch.manual_seed(0)
    model = build_model("rbm", {"n_hidden": 32})
    run = RunStore(runs_dir).create({"model": "rbm", "model_config": model.config_dict(), "dataset": "digits",
                                     "train_config": {"dataset": "digits"}})
    save_checkpoint(run.checkpoint_path, model, train_config={"dataset": "digits"}, progress={"step": 7})
    run.write_state(state="finished")
    return run


def test_rbm_clamp_sliders_decode_in_the_browser_by_default(runs_dir):
    run = _finished_rbm_run(runs_dir)
    at = _open(run, "rbm", **{"rbm-tab": "Clamp hidden units"})
    def decoders():
        return [json.loads(e.proto.json or "{}").get("uid") for e in at.get("bidi_component")]

    assert f"rbm-smooth-{run.id}" in decoders()  # the in-browser decoder is the clamp tab's default
    assert f"rbm-h0-{run.id}" not in {s.key for s in at.slider}
    at.toggle(key="rbm-server").set_value(True).run()
    assert not at.exception, at.exception
    assert f"rbm-h0-{run.id}" in {s.key for s in at.slider}
    assert f"rbm-smooth-{run.id}" not in decoders()


def test_rbm_in_browser_clamp_sliders_start_from_the_link(runs_dir):
    run = _finished_rbm_run(runs_dir)
    at = _open(run, "rbm", **{"rbm-tab": "Clamp hidden units", f"rbm-sh1-{run.id}": "0.9",
                              f"rbm-sh2-{run.id}": "oops", f"rbm-sh3-{run.id}": "nan"})  # malformed: p(h|v)
    found = [json.loads(e.proto.json or "{}") for e in at.get("bidi_component")]
    data = next(d for d in found if d.get("uid") == f"rbm-smooth-{run.id}")
    by_unit = {s["index"]: s["value"] for s in data["sliders"]}
    assert by_unit[1] == 0.9 and data["base"][1] == 0.9  # the page starts there, and decodes from there
    for unit in (2, 3):  # the malformed values are ignored: those sliders start at their p(h|v), like the rest
        assert 0.0 <= by_unit[unit] <= 1.0 and by_unit[unit] == pytest.approx(data["base"][unit], abs=0.005)


def test_the_in_browser_decoder_tells_the_page_which_release_it_took(runs_dir):
    """Each run sends `ack` (the last numbered release this session took) and `session` (the same on every run of a
    session, another for a new one), so the page can tell a stale run from a restarted server."""
    from dashboard.explore.browser_decoder import _release

    run = _finished_rbm_run(runs_dir)

    def data(at):
        found = [json.loads(e.proto.json or "{}") for e in at.get("bidi_component")]
        return next(d for d in found if d.get("uid") == f"rbm-smooth-{run.id}")

    at = _open(run, "rbm", **{"rbm-tab": "Clamp hidden units"})
    first = data(at)
    at.run()
    again = data(at)
    other = data(_open(run, "rbm", **{"rbm-tab": "Clamp hidden units"}))
    assert first["ack"] == again["ack"] == 0  # nothing released yet
    assert first["session"] == again["session"] != other["session"] and len(first["session"]) == 16
    assert _release({"values": [0.5, 1], "seq": 3}) == ([0.5, 1.0], 3)
    for bad in (None, [0.5, 1.0], {"values": [0.5]}, {"values": "0.5", "seq": 1}, {"values": [0.5], "seq": "1"}):
        assert _release(bad) is None, bad


def _release_app(run_id):
    import streamlit as st

    from dashboard.explore.rbm import _link_units, _linked_units
    from genlib.runs.store import RunStore

    run = RunStore().get(run_id)
    if st.button("release", key="release"):
        # unit 0 left where p(h|v) had it, unit 1 moved to 0.75, unit 2 back to its base from 0.4
        _link_units(run, (0, 1, 2), (0.2, 0.3, 0.5), [0.2, 0.75, 0.5])
    st.write(_linked_units(run, [0, 1, 2]))


def test_a_released_rbm_clamp_slider_goes_into_the_link(runs_dir):
    run = RunStore(runs_dir).create({"model": "rbm", "dataset": "digits"})
    at = AppTest.from_function(_release_app, args=(run.id,), default_timeout=TIMEOUT)
    at.query_params[f"rbm-sh2-{run.id}"] = "0.4"
    at.run()
    at.button(key="release").click().run()
    assert not at.exception, at.exception
    assert at.query_params.get(f"rbm-sh1-{run.id}") in ("0.75", ["0.75"])
    assert f"rbm-sh0-{run.id}" not in at.query_params and f"rbm-sh2-{run.id}" not in at.query_params
