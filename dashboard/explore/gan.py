"""GAN explorer: the course seed's latent points (scale_means, scale_stds), directions in noise space, slerp.

Layout only: each image is one cached call (noise -> generator -> PNG) keyed by the weights' version and the
few numbers that define the noise (seeds, scales, rounded amounts), never by the noise itself. The latent-point grids
come from dashboard/explore/gan_grids.py (made ahead along the hand's direction); their sliders are the page's own
(dashboard/explore/gan_sliders.py, one HTTP request a move) when serve.py's grid route is up, else Streamlit's.
"""

from __future__ import annotations

import secrets
from typing import Any

import streamlit as st
import torch

from dashboard.explore import gan_sliders, widgets
from dashboard.explore.gan_grids import (GRID_SIZES, MEANS_RANGE, POINT_DEFAULTS, SCALE_STEP, STDS_RANGE, gen,
                                         latent_points_png)
from dashboard.explore.widgets import key, show_image, step_caption, to_png
from dashboard.share import BIND
from genlib.latent import expected_norm, lerp, random_directions, slerp, traverse
from genlib.runs.store import Run

AMOUNT = 6.0  # direction sliders span [-6, 6]; a noise vector's norm is about 10 (sqrt(100))
N_STRIP = 9


def _noise(dim: int, seed: int) -> torch.Tensor:
    """One noise vector (dim,) ~ N(0, I), the same for the same seed."""
    return torch.randn(dim, generator=gen(seed))


def _directions(dim: int, kind: str, spec: tuple[int, ...]) -> torch.Tensor:
    """(k, dim) unit directions: k random orthonormal ones from seed spec[0] (k = spec[1]), or basis vectors."""
    if kind == "random":
        return random_directions(dim, spec[1], gen(spec[0]))
    return torch.eye(dim)[list(spec)]


# ---- cached computations ----

@st.cache_data(max_entries=1024, show_spinner=False)
def moved_png(version: str, base_seed: int, kind: str, spec: tuple[int, ...], amounts: tuple[float, ...],
              _model: Any) -> bytes:
    """One noise vector moved by sum_i amounts[i] * direction_i, generated."""
    z = _noise(_model.latent_dim, base_seed) + torch.tensor(amounts) @ _directions(_model.latent_dim, kind, spec)
    with torch.inference_mode():
        x = _model.decode(z[None])
    return to_png(x)


@st.cache_data(max_entries=256, show_spinner=False)
def traversal_png(version: str, base_seed: int, kind: str, spec: tuple[int, ...], amounts: tuple[float, ...],
                  which: int, _model: Any) -> bytes:
    """N_STRIP images along direction `which` from -AMOUNT to +AMOUNT, the others at their slider amounts."""
    dirs = _directions(_model.latent_dim, kind, spec)  # (k, dim)
    z = _noise(_model.latent_dim, base_seed) + torch.tensor(amounts) @ dirs
    z = z - amounts[which] * dirs[which]  # this direction's own slider is replaced by the sweep
    path = traverse(z, dirs[which], torch.linspace(-AMOUNT, AMOUNT, N_STRIP))  # (N_STRIP, dim)
    with torch.inference_mode():
        x = _model.decode(path)
    return to_png(x, nrow=N_STRIP, width_px=widgets.GRID_PX)


@st.cache_data(max_entries=1024, show_spinner=False)
def interpolated_png(version: str, seed_a: int, seed_b: int, method: str, t: float, _model: Any) -> bytes:
    za, zb = _noise(_model.latent_dim, seed_a), _noise(_model.latent_dim, seed_b)
    z = (slerp if method == "spherical" else lerp)(za, zb, t)
    with torch.inference_mode():
        x = _model.decode(z[None])
    return to_png(x)


@st.cache_data(max_entries=128, show_spinner=False)
def interpolation_strip(version: str, seed_a: int, seed_b: int, method: str, _model: Any) -> tuple[bytes, list]:
    """(PNG of N_STRIP images from noise a to noise b, the path's norms |z_t|)."""
    za, zb = _noise(_model.latent_dim, seed_a), _noise(_model.latent_dim, seed_b)
    path = (slerp if method == "spherical" else lerp)(za, zb, torch.linspace(0, 1, N_STRIP))  # (N_STRIP, dim)
    with torch.inference_mode():
        x = _model.decode(path)
    return to_png(x, nrow=N_STRIP, width_px=widgets.GRID_PX), path.norm(dim=1).tolist()


# ---- panels ----

