"""Your own digit: draw one in the page and watch each model take it in: the VAE encodes it (its place among the
test digits' codes, its reconstruction), the RBM cleans it by Gibbs steps, the EBM pulls it downhill by Langevin
steps (Kingma & Welling 2014; Hinton 2002; Du & Mordatch 2019).

The drawing comes from streamlit-drawable-canvas (a maintained Fabric.js canvas; white pen on black, like MNIST)
and is prepared as MNIST's digits were by genlib.digit_input. `read_canvas` is the only place that touches the
canvas; the panels hand its picture to `show_vae`, `show_rbm` and `show_ebm`, which AppTest calls with synthetic
drawings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st
import torch

from dashboard.explore import widgets
from dashboard.explore.vae import test_means
from dashboard.explore.widgets import key, show_image, to_png
from genlib.digit_input import EmptyDrawing, prepare_digit
from genlib.latent import pca_2d
from genlib.sampling.gibbs import gibbs_chain
from genlib.sampling.langevin import trajectory_energies

CANVAS_PX = 280  # 10 screen pixels per MNIST pixel
PEN_PX = 20  # MNIST's strokes are 2-3 pixels wide in 28: about 20 on a 280-pixel canvas
GIBBS_STEPS = (10, 50, 200)
LANGEVIN_STEPS = (20, 60, 200)
FRAMES = 11  # images in a chain's strip: the start and ten more


def read_canvas(canvas_key: str) -> np.ndarray | None:
    """Draw the canvas; returns its picture (H, W, 4) uint8 RGBA once something is drawn, else None."""
    from streamlit_drawable_canvas import st_canvas  # lazily: only the "Your digit" tab needs the canvas

    result = st_canvas(stroke_width=PEN_PX, stroke_color="#FFFFFF", background_color="#000000",
                       height=CANVAS_PX, width=CANVAS_PX, drawing_mode="freedraw", update_streamlit=True,
                       return_image_data=True, key=canvas_key)
    picture = result.image_data  # the canvas as a PNG decoded to (H, W, 4), sent when the pen lifts; None before
    return None if picture is None else np.asarray(picture)


def _prepared(picture: np.ndarray | None) -> torch.Tensor | None:
    """The drawing as an MNIST-like image (1, 1, 28, 28), or None (with a hint on the page) when there is none."""
    if picture is None:
        st.info("Draw a digit in the box: the models' answers appear here when you lift the pen.")
        return None
    try:
        return prepare_digit(picture)
    except EmptyDrawing:
        st.info("Draw a digit in the box: the models' answers appear here when you lift the pen.")
        return None


def _every(every: int, sampler: str) -> str:
    return f"after each {sampler} step" if every == 1 else f"every {every} {sampler} steps"


def _canvas_column(model_name: str, run: Any) -> np.ndarray | None:
    st.markdown("**Draw a digit**")
    picture = read_canvas(key(model_name, "canvas", run))
    st.caption("White pen on black, like MNIST. The bin icon clears the box; the arrows undo and redo.")
    return picture


def _chain_controls(model_name: str, run: Any, label: str, options: tuple[int, ...], default: int) -> tuple[int, int]:
    """(steps, seed) of the chain started at the drawing, from a steps slider and a seed box side by side."""
    c1, c2 = st.columns(2)
    steps = c1.select_slider(label, options, value=default, key=key(model_name, "draw-steps", run))
    seed = int(c2.number_input("Chain seed", 0, 2**31 - 1, 0, key=key(model_name, "draw-seed", run)))
    return steps, seed


def _draw_panel(model_name: str, show: Any, model: Any, run: Any, step: int) -> None:
    """The canvas on the left, `show(snapshot, run, picture)`'s answer on the right."""
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    left, right = st.columns([2, 3])
    with left:
        picture = _canvas_column(model_name, run)
    with right:
        show(snap, run, picture)
    widgets.step_caption(snap, run)


# ---- the VAE ----

