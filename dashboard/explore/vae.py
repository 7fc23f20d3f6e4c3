"""VAE explorer: latent sliders, a 2-D manifold, interpolation between test digits, the latent map, reconstructions.

Layout only: each image is one cached call (decode + PNG) keyed by the weights' version and the rounded latent. The
latent sliders decode in the browser (dashboard.explore.browser_decoder), Streamlit sliders decoded here being the
fallback; both read and write one code per run (session key vae-code-<run>, URL parameters vae-z<d>-<run>), which the
manifold's and the latent map's clicks can move.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import streamlit as st
import torch
from streamlit.errors import StreamlitAPIException

from dashboard.explore import widgets
from dashboard.explore.browser_decoder import SLIDER_STEP, browser_decoder
from dashboard.explore.latent_click import clicked_code, clicked_tile, manifold_figure, map_figure
from dashboard.explore.widgets import key, show_image, step_caption, to_png
from dashboard.share import BIND
from genlib.data import to_unit
from genlib.latent import lerp, manifold_grid, manifold_values, pca_2d, slerp
from genlib.runs.store import Run

MAX_SLIDERS = 8  # latents wider than this get a multiselect choosing which dimensions have sliders
Z_RANGE = 3.0  # sliders span [-3, 3]: 99.7% of the N(0, 1) prior
MAX_BROWSER_SLIDERS = 16  # wider codes get in-browser sliders for their first 16 dimensions (the rest stay at 0)


# ---- cached computations: the model is passed unhashed (_model); `version` names its weights ----

@st.cache_data(max_entries=2048, show_spinner=False)
def decode_png(version: str, z: tuple[float, ...], _model: Any, width_px: int = widgets.IMAGE_PX) -> bytes:
    """One latent (as a tuple, rounded by the caller) -> its decoded image as PNG bytes."""
    with torch.inference_mode():
        x = _model.decode(torch.tensor([z], dtype=torch.float32))  # (1, 1, 28, 28)
    return to_png(x, width_px=width_px)


@st.cache_data(max_entries=64, show_spinner=False)
def manifold_png(version: str, i: int, j: int, n: int, span: float, quantiles: bool, _model: Any) -> bytes:
    """The n x n grid over latent dimensions i and j (others 0), decoded in one forward pass."""
    z = manifold_grid(_model.latent_dim, i, j, n, span, quantiles=quantiles)  # (n*n, k)
    with torch.inference_mode():
        x = _model.decode(z)  # (n*n, 1, 28, 28)
    return to_png(x, nrow=n, width_px=widgets.GRID_PX)


@st.cache_data(max_entries=16, show_spinner=False)
def test_means(version: str, dataset: str, n: int, _model: Any, _data: Any) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means mu (n, k) of the first n test images and their labels (n,)."""
    with torch.inference_mode():
        mu, _ = _model.encode(to_unit(_data.x_test[:n]))
    return mu.float().numpy(), _data.y_test[:n].numpy()


@st.cache_data(max_entries=16, show_spinner=False)
def latent_map(version: str, dataset: str, n: int, _model: Any, _data: Any) -> tuple[np.ndarray, np.ndarray, list]:
    """2-D coordinates (n, 2) of the test means (PCA when the latent is wider than 2), labels, explained variance."""
    mu, labels = test_means(version, dataset, n, _model, _data)
    if mu.shape[1] == 2:
        return mu, labels, []
    coords, ratio = pca_2d(torch.from_numpy(mu))
    return coords.numpy(), labels, ratio.tolist()


@st.cache_data(max_entries=64, show_spinner=False)
def interpolation_strip(version: str, dataset: str, a: int, b: int, method: str, steps: int,
                        _model: Any, _data: Any) -> tuple[bytes, bytes, tuple, tuple]:
    """(PNG of the two test images, PNG of `steps` decodes from mu_a to mu_b, mu_a, mu_b as tuples)."""
    x = to_unit(_data.x_test[[a, b]])  # (2, 1, 28, 28)
    with torch.inference_mode():
        mu, _ = _model.encode(x)  # (2, k)
        path = (slerp if method == "spherical" else lerp)(mu[0], mu[1], torch.linspace(0, 1, steps))  # (steps, k)
        strip = _model.decode(path)
    return (to_png(x, nrow=2, width_px=2 * 140), to_png(strip, nrow=steps, width_px=widgets.GRID_PX),
            tuple(mu[0].tolist()), tuple(mu[1].tolist()))


