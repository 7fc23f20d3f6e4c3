"""Smooth dragging: a decoder that runs in the browser (components v2 + dashboard/explore/components/latent_decoder.js), so
the image follows a latent slider on every input event instead of once on release.

Streamlit's slider sends its value when the thumb is let go (1.49+), and a server round trip per position would cost
far more than a frame anyway. The VAE's decoder (Linear-ReLU-Linear, then sigmoid or the seed's tanh + 0.5) and the
RBM's p(v|h) = sigmoid(W^T h + b) are small enough (a 784 x 512 product: well under a millisecond in JavaScript) to
run in the page. Their float32 weights go to the page once per weights version and browser session (base64 in
the component's data; the page asks again if it lost them); the page then decodes in float64 from those same
float32 numbers, so its images agree with genlib's `decode` to ~1e-6 (tests/browser/test_browser_decoder.py).
"""

from __future__ import annotations

import base64
import functools
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import streamlit as st
import torch

JS_PATH = Path(__file__).resolve().parent / "components" / "latent_decoder.js"
COMPONENT_NAME = "genlib_latent_decoder"
CSS = """
.genlib-decoder { display: flex; gap: 1.5rem; align-items: flex-start; flex-wrap: wrap; font-family: var(--st-font); }
.genlib-decoder .controls { display: grid; grid-template-columns: repeat(2, minmax(12rem, 1fr)); gap: 0.2rem 1.2rem;
  flex: 1 1 24rem; }
.genlib-decoder .row { display: flex; align-items: center; gap: 0.5rem; color: var(--st-text-color); }
.genlib-decoder .name { width: 3.5rem; font-size: 0.85rem; }
.genlib-decoder .value { width: 3rem; font-size: 0.85rem; font-variant-numeric: tabular-nums; text-align: right; }
.genlib-decoder input[type=range] { flex: 1; accent-color: var(--st-primary-color); }
.genlib-decoder canvas { image-rendering: pixelated; border-radius: 0.25rem; background: #000; }
"""


@functools.cache
def _component() -> Any:
    """The registered component (once per process: registering again would only log a warning)."""
    from streamlit.components.v2 import component

    return component(COMPONENT_NAME, js=JS_PATH.read_text(), css=CSS)


# ---- the networks, as the page receives them ----

def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()).decode()


def _layer(weight: torch.Tensor, bias: torch.Tensor, act: str) -> dict[str, Any]:
    """A torch Linear's weight (out, in) and bias (out,) as the page wants them: W^T input-major (in, out)."""
    n_out, n_in = weight.shape
    return {"n_in": int(n_in), "n_out": int(n_out), "act": act, "wt": _b64(weight.t()), "b": _b64(bias)}


def vae_network(model: Any) -> dict[str, Any]:
    """The VAE's decoder z (k) -> Linear-ReLU-Linear -> mean image (D), as layers for the page."""
    first, last = model.decoder[0], model.decoder[2]  # genlib.models.vae: Sequential(Linear, ReLU, Linear)
    if not (isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)):
        raise ValueError("the browser decoder expects the VAE decoder Sequential(Linear, ReLU, Linear)")
    out = "sigmoid" if model.config.decoder == "bernoulli" else "tanh_half"
    return {"layers": [_layer(first.weight, first.bias, "relu"), _layer(last.weight, last.bias, "none")], "out": out}


def rbm_network(model: Any) -> dict[str, Any]:
    """The RBM's p(v|h) = sigmoid(W^T h + b): one layer from the hidden probabilities (n_h) to the pixels (n_v)."""
    w = model.W.detach()  # (n_h, n_v): as Linear(n_h -> n_v) its weight is W^T (n_v, n_h)
    return {"layers": [_layer(w.t(), model.v_bias, "none")], "out": "sigmoid"}


@st.cache_data(max_entries=8, show_spinner=False)
def network_payload(version: str, kind: str, _model: Any) -> dict[str, Any]:
    """The page's copy of a model's decoder (~1.6 MB of float32 as base64 for a 512-wide VAE), per weights version."""
    return vae_network(_model) if kind == "vae" else rbm_network(_model)


def decode_payload(net: dict[str, Any], inputs: np.ndarray) -> np.ndarray:
    """What the page computes, in numpy float64 (inputs (n_in,) -> means (n_out,)): a reference for tests."""
    x = np.asarray(inputs, dtype=np.float64)
    for layer in net["layers"]:
        wt = np.frombuffer(base64.b64decode(layer["wt"]), dtype="<f4").reshape(layer["n_in"], layer["n_out"])
        b = np.frombuffer(base64.b64decode(layer["b"]), dtype="<f4")
        x = x @ wt.astype(np.float64) + b
        if layer["act"] == "relu":
            x = np.maximum(x, 0.0)
    if net["out"] == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    return np.clip(np.tanh(x) + 0.5, 0.0, 1.0)


# ---- the element ----

def _forget_sent(sent_key: str) -> None:
    """The page asked for weights it does not hold (a reload, a new tab): send them again on this run."""
    st.session_state.pop(sent_key, None)


