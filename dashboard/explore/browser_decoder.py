"""Smooth dragging: a decoder that runs in the browser (components v2 + dashboard/explore/components/latent_decoder.js), so
the image follows a latent slider on every input event instead of once on release.

Streamlit's slider sends its value when the thumb is let go (1.49+), and a server round trip per position would cost
far more than a frame anyway. The VAE's decoder (Linear-ReLU-Linear, then sigmoid or the seed's tanh + 0.5) and the
RBM's p(v|h) = sigmoid(W^T h + b) are small enough (a 784 x 512 product: well under a millisecond in JavaScript) to
run in the page. Their float32 weights go to the page once per weights version and browser session (base64 in
the component's data; the page asks again if it lost them); the page then decodes in float64 from those same
float32 numbers, so its images agree with genlib's `decode` to ~1e-6 (tests/browser/test_browser_decoder.py).
This module knows only the component and the model contract's `export_decoder()`; the sliders around it are the
explorers' (dashboard/explore/vae.py, rbm.py).
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
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


def _layer(layer: Any) -> dict[str, Any]:
    """A DenseLayer's weight (out, in) and bias (out,) as the page wants them: W^T input-major (in, out)."""
    n_out, n_in = layer.weight.shape
    return {"n_in": int(n_in), "n_out": int(n_out), "act": layer.act, "wt": _b64(layer.weight.t()),
            "b": _b64(layer.bias)}


@st.cache_data(max_entries=8, show_spinner=False)
def network_payload(version: str, _model: Any) -> dict[str, Any]:
    """The page's copy of a model's decoder (genlib's LatentModel.export_decoder: ~1.6 MB of float32 as base64 for a
    512-wide VAE), per weights version."""
    net = _model.export_decoder()
    if net is None:
        raise ValueError(f"{type(_model).__name__} exports no dense decoder: it cannot be decoded in the browser")
    return {"layers": [_layer(layer) for layer in net.layers], "out": net.out}


@st.cache_data(max_entries=32, show_spinner=False)
def payload_fits(version: str, _model: Any) -> tuple[bool, str]:
    """Whether this model's decoder may be sent to a browser session (genlib.work_budget's cap on bytes), and the
    page's note when it may not: a 4,096 x 4,096 RBM would send 89 MB to every session that opens its sliders."""
    from genlib.work_budget import decoder_fits

    net = _model.export_decoder()
    if net is None:
        return False, "This model's decoder cannot run in the browser."
    return decoder_fits([(int(layer.weight.shape[1]), int(layer.weight.shape[0])) for layer in net.layers])


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


def _release(sent: Any) -> tuple[list[float], int] | None:
    """A release the page sent, (its inputs, its number), or None (no release, or not of that form)."""
    if not isinstance(sent, dict) or not isinstance(sent.get("values"), list) or not isinstance(sent.get("seq"), int):
        return None
    return [float(v) for v in sent["values"]], sent["seq"]


def _released(key: str, on_release: Callable[[list[float]], None] | None) -> None:
    """The page let go of a slider: record its number (this run's `ack`) and hand its inputs to `on_release` before
    the script runs, so this run already sends them back (sending the old ones would move the page's sliders back)."""
    release = _release((st.session_state.get(key) or {}).get("release"))
    if release is None:
        return
    values, seq = release
    st.session_state[f"{key}--ack"] = max(seq, st.session_state.get(f"{key}--ack", 0))
    if on_release is not None:
        on_release(values)


def browser_decoder(*, key: str, version: str, model: Any, sliders: list[dict[str, Any]],
                    base: list[float], image_shape: tuple[int, int] = (28, 28), width_px: int = 280,
                    on_release: Callable[[list[float]], None] | None = None) -> list[float] | None:
    """Sliders and an image decoded in the page. `sliders`: [{"index", "label", "min", "max", "step", "value"}]
    over the inputs `base` (the full input vector of `model.export_decoder()`: the VAE's latent z, the RBM's hidden
    probabilities).

    The weights travel only when this session has not sent `version` yet; slider positions stay in the page across
    reruns until `base` or the sliders' values sent from here change. When a slider is let go (once per release,
    never while dragging) the page sends the full input vector: `on_release` gets it before the script runs, and
    this call returns it on that run (else None)."""
    fits, why = payload_fits(version, model)
    if not fits:  # never encode or send it: say so, and point to the server-side sliders
        st.info(f"{why} Turn on 'Server-side sliders'.", icon=":material/speed:")
        return None
    sent_key = f"{key}--sent-version"
    send = st.session_state.get(sent_key) != version
    data = {
        "uid": key, "version": version, "shape": list(image_shape), "px": int(width_px),
        "base": [float(v) for v in base], "sliders": sliders,
        "reset": json.dumps([[round(float(v), 4) for v in base], [s["value"] for s in sliders]]),
        "weights": network_payload(version, model) if send else None,
        # the last release this session has taken: the page ignores the resets of runs made before its latest one;
        # a new session (the server restarted under an open page) numbers from 0 again, and `session` says so
        "ack": st.session_state.get(f"{key}--ack", 0),
        "session": st.session_state.setdefault(f"{key}--session", secrets.token_hex(8)),
    }
    result = _component()(key=key, data=data, on_need_change=functools.partial(_forget_sent, sent_key),
                          on_release_change=functools.partial(_released, key, on_release))
    st.session_state[sent_key] = version
    release = _release(result.get("release") if result is not None else None)
    return release[0] if release is not None and len(release[0]) == len(base) else None


SLIDER_STEP = 0.01  # fine steps: a drag passes through ~600 positions of [-3, 3], each one decoded