@st.cache_data(max_entries=32, show_spinner=False)
def reconstructions(version: str, dataset: str, start: int, n: int, _model: Any, _data: Any) -> tuple[bytes, bytes]:
    """(PNG of test images start..start+n, PNG of their reconstructions decode(mu(x)))."""
    x = to_unit(_data.x_test[start:start + n])
    with torch.inference_mode():
        mu, _ = _model.encode(x)
        recon = _model.decode(mu)
    nrow = min(8, n)
    return to_png(x, nrow=nrow, width_px=420), to_png(recon, nrow=nrow, width_px=420)


def _round(z: Any) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in z)


# ---- panels (each one fragment) ----

def _slider_key(run: Run | None, d: int) -> str:
    return key("vae", f"z{d}", run)  # also the URL parameter that keeps z_d in a shared link


def current_code(run: Run | None, k: int) -> list[float]:
    """The latent sliders' code (k,): this session's, else the link's (?vae-z<d>-<run>=...), else 0."""
    code_key = key("vae", "code", run)
    if code_key not in st.session_state:
        z = [0.0] * k
        for d in range(k):
            try:
                z[d] = float(np.clip(float(st.query_params.get(_slider_key(run, d), 0.0)), -Z_RANGE, Z_RANGE))
            except ValueError:
                pass  # a mangled link: that coordinate starts at 0
        st.session_state[code_key] = z
    return list(st.session_state[code_key])


def set_code(run: Run | None, values: list[float]) -> None:
    """Move the latent sliders (the page's and the server's) to `values` (k,) and keep them in the page's link."""
    z = [float(np.clip(round(float(v), 2), -Z_RANGE, Z_RANGE)) for v in values]
    st.session_state[key("vae", "code", run)] = z
    for d, v in enumerate(z):
        name = _slider_key(run, d)
        if name in st.session_state:  # the server-side slider exists: it follows (to its 0.05 grid), and its
            st.session_state[name] = round(v * 20) / 20  # binding writes the link
            continue
        try:
            if v == 0.0:  # the default: left out of the link, as bound widgets do
                st.query_params.pop(name, None)
            else:
                st.query_params[name] = f"{v:g}"
        except StreamlitAPIException:  # still bound to a slider of this run: the binding writes it
            pass


def _server_sliders(snap: Any, run: Run | None, code: list[float]) -> list[float]:
    """The fallback: Streamlit sliders (decoded on the server once per release); returns the code they set."""
    k = snap.model.latent_dim
    dims = list(range(k))
    if k > MAX_SLIDERS:
        dims = st.multiselect("Dimensions with sliders (the others stay at 0)", list(range(k)),
                              default=list(range(MAX_SLIDERS)), key=key("vae", "dims", run), bind=BIND,
                              format_func=lambda d: f"z{d}")
    for d in dims:  # a slider made now starts where the in-browser ones were
        if _slider_key(run, d) not in st.session_state:  # (the code itself started from the link)
            st.session_state[_slider_key(run, d)] = round(code[d] * 20) / 20
    z = [0.0] * k
    left, right = st.columns([3, 2])
    with left:
        cols = st.columns(2)
        for n, d in enumerate(dims):
            with cols[n % 2]:
                # no value=: the session state set above is the start (both would make Streamlit warn)
                z[d] = st.slider(f"z{d}", -Z_RANGE, Z_RANGE, step=0.05, key=_slider_key(run, d), bind=BIND)
    with right:
        show_image(decode_png(snap.version, _round(z), snap.model), key("vae", "zimg", run))
    st.caption("Each slider sets one coordinate of the code z; the image is the decoder's mean p(x|z) for that code, "
               "decoded on the server when you let go. Codes near 0 (where the prior puts its mass) give the "
               "clearest digits; far out, the decoder has seen no training codes and the images blur.")
    return z


def smooth_vae_sliders(snap: Any, run: Any, code: list[float],
                       on_release: Callable[[list[float]], None] | None = None) -> list[float] | None:
    """The VAE's latent sliders decoded in the page on every input event, starting at `code` (k,); `on_release`
    gets the code where a released slider left them, which is also returned on that run (see browser_decoder)."""
    k = snap.model.latent_dim
    dims = range(min(k, MAX_BROWSER_SLIDERS))
    sliders = [{"index": d, "label": f"z{d}", "min": -Z_RANGE, "max": Z_RANGE, "step": SLIDER_STEP,
                "value": round(float(code[d]), 2)} for d in dims]
    released = browser_decoder(key=widgets.key("vae", "smooth", run), version=snap.version, model=snap.model,
                               sliders=sliders, base=[float(v) for v in code],
                               image_shape=tuple(snap.model.image_shape[1:]), on_release=on_release)
    wider = f" (the first {MAX_BROWSER_SLIDERS} of {k} dimensions)" if k > len(dims) else ""
    st.caption(f"Each slider sets one coordinate of the code z{wider}; the image is the decoder's mean p(x|z), "
               "computed in this browser, so it follows the thumb while you drag. Codes near 0 (where the prior puts "
               "its mass) give the clearest digits; far out, the decoder has seen no training codes and the images "
               "blur. If no image appears, turn on 'Server-side sliders'.")
    return released