def _latent_figure(coords: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], mine: np.ndarray,
                   axis_titles: tuple[str, str]) -> Any:
    """The test digits' codes as dots (one colour per class) and the drawing's code as a large star."""
    import plotly.graph_objects as go  # lazily: plotly's import costs start-up time on pages that draw no chart
    from plotly.colors import qualitative

    fig = go.Figure()
    palette = qualitative.D3
    for c in np.unique(labels):
        sel = labels == c
        fig.add_trace(go.Scattergl(x=coords[sel, 0], y=coords[sel, 1], mode="markers", name=classes[int(c)],
                                   marker={"size": 4, "opacity": 0.5, "color": palette[int(c) % len(palette)]}))
    fig.add_trace(go.Scatter(x=[float(mine[0])], y=[float(mine[1])], mode="markers", name="your digit",
                             marker={"symbol": "star", "size": 22, "color": "#111111",
                                     "line": {"color": "#ffffff", "width": 2}}))
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis_title=axis_titles[0],
                      yaxis_title=axis_titles[1], legend_title_text="label")
    return fig


def vae_answer(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mu (1, k), sigma (1, k), reconstruction decode(mu) (1, 1, 28, 28)) for a prepared digit x."""
    with torch.inference_mode():
        mu, log_sigma = model.encode(x)
        recon = model.decode(mu)
    return mu.float(), log_sigma.exp().float(), recon


def show_vae(snap: Any, run: Any, picture: np.ndarray | None) -> None:
    """The VAE's answer to a drawing: what it sees, its reconstruction, and where its code lies among the test
    digits' codes (PCA of the codes when the latent is wider than 2)."""
    x = _prepared(picture)
    if x is None:
        return
    mu, sigma, recon = vae_answer(snap.model, x)
    a, b = st.columns(2)
    with a:
        show_image(to_png(x, width_px=140), key("vae", "draw-input", run), caption="what the VAE sees (28 x 28)")
    with b:
        show_image(to_png(recon, width_px=140), key("vae", "draw-recon", run), caption="its reconstruction")
    data, note = widgets.test_data(run)
    n = min(widgets.TEST_IMAGES, data.x_test.shape[0])
    means, labels = test_means(snap.version, data.name, n, snap.model, data)  # (n, k), (n,)
    if means.shape[1] == 2:
        coords, mine, titles = means, mu[0].numpy(), ("z0", "z1")
    else:  # the same PCA as the latent map, with the drawing's code as one more point
        both, ratio = pca_2d(torch.cat([torch.from_numpy(means), mu]))
        coords, mine = both[:-1].numpy(), both[-1].numpy()
        titles = (f"PC1 ({float(ratio[0]):.0%} of variance)", f"PC2 ({float(ratio[1]):.0%})")
    with st.container(key=key("vae", "draw-map", run)):
        st.plotly_chart(_latent_figure(coords, labels, data.classes, mine, titles), key=key("vae", "draw-fig", run))
    code = ", ".join(f"{m:+.2f}" for m in mu[0].tolist()[:8]) + (" ..." if mu.shape[1] > 8 else "")
    st.caption(f"The encoder's mean code for your digit is mu = ({code}), with a typical sigma of "
               f"{float(sigma.mean()):.2f}: the star. A digit drawn like the class it lands among is one the VAE "
               "'recognises'; the reconstruction shows what the code kept.")
    if note:
        st.caption(note)


def draw_vae_panel(model: Any, run: Any, step: int) -> None:
    """The VAE explorer's tab: draw, then see the code and reconstruction."""
    _draw_panel("vae", show_vae, model, run, step)


# ---- the RBM ----

