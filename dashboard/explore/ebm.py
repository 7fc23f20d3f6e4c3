"""EBM explorer: a Langevin chain scrubbed step by step with each image's energy beside it, the replay buffer, and an
RBM's free energy sampled by the same Langevin chain next to its Gibbs chain (an RBM is an energy-based model too).

Layout only: each chain is one call into genlib.sampling.langevin, computed once per setting and cached (frames as uint8,
energies as floats), so the step slider only picks a frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from dashboard import work_meter
from dashboard.explore import widgets
from dashboard import state
from dashboard.run_images import grid_png
from dashboard.explore.widgets import key, step_caption
from genlib.data import binarize, to_unit
from genlib.images import png_bytes, upscale
from genlib.sampling.langevin import free_energy_fn, langevin_chain, trajectory_energies
from genlib.runs.store import Run
from genlib.sampling.bernoulli import random_binary
from genlib.sampling.gibbs import gibbs_chain
from genlib.work_budget import (forward_flops, free_energy_flops, gibbs_step_flops, langevin_step_flops,
                                plan_chains)

MAX_FRAMES = 200  # a chain records at most this many frames (every = steps // MAX_FRAMES)
CHAIN_COUNTS = (1, 4, 8)
THUMB_PX = 112  # one chain's image on screen (28 px x 4)
REPLAY_PX = 560
STARTS = {"noise": "uniform noise", "test": "test images"}


def _start_images(start: str, first: int, chains: int, seed: int, data: Any) -> torch.Tensor:
    """Chains' start (chains, 1, 28, 28) in [0, 1]: uniform noise, or test images first, first + 1, ..."""
    if start == "noise":
        return torch.rand(chains, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    idx = [(first + i) % data.x_test.shape[0] for i in range(chains)]
    return to_unit(data.x_test[idx]).float()


def _as_frames(trajectory: torch.Tensor) -> np.ndarray:
    """(T, B, 1, 28, 28) in [0, 1] -> (T, B, 28, 28) uint8."""
    return trajectory[:, :, 0].clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


# ---- cached computations ----

@st.cache_data(max_entries=16, show_spinner="Running the Langevin chain…")
def ebm_chain(version: str, dataset: str, start: str, first: int, chains: int, steps: int, step_size: float,
              noise: float, seed: int, _model: Any, _data: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Frames (T, B, 28, 28) uint8, energies (T, B) and the steps between frames of `chains` Langevin chains."""
    x0 = _start_images(start, first, chains, seed, _data)  # (B, 1, 28, 28)
    every = max(1, steps // MAX_FRAMES)
    chain = _model.langevin(x0, steps, step_size=step_size, noise=noise, every=every, return_trajectory=True,
                            generator=torch.Generator().manual_seed(seed + 1))
    energies = trajectory_energies(_model.energy, chain.trajectory)  # (T, B)
    return _as_frames(chain.trajectory), energies.numpy(), every


@st.cache_data(max_entries=16, show_spinner="Running the Langevin and Gibbs chains…")
def rbm_chains(version: str, dataset: str, start: str, first: int, chains: int, steps: int, step_size: float,
               noise: float, clip: float, seed: int, _rbm: Any, _data: Any) -> dict[str, Any]:
    """The same start run by Langevin on the RBM's free energy and by block Gibbs sampling: frames (T, B, 28, 28),
    free energies (T, B) of each, and the steps between frames."""
    x0 = _start_images(start, first, chains, seed, _data)  # (B, 1, 28, 28)
    g = torch.Generator().manual_seed(seed + 1)
    if start == "test":
        v0 = binarize(x0.reshape(chains, -1), "threshold")  # (B, 784) in {0, 1}, as Gibbs sampling needs
    else:
        v0 = random_binary(chains, 784, generator=g)  # (B, 784) random binary pixels on the CPU, as g
    every = max(1, steps // MAX_FRAMES)
    energy = free_energy_fn(_rbm)
    lang = langevin_chain(energy, v0.reshape(x0.shape), steps, step_size=step_size, noise=noise, clip=clip,
                          generator=g, every=every, return_trajectory=True).trajectory  # (T, B, 1, 28, 28)
    with torch.no_grad():
        gibbs = gibbs_chain(_rbm, v0, steps, generator=g, every=every, return_trajectory=True)  # (T, B, 784)
    gibbs = gibbs.reshape(gibbs.shape[0], chains, 1, 28, 28)
    return {"every": every,
            "langevin": (_as_frames(lang), trajectory_energies(energy, lang).numpy()),
            "gibbs": (_as_frames(gibbs), trajectory_energies(energy, gibbs).numpy())}


@st.cache_data(max_entries=2048, show_spinner=False)
def thumb_png(frame: bytes) -> bytes:
    """One 28x28 uint8 image (as raw bytes, hashable) upscaled to THUMB_PX, as PNG."""
    img = np.frombuffer(frame, dtype=np.uint8).reshape(28, 28)
    return png_bytes(upscale(img, THUMB_PX // 28))


@st.cache_data(max_entries=16, show_spinner=False)
def energy_flops(version: str, _model: Any) -> float:
    """FLOPs of one image's energy E(x) (PyTorch's counter on one forward pass), per weights version."""
    return forward_flops(_model.energy, torch.zeros(1, 1, 28, 28, device=_model.device))


def _within_budget(k: dict[str, Any], step_flops: float, setting: tuple) -> bool:
    """Fit the knobs' chains x steps under the per-setting work cap (genlib.work_budget), in place; say so when
    it cut them (a wide EBM's 8 chains x 1,000 steps can be 10 TFLOP). False when this browser's share of the
    server, or the server's, is spent for now (dashboard.work_meter says when it can run)."""
    plan = plan_chains(step_flops, k["chains"], k["steps"], max_frames=MAX_FRAMES)
    if plan.capped:
        st.info(plan.note, icon=":material/speed:")
    k["chains"], k["steps"] = plan.chains, plan.steps
    return work_meter.allowed((*setting, *sorted(k.items())), plan.flops)


# ---- building blocks ----

def _row(frames: np.ndarray, energies: np.ndarray, container_key: str, label: str = "E") -> None:
    """Images (B, 28, 28) side by side, each with its energy printed under it."""
    with st.container(key=container_key):
        st.image([thumb_png(f.tobytes()) for f in frames], caption=[f"{label} = {e:.3f}" for e in energies],
                 output_format="PNG", width=THUMB_PX)


def _energy_figure(energies: np.ndarray, every: int, t: int, title: str) -> go.Figure:
    """Each chain's energy (T, B) along the chain, with a marker at the shown step t."""
    steps = [i * every for i in range(energies.shape[0])]
    fig = go.Figure()
    for b in range(energies.shape[1]):
        fig.add_trace(go.Scatter(x=steps, y=energies[:, b].tolist(), mode="lines", name=f"chain {b + 1}"))
    fig.add_vline(x=t, line_dash="dot", line_color="orange")
    fig.update_layout(height=240, margin=dict(l=10, r=10, t=30, b=10), title=title, xaxis_title="step",
                      yaxis_title="energy", showlegend=energies.shape[1] <= 8)
    return fig


def _frame_slider(name: str, steps: int, every: int, run: Run | None, label: str) -> int:
    """A slider over the chain's recorded steps; jumps to the end when the chain changes length."""
    frame_key = key("ebm", name, run)
    frame = st.session_state.get(frame_key, steps)
    if frame > steps or frame % every:
        st.session_state[frame_key] = steps
    widgets.init_state(frame_key, steps)
    return st.slider(label, 0, steps, step=every, key=frame_key,
                     help="Scrub along the chain: 0 is the start, the right end the last step.")


def _chain_knobs(prefix: str, run: Run | None, data: Any, defaults: tuple[float, float]) -> dict[str, Any]:
    """The chain's start, count, length, step size, noise and seed."""
    def k(name: str) -> str:
        return key("ebm", prefix + name, run)

    c1, c2, c3 = st.columns(3)
    start = c1.radio("Start from", list(STARTS), format_func=STARTS.get, key=k("start"), horizontal=True)
    first = int(c2.number_input("First test image", 0, data.x_test.shape[0] - 1, 0, key=k("first"),
                                disabled=start == "noise", help="Chain i starts from test image first + i."))
    chains = c3.select_slider("Chains", CHAIN_COUNTS, value=4, key=k("chains"))
    c1, c2, c3, c4 = st.columns([3, 3, 3, 2])
    steps = c1.slider("Number of steps", 10, 1000, 500, 10, key=k("steps"),
                      help="Length of the chain. From noise, digits need a few hundred steps (500 by default).")
    step_size = c2.slider("Step size", 0.0, 50.0, float(defaults[0]), 0.5, key=k("lr"),
                          help="How far each step moves downhill: step size x the (clipped) gradient of the energy.")
    noise = c3.slider("Noise", 0.0, 0.1, float(defaults[1]), 0.001, format="%.3f", key=k("noise"),
                      help="Standard deviation of the Gaussian noise added at each step. With none, the chain is "
                           "plain gradient descent and stops in the nearest valley.")
    seed = int(c4.number_input("Seed", 0, 2**31 - 1, 0, key=k("seed")))
    return dict(start=start, first=first, chains=chains, steps=steps, step_size=step_size, noise=noise, seed=seed)


# ---- panels ----

def _langevin(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    data, note = widgets.test_data(run)
    cfg = snap.model.config
    k = _chain_knobs("l", run, data, (cfg.step_size, cfg.noise))
    forward = energy_flops(snap.version, snap.model)
    # a step, and its recorded frame's energy at most
    if not _within_budget(k, langevin_step_flops(forward) + forward, ("ebm-langevin", snap.version, data.name)):
        return
    frames, energies, every = ebm_chain(snap.version, data.name, k["start"], k["first"], k["chains"], k["steps"],
                                        k["step_size"], k["noise"], k["seed"], snap.model, data)
    t = _frame_slider("lframe", k["steps"], every, run, "Langevin step")
    i = min(t // every, frames.shape[0] - 1)
    left, right = st.columns([3, 2])
    with left:
        _row(frames[i], energies[i], key("ebm", "chain-img", run))
        st.caption(f"The chains after {t} of {k['steps']} steps; E is each image's energy (lower = more likely). "
                   f"Gradients are clipped to ±{cfg.grad_clip:g} per pixel, so a step moves a pixel by at most "
                   f"{k['step_size'] * cfg.grad_clip:.2f}.")
    with right:
        st.plotly_chart(_energy_figure(energies, every, t, "Energy along each chain"),
                        key=key("ebm", "chain-energy", run), config={"displayModeBar": False})
    st.caption("Langevin dynamics: every step moves each pixel a little downhill on the energy E(x), then adds a "
               "little Gaussian noise. From noise the energy falls fast, then levels off as the image settles into "
               "a valley of E, which after training looks like a digit. Started from test digits, the chain "
               "should stay near them: real images already sit in low-energy valleys.")
    if note:
        st.caption(note)
    step_caption(snap, run)


def _replay(model: Any, run: Run | None, step: int) -> None:
    path = run.path / "replay.png" if run is not None else None
    if path is None or not path.exists():
        st.info("The replay buffer's grid appears a few seconds after training starts.")
        return
    try:
        png = grid_png(str(path), path.stat().st_mtime_ns, REPLAY_PX)
    except OSError:
        st.caption("The grid is being replaced; it reappears in a moment.")
        return
    widgets.show_image(png, key("ebm", "replay-img", run), caption="64 chains of the replay buffer (the same slots "
                       "every time), as the training worker saved them")
    st.caption("Training needs samples of the model to raise their energy. Instead of starting every Langevin chain "
               "from noise, it keeps the last samples in a replay buffer and continues from them (95% of chains; 5% "
               "restart from noise). Each chain thus runs far longer than the few steps of one batch, so the buffer "
               "shows what long chains find: it turns from noise into digits as the model learns.")


def _rbm_compare(model: Any, run: Run | None, step: int) -> None:
    runs = [r for r in state.get_store().list() if r.info().get("model") == "rbm"]
    if not runs:
        st.info("No RBM run yet: train one on the RBM page (a minute is enough to see digits), then come back to "
                "sample it here with the same Langevin chain.")
        return
    chosen = st.selectbox("RBM run", [r.id for r in runs], key=key("ebm", "rbm-run", run),
                          help="An RBM's free energy F(v) is its energy once the hidden units are summed out.")
    rbm_run = next(r for r in runs if r.id == chosen)
    try:
        snap = widgets.load_snapshot(rbm_run)
    except Exception as e:  # noqa: BLE001 - CheckpointError, or a file replaced while reading
        st.warning(f"The weights of run {rbm_run.id} could not be loaded: {e}")
        return
    if snap is None:
        st.info("This RBM has saved no weights yet; they appear a few seconds after its training starts.")
        return
    data, note = widgets.test_data(rbm_run)
    k = _chain_knobs("r", run, data, (10.0, 0.005))
    n_v, n_h = snap.model.n_visible, snap.model.latent_dim
    # a Langevin step on F(v), a Gibbs step, and the recorded frames' F of both chains at most
    if not _within_budget(k, langevin_step_flops(free_energy_flops(n_v, n_h)) + gibbs_step_flops(n_v, n_h)
                          + 2 * free_energy_flops(n_v, n_h), ("ebm-rbm", snap.version, data.name)):
        return
    clip = 0.03
    out = rbm_chains(snap.version, data.name, k["start"], k["first"], k["chains"], k["steps"], k["step_size"],
                     k["noise"], clip, k["seed"], snap.model, data)
    every = out["every"]
    t = _frame_slider("rframe", k["steps"], every, run, "Step of both chains")
    i = min(t // every, out["langevin"][0].shape[0] - 1)
    left, right = st.columns([3, 2])
    for name, title, label in (("langevin", "Langevin dynamics on the free energy F(v)", "F"),
                               ("gibbs", "Block Gibbs sampling, h ~ p(h|v), v ~ p(v|h) (shown: p(v|h))", "F")):
        frames, energies = out[name]
        with left:
            st.markdown(f"**{title}**")
            _row(frames[i], energies[i], key("ebm", f"rbm-{name}", run), label)
        with right:
            st.plotly_chart(_energy_figure(energies, every, t, f"F along the {name.capitalize()} chains"),
                            key=key("ebm", f"rbm-{name}-energy", run), config={"displayModeBar": False})
    st.caption("An RBM is an energy-based model: summing out its hidden units gives the free energy "
               "F(v) = −b·v − Σ softplus(Wv + c), and p(v) ∝ exp(−F(v)). F is defined for grey pixels too, so the "
               "EBM's Langevin chain runs on it unchanged (gradient clipped to ±0.03). Gibbs sampling instead uses "
               "the RBM's structure: it draws all hidden units, then all pixels, exactly from their conditionals. "
               "Both chains start from the same binary image; compare how fast F falls and where each ends. F is "
               "concave in v, so Langevin drifts to black-and-white images; with little noise it stops in the "
               "nearest valley, while Gibbs keeps exploring.")
    if note:
        st.caption(note)
    st.caption(f"RBM weights of run {rbm_run.id}, step {snap.step:,}.")


# the EBM's exploration tabs, each panel(model, run, step); dashboard.explore.panel adds "Your digit" (draw_digit)
PANELS = {"Langevin chain": _langevin, "Replay buffer": _replay, "An RBM as an EBM": _rbm_compare}