def _sliders(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    k = snap.model.latent_dim
    code = current_code(run, k)
    b1, b2, b3 = st.columns([1, 1, 2])
    b1.button("All to 0", key=key("vae", "zero", run), on_click=set_code, args=(run, [0.0] * k))
    b2.button("Draw z from the prior", key=key("vae", "draw", run), on_click=set_code,
              args=(run, torch.randn(k).clamp(-Z_RANGE, Z_RANGE).tolist()),
              help="Set the sliders to a draw from N(0, I).")
    server = b3.toggle("Server-side sliders", key="vae-server", bind=BIND,
                       help="The image is decoded in this browser while you drag (its weights were sent once). Turn "
                            "this on if no image appears there: Streamlit sliders, decoded on the server on release.")
    if server:
        z = _server_sliders(snap, run, code)
        if [round(v, 2) for v in z] != [round(v, 2) for v in code]:
            st.session_state[key("vae", "code", run)] = z  # the in-browser sliders take over from here
    else:
        released = smooth_vae_sliders(snap, run, code, on_release=functools.partial(set_code, run))
        if released is not None and [round(v, 2) for v in released] != current_code(run, k):
            set_code(run, released)  # (the callback normally took it already)
    step_caption(snap, run)


def _manifold(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    k = snap.model.latent_dim
    c1, c2, c3, c4 = st.columns(4)
    i = c1.selectbox("Horizontal: dimension", list(range(k)), index=0, key=key("vae", "mi", run), bind=BIND,
                     format_func=lambda d: f"z{d}")
    j = c2.selectbox("Vertical: dimension", list(range(k)), index=1, key=key("vae", "mj", run), bind=BIND,
                     format_func=lambda d: f"z{d}")
    n = c3.slider("Images per side", 5, 20, 12, key=key("vae", "mn", run), bind=BIND)
    span = c4.slider("Range ±", 0.5, 4.0, 2.0, 0.25, key=key("vae", "mspan", run), bind=BIND)
    quantiles = k == 2 and st.checkbox("Space the values as normal quantiles (Kingma & Welling's figure 4)",
                                       value=True, key=key("vae", "mq", run), bind=BIND)
    if i == j:
        st.warning("Choose two different dimensions.")
        return
    png = manifold_png(snap.version, i, j, n, span, quantiles, snap.model)
    values = manifold_values(n, span, quantiles).numpy()  # (n,) the grid's coordinates along z_i and z_j
    left, right = st.columns([3, 2])
    with left, st.container(key=key("vae", "manifold", run)):
        # one chart key per grid: a click on an old grid must not pick a tile of a new one
        event = st.plotly_chart(manifold_figure(png, values, (f"z{i}", f"z{j}")), on_select="rerun",
                                selection_mode="points", key=key("vae", f"mclick-{i}-{j}-{n}-{span}-{int(quantiles)}",
                                                                 run))
    with right:
        tile = clicked_tile(event.get("selection") if event else None, n)
        if tile is None:
            st.caption("Click a tile to decode its code, larger, here.")
        else:
            z = manifold_grid(k, i, j, n, span, quantiles=quantiles)[tile]  # (k,)
            show_image(decode_png(snap.version, _round(z), snap.model, 210), key("vae", "manifold-img", run),
                       caption=f"tile {tile // n + 1}, {tile % n + 1} (row, column): z{i} = {float(z[i]):.2f}, "
                               f"z{j} = {float(z[j]):.2f}")
            if st.button("Move the latent sliders here", key=key("vae", "mto-sliders", run), on_click=set_code,
                         args=(run, z.tolist()), help="Set the 'Latent sliders' tab to this code (others at 0)."):
                st.rerun()  # the whole page: the sliders' tab is another fragment
    others = "" if k == 2 else " with every other dimension held at 0"
    st.caption(f"The decoder's images on a grid of codes: z{i} grows left to right, z{j} bottom to top{others}. "
               "Neighbouring codes give similar digits: the decoder has learned a smooth map from codes to images.")
    step_caption(snap, run)


def _interpolation(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    data, note = widgets.test_data(run)
    n_test = data.x_test.shape[0]
    c1, c2, c3 = st.columns(3)
    a = int(c1.number_input("From test image", 0, n_test - 1, 0, key=key("vae", "ia", run), bind=BIND))
    b = int(c2.number_input("To test image", 0, n_test - 1, 1, key=key("vae", "ib", run), bind=BIND))
    method = c3.radio("Path", ["linear", "spherical"], horizontal=True, key=key("vae", "imethod", run), bind=BIND)
    t = st.slider("Position t along the path", 0.0, 1.0, 0.5, 0.05, key=key("vae", "it", run), bind=BIND)
    ends, strip, mu_a, mu_b = interpolation_strip(snap.version, data.name, a, b, method, 11, snap.model, data)
    path = slerp if method == "spherical" else lerp
    z = path(torch.tensor(mu_a), torch.tensor(mu_b), t)
    left, right = st.columns([1, 2])
    with left:
        show_image(ends, key("vae", "interp-ends", run), caption=f"test images {a} and {b}")
    with right:
        show_image(decode_png(snap.version, _round(z), snap.model, 210), key("vae", "interp-img", run),
                   caption=f"decoded at t = {t:.2f}")
    show_image(strip, key("vae", "interp-strip", run), caption="t = 0, 0.1, ..., 1")
    st.caption("Both test images are encoded to their means mu, and the codes between them are decoded. "
               "One digit turns into the other through images that stay digit-like, because the path runs "
               "through regions of the latent space that the encoder fills.")
    if note:
        st.caption(note)
    step_caption(snap, run)


def _latent_map(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    data, note = widgets.test_data(run)
    n = min(widgets.TEST_IMAGES, data.x_test.shape[0])
    coords, labels, ratio = latent_map(snap.version, data.name, n, snap.model, data)
    if ratio:
        xt, yt = f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%})"
    else:
        xt, yt = "z0", "z1"
    fig = map_figure(coords, labels, data.classes, (xt, yt), latent_plane=not ratio)
    left, right = st.columns([3, 1])
    with left:
        event = st.plotly_chart(fig, key=key("vae", "map", run), on_select="rerun", selection_mode="points")
    with right:  # click to decode: a dot decodes its test digit's code, the plane (2-D latents) any code
        picked = clicked_code(event.selection if event else None,
                              test_means(snap.version, data.name, n, snap.model, data)[0])
        if picked is None:
            st.caption("Click a dot" + (" or anywhere in the plane" if not ratio else "") + " to decode its code.")
        else:
            z, index = picked
            where = f"test image {index} ({data.classes[int(labels[index])]})" if index is not None else "the plane"
            show_image(decode_png(snap.version, _round(z), snap.model, 210), key("vae", "map-img", run),
                       caption=f"decoded at z = ({', '.join(f'{v:.2f}' for v in z[:4])}"
                               f"{', ...' if len(z) > 4 else ''}) from {where}")
    pca = (f" projected to 2-D by PCA (the {snap.model.latent_dim}-D means' two main directions)" if ratio else "")
    st.caption(f"Where the encoder puts {n:,} test images: each dot is a mean mu(x){pca}, coloured by its label. "
               "Digits of one class gather in one region although the VAE never saw the labels.")
    if note:
        st.caption(note)
    step_caption(snap, run)


def _reconstructions(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    data, note = widgets.test_data(run)
    n_test = data.x_test.shape[0]
    c1, c2 = st.columns(2)
    n = c2.slider("Images", 8, 32, 16, 8, key=key("vae", "rn", run), bind=BIND)
    start = int(c1.number_input("First test image", 0, max(0, n_test - n), 0, key=key("vae", "rstart", run), bind=BIND))
    originals, recon = reconstructions(snap.version, data.name, start, n, snap.model, data)
    left, right = st.columns(2)
    with left:
        show_image(originals, key("vae", "recon-orig", run), caption="test images")
    with right:
        show_image(recon, key("vae", "recon-img", run), caption="reconstructions decode(mu(x))")
    st.caption("Each test image is encoded to its mean code and decoded again. What the reconstructions lose "
               "(thin strokes, odd shapes) is what the few latent dimensions could not keep.")
    if note:
        st.caption(note)
    step_caption(snap, run)


# the VAE's exploration tabs, each panel(model, run, step); dashboard.explore.panel adds "Your digit" (draw_digit)
PANELS = {"Latent sliders": _sliders, "Manifold": _manifold, "Interpolation": _interpolation,
          "Latent map": _latent_map, "Reconstructions": _reconstructions}
