"""RBM explorer: the hidden units' filters, a Gibbs chain scrubbed step by step, and hidden units clamped by hand
(p(v|h) computed in the browser while a slider moves, dashboard.explore.browser_decoder; Streamlit sliders as the
fallback).

Layout only: the chain is computed once per setting (cached, all frames as PNGs) so its slider only picks a frame;
the clamp sliders cost one p(v|h), a single matrix product.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import streamlit as st
import torch

from dashboard import work_meter
from dashboard.explore import widgets
from dashboard.explore.browser_decoder import SLIDER_STEP, browser_decoder, payload_fits
from dashboard import share
from dashboard.explore.widgets import key, show_image, step_caption, to_png
from dashboard.share import BIND
from genlib.data import binarize, to_unit
from genlib.images import gif_bytes, grid, png_bytes, upscale
from genlib.latent import unit_filters
from genlib.runs.store import Run
from genlib.sampling.bernoulli import random_binary
from genlib.sampling.gibbs import gibbs_chain
from genlib.work_budget import gibbs_step_flops, plan_chains

FILTER_COUNTS = (16, 36, 64, 100)
CHAIN_LENGTHS = (50, 200, 1000)
MAX_FRAMES = 200  # a chain records at most this many frames (every = steps // MAX_FRAMES)
MAX_CLAMPED = 8
GIF_FRAMES = 100  # frames of the 'Play the chain' animation (80 ms each)
GIF_PX = 300  # its width on screen


def _image_shape(model: Any) -> tuple[int, int, int]:
    return tuple(getattr(model, "image_shape", (1, 28, 28)))  # type: ignore[return-value]


def _visible(model: Any, x: torch.Tensor) -> torch.Tensor:
    """Images (B, 1, 28, 28) in [0, 1] -> visibles (B, n_visible), as the samplers and conditionals take them."""
    return x.reshape(x.shape[0], -1).float()


def _as_images(model: Any, v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], *_image_shape(model)).clamp(0, 1)


# ---- cached computations ----

@st.cache_data(max_entries=64, show_spinner=False)
def filters_png(version: str, start: int, count: int, _model: Any) -> bytes:
    """Rows start..start+count of W (n_hidden, n_visible) as images, each normalised on its own."""
    f = unit_filters(_model.filters(), _image_shape(_model), start, count)  # (count, 1, 28, 28)
    return to_png(f, nrow=math.ceil(math.sqrt(count)), width_px=widgets.GRID_PX * 2 // 3)


@st.cache_data(max_entries=64, show_spinner=False)
def unit_filters_png(version: str, units: tuple[int, ...], _model: Any) -> bytes:
    """The filters of the chosen hidden units, in one row."""
    f = unit_filters(_model.filters(), _image_shape(_model), 0, _model.latent_dim)[list(units)]  # (units, 1, 28, 28)
    return to_png(f, nrow=len(units), width_px=70 * len(units))


@st.cache_data(max_entries=16, show_spinner=False)
def chain_grids(version: str, dataset: str, start: str, digit: int, chains: int, steps: int, seed: int,
                _model: Any, _data: Any) -> tuple[np.ndarray, int]:
    """Every recorded frame of `chains` Gibbs chains, tiled, as uint8 (T, rows, cols), and the steps between
    frames. Computed once per setting; the frame slider then only encodes the frame it shows."""
    g = torch.Generator().manual_seed(int(seed))
    n_visible = _model.n_visible
    if start == "noise":
        v0 = random_binary(chains, n_visible, generator=g)  # (B, n_visible) on the CPU, as g
    else:
        x = to_unit(_data.x_test[digit:digit + 1]).expand(chains, -1, -1, -1)
        v0 = binarize(_visible(_model, x), "threshold")
    every = max(1, steps // MAX_FRAMES)
    with torch.inference_mode():
        traj = gibbs_chain(_model, v0, steps, generator=g, every=every, return_trajectory=True)  # (T, B, n_visible)
    nrow = math.ceil(math.sqrt(chains))
    return np.stack([grid(_as_images(_model, frame), nrow=nrow) for frame in traj]), every


@st.cache_data(max_entries=1024, show_spinner=False)
def chain_frame_png(version: str, dataset: str, start: str, digit: int, chains: int, steps: int, seed: int,
                    t: int, _model: Any, _data: Any) -> bytes:
    """The chains' frame at Gibbs step t (a multiple of the recording interval) as PNG."""
    grids, every = chain_grids(version, dataset, start, digit, chains, steps, seed, _model, _data)
    tiles = grids[min(t // every, grids.shape[0] - 1)]
    width = widgets.IMAGE_PX if chains == 1 else widgets.GRID_PX // 2
    return png_bytes(upscale(tiles, max(1, round(width / tiles.shape[1]))))


@st.cache_data(max_entries=8, show_spinner=False)
def chain_gif(version: str, dataset: str, start: str, digit: int, chains: int, steps: int, seed: int,
              _model: Any, _data: Any) -> bytes:
    """The chains' recorded frames as a looping animated GIF (at most GIF_FRAMES frames, evenly spaced from the first
    to the chain's last state, at most GIF_PX wide, within the server's pixel cap): the browser plays it, smoothly and
    without a rerun per frame."""
    grids, _ = chain_grids(version, dataset, start, digit, chains, steps, seed, _model, _data)
    return gif_bytes(grids.shape[0], lambda i: grids[i], width=GIF_PX, duration_ms=80, max_frames=GIF_FRAMES)[0]


@st.cache_data(max_entries=64, show_spinner=False)
def hidden_base(version: str, dataset: str, base: str, digit: int, _model: Any, _data: Any) -> list[float]:
    """The unclamped hidden probabilities (n_hidden,): p(h|v) of a test digit, or 0.5 everywhere."""
    if base == "half":
        return [0.5] * _model.latent_dim
    with torch.inference_mode():
        ph = _model.p_h_given_v(_visible(_model, to_unit(_data.x_test[digit:digit + 1])))  # (1, n_hidden)
    return ph[0].float().tolist()


@st.cache_data(max_entries=2048, show_spinner=False)
def visible_png(version: str, h: tuple[float, ...], _model: Any, width_px: int = widgets.IMAGE_PX) -> bytes:
    """p(v|h) for hidden probabilities h (rounded by the caller), as one image."""
    with torch.inference_mode():
        x = _model.decode(torch.tensor([h], dtype=torch.float32))  # (1, 1, 28, 28)
    return to_png(x, width_px=width_px)


# ---- panels ----

def _filters(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    n_hidden = snap.model.latent_dim
    c1, c2 = st.columns(2)
    count = c2.select_slider("Filters", FILTER_COUNTS, value=64, key=key("rbm", "fcount", run), bind=BIND)
    start = int(c1.number_input("First hidden unit", 0, n_hidden - 1, 0, step=16, key=key("rbm", "fstart", run), bind=BIND))
    count = min(count, n_hidden - start)
    show_image(filters_png(snap.version, start, count, snap.model), key("rbm", "filters", run),
               caption=f"hidden units {start} to {start + count - 1} of {n_hidden}")
    c, h, w = snap.model.image_shape
    st.caption(f"Each square is one hidden unit's weights W[j] to the {c * h * w} visible units ({h} x {w}), drawn as "
               "an image (lighter means a larger weight; each square scaled on its own). Trained on digits, units "
               "look like pen strokes and blobs: the features whose presence the unit reports.")
    step_caption(snap, run)


def _chain(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    data, note = widgets.test_data(run)
    c1, c2, c3, c4 = st.columns(4)
    start = c1.radio("Start from", ["noise", "digit"], key=key("rbm", "gstart", run), bind=BIND,
                     format_func=lambda s: {"noise": "random pixels", "digit": "a test digit"}[s])
    digit = int(c2.number_input("Test digit", 0, data.x_test.shape[0] - 1, 0, key=key("rbm", "gdigit", run),
                                bind=BIND, disabled=start == "noise"))
    chains = c3.select_slider("Chains", (1, 4, 16), value=4, key=key("rbm", "gchains", run), bind=BIND)
    steps = c4.select_slider("Steps", CHAIN_LENGTHS, value=200, key=key("rbm", "gsteps", run), bind=BIND)
    seed = int(st.number_input("Chain seed", 0, 2**31 - 1, 0, key=key("rbm", "gseed", run), bind=BIND))
    # within the per-setting work cap (a 4,096 x 4,096 RBM: 16 chains x 1,000 steps would be 1 TFLOP)
    plan = plan_chains(gibbs_step_flops(snap.model.n_visible, snap.model.latent_dim), chains, steps,
                       max_frames=MAX_FRAMES)
    if plan.capped:
        st.info(plan.note, icon=":material/speed:")
    chains, steps = plan.chains, plan.steps
    if not work_meter.allowed(("rbm-chain", snap.version, data.name, start, digit, chains, steps, seed), plan.flops):
        return  # this browser's share of the server (or the server's) is spent for now: the message says when
    every = max(1, steps // MAX_FRAMES)
    frame_key = key("rbm", "gframe", run)
    frame = st.session_state.get(frame_key, steps)
    if frame > steps or frame % every:
        st.session_state[frame_key] = steps  # the chain changed length: show its end
    if st.toggle("Play the chain", key=key("rbm", "gplay", run), bind=BIND,
                 help="Run through the recorded Gibbs steps as a looping animation; turn off to stop at a step."):
        gif = chain_gif(snap.version, data.name, start, digit, chains, steps, seed, snap.model, data)
        with st.container(key=key("rbm", "chain-play", run)):
            st.image(gif, width=share.image_width("content"),
                     caption=f"p(v|h) from step 0 to {steps} (looping)")
    else:
        t = st.slider("Gibbs step", 0, steps, value=steps, step=every, key=frame_key, bind=BIND)
        png = chain_frame_png(snap.version, data.name, start, digit, chains, steps, seed, t, snap.model, data)
        show_image(png, key("rbm", "chain-img", run), caption=f"p(v|h) after {t} steps")
    st.caption("Block Gibbs sampling: draw all hidden units given the pixels, then all pixels given the hidden "
               "units, again and again; the image is p(v|h) at the chosen step. The chain wanders toward digits "
               "the RBM finds probable, whatever it starts from.")
    if note:
        st.caption(note)
    step_caption(snap, run)


def _unit_param(run: Any, unit: int) -> str:
    """The URL parameter of hidden unit `unit`'s in-browser clamp slider (rbm-sh<u>-<run>)."""
    return widgets.key("rbm", f"sh{unit}", run)


def _linked_units(run: Any, units: list[int]) -> dict[int, float]:
    """{unit: probability} of the slider units whose position the URL holds (clipped to [0, 1]; a malformed value
    is ignored, the slider then starts at its unit's p(h|v))."""
    out = {}
    for u in units:
        try:
            value = float(st.query_params.get(_unit_param(run, u), "nan"))
        except ValueError:
            continue
        if math.isfinite(value):
            out[u] = min(max(value, 0.0), 1.0)
    return out


def _link_units(run: Any, units: tuple[int, ...], base: tuple[float, ...], released: list[float]) -> None:
    """A clamp slider was let go: the slider units that differ from their p(h|v) go into the link, the others out."""
    for u in units:
        if u >= len(released):
            continue
        name = _unit_param(run, u)
        if abs(released[u] - base[u]) < SLIDER_STEP / 2:
            st.query_params.pop(name, None)
        else:
            st.query_params[name] = f"{round(released[u], 2):g}"


def smooth_rbm_panel(model: Any, run: Any, step: int) -> None:
    """The RBM's clamp sliders, p(v|h) decoded in the page on every input event."""
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    data, note = widgets.test_data(run)
    n_hidden = snap.model.latent_dim
    c1, c2, c3 = st.columns(3)
    base_kind = c1.radio("Other hidden units", ["digit", "half"], key=widgets.key("rbm", "sbase", run), bind=BIND,
                         format_func=lambda s: {"digit": "p(h|v) of a test digit", "half": "0.5 each"}[s])
    digit = int(c2.number_input("Test digit", 0, data.x_test.shape[0] - 1, 0, key=widgets.key("rbm", "sdigit", run),
                                bind=BIND, disabled=base_kind == "half"))
    units = c3.multiselect("Units with sliders", list(range(n_hidden)), default=list(range(min(8, n_hidden))),
                           max_selections=2 * MAX_CLAMPED, key=widgets.key("rbm", "sunits", run), bind=BIND)
    h = hidden_base(snap.version, data.name, base_kind, digit, snap.model, data)
    moved = _linked_units(run, units)  # sliders a shared link (or this page's last release) set
    start = [moved.get(i, p) for i, p in enumerate(h)]
    sliders = [{"index": u, "label": f"h{u}", "min": 0.0, "max": 1.0, "step": SLIDER_STEP,
                "value": round(start[u], 2)} for u in units]
    shape = tuple(getattr(snap.model, "image_shape", (1, 28, 28)))[1:]
    browser_decoder(key=widgets.key("rbm", "smooth", run), version=snap.version, model=snap.model,
                    sliders=sliders, base=start, image_shape=shape,
                    on_release=functools.partial(_link_units, run, tuple(units), tuple(h)))
    st.caption("p(v|h) = sigmoid(W^T h + b), computed in this browser as you drag: each slider sets one hidden "
               "unit's probability, and its filter fades in or out of the image continuously. If no image appears, "
               "turn on 'Server-side sliders'.")
    if note:
        st.caption(note)
    widgets.step_caption(snap, run)


def _clamp(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    fits, why = payload_fits(snap.version, snap.model)  # weights too large to send to every session: server sliders
    if not st.toggle("Server-side sliders", key="rbm-server", bind=BIND, disabled=not fits,
                     help="p(v|h) is computed in this browser while you drag (its weights were sent once). Turn this "
                          "on if no image appears: Streamlit sliders, the image computed on the server on release.") \
            and fits:
        smooth_rbm_panel(model, run, step)
        return
    if why:
        st.info(f"{why} The sliders below are computed on the server.", icon=":material/speed:")
    data, note = widgets.test_data(run)
    n_hidden = snap.model.latent_dim
    c1, c2, c3 = st.columns(3)
    base = c1.radio("Other hidden units", ["digit", "half"], key=key("rbm", "cbase", run), bind=BIND,
                    format_func=lambda s: {"digit": "p(h|v) of a test digit", "half": "0.5 each"}[s])
    digit = int(c2.number_input("Test digit", 0, data.x_test.shape[0] - 1, 0, key=key("rbm", "cdigit", run), bind=BIND,
                                disabled=base == "half"))
    units = c3.multiselect("Units to clamp", list(range(n_hidden)), default=list(range(min(4, n_hidden))),
                           max_selections=MAX_CLAMPED, key=key("rbm", "cunits", run), bind=BIND)
    h = hidden_base(snap.version, data.name, base, digit, snap.model, data)
    clamped = list(h)
    left, mid, right = st.columns([2, 2, 3])
    with left:
        for u in units:
            clamped[u] = st.slider(f"p(h{u} = 1)", 0.0, 1.0, round(h[u] * 20) / 20, 0.05,
                                   key=key("rbm", f"h{u}", run), bind=BIND)
    h_key = tuple(round(p, 2) for p in h)
    with mid:
        show_image(visible_png(snap.version, h_key, snap.model, 140), key("rbm", "clamp-base", run),
                   caption="p(v|h) before clamping")
        if units:
            show_image(unit_filters_png(snap.version, tuple(units), snap.model), key("rbm", "clamp-filters", run),
                       caption="filters of the clamped units")
    with right:
        show_image(visible_png(snap.version, tuple(round(p, 2) for p in clamped), snap.model),
                   key("rbm", "clamp-img", run), caption="p(v|h) with the clamped units")
    st.caption("p(v|h) is a sigmoid of W^T h + b: each hidden unit adds its filter, weighted by its probability. "
               "Turn a unit up and its strokes appear in the image; turn it down and they fade.")
    if note:
        st.caption(note)
    step_caption(snap, run)


# the RBM's exploration tabs, each panel(model, run, step); dashboard.explore.panel adds "Your digit" (draw_digit)
def _persistent(model: Any, run: Run | None, step: int) -> None:
    """The PCD particles as the training worker last saved them (pcd_chains.png, genlib.models.rbm.extra_grids)."""
    from dashboard.run_images import grid_png
    from genlib.models.rbm import PCD_GRID, PCD_SHOWN

    persistent = bool(getattr(getattr(model, "config", None), "persistent", False))
    path = run.path / f"{PCD_GRID}.png" if run is not None else None
    if not persistent:
        st.info("This run trains with plain contrastive divergence (CD-k): its negative chains restart at the data "
                "on every batch, so there are no persistent chains to show. Train with 'Persistent CD (PCD)' "
                "on to see them here.", icon=":material/info:")
    elif path is None or not path.is_file():
        st.info("The persistent chains appear here a few seconds after this run's training starts (the worker saves "
                "them with the live samples).")
    else:
        try:
            png = grid_png(str(path), path.stat().st_mtime_ns, widgets.GRID_PX // 2)
        except OSError:
            st.caption("The grid is being replaced; it reappears in a moment.")
            return
        show_image(png, key("rbm", "pcd-img", run),
                   caption=f"p(v|h) of {PCD_SHOWN} persistent chains, the same particles every time, as the "
                           "training worker last saved them")
    st.caption("Persistent contrastive divergence (PCD, Tieleman 2008): the learning rule needs samples of the model "
               "itself. CD starts a short Gibbs chain at each batch's data and stops after k steps; PCD keeps a set "
               "of chains (one per image of a batch) and continues each from where it stopped on the last batch, so "
               "over training they run thousands of steps and explore the model's own distribution. These "
               "particles are what the model currently 'dreams': digits when it has learned, one repeated blob "
               "when the chains are stuck in a single mode.")
    if persistent:
        widgets.step_caption(widgets.current(run, widgets.local_snapshot(model, step)), run)


PANELS = {"Filters": _filters, "Gibbs chain": _chain, "Clamp hidden units": _clamp, "Persistent chains": _persistent}