def _latent_points(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    seed_key = key("gan", "seed", run)

    def new_noise() -> None:
        old = st.session_state.get(seed_key)
        seed = secrets.randbelow(100_000)
        st.session_state[seed_key] = seed if seed != old else seed + 1

    c1, c2, c3, c4 = st.columns([3, 3, 2, 3], vertical_alignment="bottom")
    n = c1.select_slider("Images", GRID_SIZES, value=36, key=key("gan", "n", run), bind=BIND)
    widgets.init_state(seed_key, 0)
    seed = int(c2.number_input("Noise seed", 0, 2**31 - 1, key=seed_key, bind=BIND,
                               help="The same seed draws the same noise: reproducible demos."))
    c3.button("New noise", key=key("gan", "newnoise", run), on_click=new_noise)
    in_page = gan_sliders.route_served() and not c4.toggle(
        "Server-side sliders", key="gan-server", bind=BIND,
        help="Off: the sliders below ask the server for each grid directly. On (if no grid appears): Streamlit "
             "sliders, one rerun of this panel per move.")
    if in_page:  # the sliders live in the page and fetch each grid from the route: no rerun per move
        gan_sliders.route_sliders(run=run, version=snap.version, model=snap.model, n=n, seed=seed)
    else:
        left, right = st.columns([2, 3])
        with left:
            # a slider made now starts where the page's own sliders left it: they wrote it into the link
            scale_means = st.slider("scale_means", *MEANS_RANGE, POINT_DEFAULTS["means"], SCALE_STEP,
                                    key=key("gan", "means", run), bind=BIND,
                                    help="means = scale_means * linspace(-1, 1, 100)")
            scale_stds = st.slider("scale_stds", *STDS_RANGE, POINT_DEFAULTS["stds"], SCALE_STEP,
                                   key=key("gan", "stds", run), bind=BIND,
                                   help="stds = scale_stds * linspace(-1, 1, 100) (a negative std draws the same as "
                                        "its absolute value)")
            gan_sliders.keep_positions(run, {"means": scale_means, "stds": scale_stds})
        last_key = key("gan", "last-points", run)  # where the sliders were on the last run: which way the hand moves
        last = st.session_state.get(last_key)
        st.session_state[last_key] = (scale_means, scale_stds)
        with right:
            show_image(latent_points_png(snap.version, n, scale_means, scale_stds, seed, snap.model, last),
                       key("gan", "grid", run))
    st.caption("The seed's generate_latent_points: coordinate k of the noise is drawn around "
               "scale_means * (-1 ... 1) with spread |scale_stds * (-1 ... 1)|. Moving the means moves the "
               "generator from digit to digit; larger spreads give more varied digits.")
    step_caption(snap, run)


def _directions_panel(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    dim = snap.model.latent_dim
    c1, c2, c3 = st.columns(3)
    base_seed = int(c1.number_input("Sample (noise seed)", 0, 2**31 - 1, 0, key=key("gan", "dirbase", run), bind=BIND))
    kind = c2.radio("Directions", ["random", "coordinates"], horizontal=True, key=key("gan", "dirkind", run), bind=BIND,
                    format_func=lambda s: {"random": "random unit directions",
                                           "coordinates": "single noise coordinates"}[s])
    if kind == "random":
        dir_seed = int(c3.number_input("Direction seed", 0, 2**31 - 1, 0, key=key("gan", "dirseed", run), bind=BIND))
        k = 4
        spec = (dir_seed, k)
        names = [f"direction {i}" for i in range(k)]
        slider_keys = [key("gan", f"dir{i}", run) for i in range(k)]
    else:
        coords = c3.multiselect("Coordinates", list(range(dim)), default=list(range(min(4, dim))),
                                max_selections=6, key=key("gan", "dircoords", run), bind=BIND, format_func=lambda d: f"z{d}")
        spec = tuple(sorted(coords))
        names = [f"z{c}" for c in spec]
        slider_keys = [key("gan", f"dir-z{c}", run) for c in spec]
    if not names:
        st.info("Choose at least one coordinate.")
        return
    left, right = st.columns([2, 3])
    with left:
        amounts = tuple(round(st.slider(name, -AMOUNT, AMOUNT, 0.0, 0.25, key=sk, bind=BIND), 2)
                        for name, sk in zip(names, slider_keys))
    with right:
        show_image(moved_png(snap.version, base_seed, kind, spec, amounts, snap.model), key("gan", "dir-img", run))
    which = st.selectbox("Sweep along", list(range(len(names))), format_func=lambda i: names[i],
                         key=key("gan", "dirsweep", run), bind=BIND)
    show_image(traversal_png(snap.version, base_seed, kind, spec, amounts, which, snap.model),
               key("gan", "dir-strip", run), caption=f"{names[which]} from -{AMOUNT:g} to +{AMOUNT:g}")
    st.caption(f"One sample's {dim}-dimensional noise moved along a few directions (unit vectors; the noise "
               f"itself has length about {expected_norm(dim):.0f}). Some directions change the digit's identity, "
               "others only its thickness or slant: the generator's code is not aligned with the axes.")
    step_caption(snap, run)


def _interpolation(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    c1, c2, c3 = st.columns(3)
    seed_a = int(c1.number_input("Noise seed A", 0, 2**31 - 1, 0, key=key("gan", "sa", run), bind=BIND))
    seed_b = int(c2.number_input("Noise seed B", 0, 2**31 - 1, 1, key=key("gan", "sb", run), bind=BIND))
    compare = c3.checkbox("Compare with the straight line", value=False, key=key("gan", "slin", run), bind=BIND)
    t = st.slider("Position t between A and B", 0.0, 1.0, 0.5, 0.05, key=key("gan", "st", run), bind=BIND)
    left, right = st.columns([1, 3])
    with left:
        show_image(interpolated_png(snap.version, seed_a, seed_b, "spherical", round(t, 2), snap.model),
                   key("gan", "slerp-img", run), caption=f"slerp at t = {t:.2f}")
    with right:
        strip, norms = interpolation_strip(snap.version, seed_a, seed_b, "spherical", snap.model)
        show_image(strip, key("gan", "slerp-strip", run),
                   caption="spherical: |z| " + " ".join(f"{v:.1f}" for v in norms))
        if compare:
            strip, norms = interpolation_strip(snap.version, seed_a, seed_b, "linear", snap.model)
            show_image(strip, key("gan", "lerp-strip", run),
                       caption="linear: |z| " + " ".join(f"{v:.1f}" for v in norms))
    st.caption("Spherical interpolation (White 2016) walks from noise A to noise B along a great circle, so every "
               "code keeps the length typical of N(0, I) draws; the straight line's midpoints are shorter than any "
               "noise the generator was trained on and can look washed out.")
    step_caption(snap, run)


# the GAN's exploration tabs, each panel(model, run, step)
PANELS = {"The seed's latent points": _latent_points, "Directions": _directions_panel, "Interpolation": _interpolation}