@st.cache_data(max_entries=16, show_spinner=False)
def gibbs_strip(version: str, picture_key: bytes, steps: int, seed: int, _model: Any, _x: torch.Tensor) -> bytes:
    """PNG of FRAMES images: the prepared drawing, then p(v|h) every steps // (FRAMES - 1) Gibbs steps from it."""
    every = max(1, steps // (FRAMES - 1))
    v0 = _x.reshape(1, -1).to(_model.dtype)  # (1, n_visible): grey levels used as the visibles' probabilities
    g = torch.Generator().manual_seed(int(seed))
    with torch.inference_mode():
        traj = gibbs_chain(_model, v0, every * (FRAMES - 1), generator=g, every=every, return_trajectory=True)
    frames = traj[:, 0].reshape(-1, 1, 28, 28)  # (FRAMES, 1, 28, 28)
    return to_png(frames, nrow=FRAMES, width_px=widgets.GRID_PX)


def show_rbm(snap: Any, run: Any, picture: np.ndarray | None) -> None:
    """The RBM cleans a drawing: a Gibbs chain started at it, shown as a strip of p(v|h)."""
    x = _prepared(picture)
    if x is None:
        return
    steps, seed = _chain_controls("rbm", run, "Gibbs steps", GIBBS_STEPS, GIBBS_STEPS[0])
    png = gibbs_strip(snap.version, x.numpy().tobytes(), steps, seed, snap.model, x)
    every = max(1, steps // (FRAMES - 1))
    show_image(png, key("rbm", "draw-chain", run), caption=f"your digit, then p(v|h) {_every(every, 'Gibbs')}")
    st.caption("Each Gibbs step asks the hidden units which features they see in the image, then redraws the image "
               "from those features. Strokes the RBM has never seen fade, missing ones fill in: the chain moves "
               "your digit toward the digits the RBM finds probable, and with many steps it may wander to another.")


def draw_rbm_panel(model: Any, run: Any, step: int) -> None:
    """The RBM explorer's tab: draw, then watch Gibbs steps clean the digit."""
    _draw_panel("rbm", show_rbm, model, run, step)


# ---- the EBM ----

@st.cache_data(max_entries=16, show_spinner=False)
def langevin_strip(version: str, picture_key: bytes, steps: int, seed: int, _model: Any,
                   _x: torch.Tensor) -> tuple[bytes, list[float]]:
    """(PNG of FRAMES images from the drawing downhill, the energy of each) for `steps` Langevin steps."""
    every = max(1, steps // (FRAMES - 1))
    g = torch.Generator().manual_seed(int(seed))
    chain = _model.langevin(_x, every * (FRAMES - 1), generator=g, every=every, return_trajectory=True)
    frames = chain.trajectory[:, 0]  # (FRAMES, 1, 28, 28)
    energies = trajectory_energies(_model.energy, chain.trajectory)[:, 0]  # (FRAMES,)
    return to_png(frames.cpu(), nrow=FRAMES, width_px=widgets.GRID_PX), energies.tolist()


def show_ebm(snap: Any, run: Any, picture: np.ndarray | None) -> None:
    """The EBM pulls a drawing downhill: a Langevin chain on its energy started at the drawing."""
    x = _prepared(picture)
    if x is None:
        return
    steps, seed = _chain_controls("ebm", run, "Langevin steps", LANGEVIN_STEPS, LANGEVIN_STEPS[1])
    png, energies = langevin_strip(snap.version, x.numpy().tobytes(), steps, seed, snap.model, x)
    every = max(1, steps // (FRAMES - 1))
    show_image(png, key("ebm", "draw-chain", run), caption=f"your digit, then the chain {_every(every, 'Langevin')}")
    st.caption(f"Energy along the way: {energies[0]:.2f} (your digit) -> {energies[-1]:.2f}. Each step moves every "
               "pixel a little downhill on the energy E(x) and adds a little noise; low energy is what the EBM "
               "finds likely, so the chain reshapes your digit toward the digits it has learned.")


def draw_ebm_panel(model: Any, run: Any, step: int) -> None:
    """The EBM explorer's tab: draw, then watch Langevin dynamics pull the digit downhill."""
    _draw_panel("ebm", show_ebm, model, run, step)


# the "Your digit" tab of each model's explorer (dashboard.explore.panel places it after the model's own PANELS)
PANELS = {"vae": draw_vae_panel, "rbm": draw_rbm_panel, "ebm": draw_ebm_panel}