def _released(key: str, on_release: Callable[[list[float]], None]) -> None:
    """The page let go of a slider: hand its inputs to `on_release` before the script runs, so this run already
    sends them back (sending the old ones would move the page's sliders back)."""
    values = (st.session_state.get(key) or {}).get("release")
    if isinstance(values, list):
        on_release([float(v) for v in values])


def browser_decoder(*, key: str, version: str, kind: str, model: Any, sliders: list[dict[str, Any]],
                    base: list[float], image_shape: tuple[int, int] = (28, 28), width_px: int = 280,
                    on_release: Callable[[list[float]], None] | None = None) -> list[float] | None:
    """Sliders and an image decoded in the page. `sliders`: [{"index", "label", "min", "max", "step", "value"}]
    over the inputs `base` (the full input vector: a latent z for kind "vae", hidden probabilities for "rbm").

    The weights travel only when this session has not sent `version` yet; slider positions stay in the page across
    reruns until `base` or the sliders' values sent from here change. When a slider is let go (once per release,
    never while dragging) the page sends the full input vector: `on_release` gets it before the script runs, and
    this call returns it on that run (else None)."""
    if kind not in ("vae", "rbm"):
        raise ValueError(f"kind must be 'vae' or 'rbm', got {kind!r}")
    sent_key = f"{key}--sent-version"
    send = st.session_state.get(sent_key) != version
    data = {
        "uid": key, "version": version, "shape": list(image_shape), "px": int(width_px),
        "base": [float(v) for v in base], "sliders": sliders,
        "reset": json.dumps([[round(float(v), 4) for v in base], [s["value"] for s in sliders]]),
        "weights": network_payload(version, kind, model) if send else None,
    }
    result = _component()(key=key, data=data, on_need_change=functools.partial(_forget_sent, sent_key),
                          on_release_change=(functools.partial(_released, key, on_release) if on_release
                                             else lambda: None))
    st.session_state[sent_key] = version
    released = result.get("release") if result is not None else None
    return [float(v) for v in released] if isinstance(released, list) and len(released) == len(base) else None


# ---- the explorers' panels (placed by explore_vae.render and explore_rbm.render) ----

MAX_BROWSER_SLIDERS = 16  # wider codes get sliders for their first 16 dimensions (the rest stay at 0)
SLIDER_STEP = 0.01  # fine steps: a drag passes through ~600 positions of [-3, 3], each one decoded


def smooth_vae_sliders(snap: Any, run: Any, code: list[float],
                       on_release: Callable[[list[float]], None] | None = None) -> list[float] | None:
    """The VAE's latent sliders decoded in the page on every input event, starting at `code` (k,); `on_release`
    gets the code where a released slider left them, which is also returned on that run (see browser_decoder)."""
    from dashboard.explore import widgets
    from dashboard.explore.vae import Z_RANGE

    k = snap.model.latent_dim
    dims = range(min(k, MAX_BROWSER_SLIDERS))
    sliders = [{"index": d, "label": f"z{d}", "min": -Z_RANGE, "max": Z_RANGE, "step": SLIDER_STEP,
                "value": round(float(code[d]), 2)} for d in dims]
    released = browser_decoder(key=widgets.key("vae", "smooth", run), version=snap.version, kind="vae",
                               model=snap.model, sliders=sliders, base=[float(v) for v in code],
                               image_shape=tuple(snap.model.image_shape[1:]), on_release=on_release)
    wider = f" (the first {MAX_BROWSER_SLIDERS} of {k} dimensions)" if k > len(dims) else ""
    st.caption(f"Each slider sets one coordinate of the code z{wider}; the image is the decoder's mean p(x|z), "
               "computed in this browser, so it follows the thumb while you drag. Codes near 0 (where the prior puts "
               "its mass) give the clearest digits; far out, the decoder has seen no training codes and the images "
               "blur. If no image appears, turn on 'Server-side sliders'.")
    return released


def _unit_param(run: Any, unit: int) -> str:
    """The URL parameter of hidden unit `unit`'s in-browser clamp slider (rbm-sh<u>-<run>)."""
    from dashboard.explore import widgets

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
    from dashboard.explore import widgets
    from dashboard.explore.rbm import MAX_CLAMPED, hidden_base
    from dashboard.share import BIND

    snap = widgets.current(run, widgets.local_snapshot(model, step))
    data, note = widgets.test_data(run)
    n_hidden = snap.model.W.shape[0]
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
    browser_decoder(key=widgets.key("rbm", "smooth", run), version=snap.version, kind="rbm", model=snap.model,
                    sliders=sliders, base=start, image_shape=shape,
                    on_release=functools.partial(_link_units, run, tuple(units), tuple(h)))
    st.caption("p(v|h) = sigmoid(W^T h + b), computed in this browser as you drag: each slider sets one hidden "
               "unit's probability, and its filter fades in or out of the image continuously. If no image appears, "
               "turn on 'Server-side sliders'.")
    if note:
        st.caption(note)
    widgets.step_caption(snap, run)
