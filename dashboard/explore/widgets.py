"""Shared widgets of the explorer panels: the snapshot a panel explores, widget keys, refresh cadence, images.

Each explorer (vae, gan, rbm, ebm) puts its sliders and image in one `st.fragment`, so a slider move reruns that
panel only; every panel fetches the newest snapshot when it reruns (and, while the run trains and "Follow training"
is on, every REFRESH_S seconds), so exploring follows a model as it learns. Decoded images are cached with
`st.cache_data` keyed by the weights' version (file and mtime) and the rounded latent, as PNG bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from dashboard import share, state
from genlib.data import OFFLINE_DATASET, dataset_available
from genlib.images import grid, png_bytes, upscale
from genlib.runs.store import LIVE_STATES, Run

REFRESH_S = 5.0  # seconds between panel refreshes while a run trains (its snapshots come every ~5 s)
TEST_IMAGES = 2000  # test images encoded for the VAE's latent map
IMAGE_PX = 280  # side of one large digit on screen (28 px upscaled 10x, nearest neighbour)
GRID_PX = 900  # target width of image grids (Streamlit downsizes anything over 1460 px, with blur)


@dataclass(frozen=True)
class Snapshot:
    """The weights a panel explores: the model (CPU, eval), the step they come from and a cache key for them."""

    model: Any
    step: int
    version: str  # "<file>:<mtime_ns>:<step>": every cached image of these weights is keyed by it


def weights_file(run: Run) -> Path | None:
    """The run's freshest weights file (genlib.runs.store.Run.latest_weights, as state.load_run_model picks)."""
    return run.latest_weights()


def load_snapshot(run: Run) -> Snapshot | None:
    """The run's newest weights as a Snapshot, or None when it has saved none yet. Raises CheckpointError."""
    path = weights_file(run)
    if path is None:
        return None
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:  # replaced between the two calls: the next rerun sees the new file
        return None
    loaded = state.load_run_model(run)
    if loaded is None:
        return None
    model, step = loaded
    return Snapshot(model=model, step=int(step), version=f"{path}:{mtime}:{step}")


def local_snapshot(model: Any, step: int) -> Snapshot:
    """A Snapshot of an in-memory model (no run folder), keyed by its identity."""
    return Snapshot(model=model, step=int(step), version=f"memory:{id(model)}:{step}")


def current(run: Run | None, fallback: Snapshot) -> Snapshot:
    """Inside a fragment: the run's newest snapshot (a fragment rerun keeps the arguments of the last full run, so it
    must look again), else `fallback`."""
    if run is None:
        return fallback
    try:
        snap = load_snapshot(run)
    except Exception:  # noqa: BLE001 - a half-written or damaged file: keep exploring the weights we have
        snap = None
    return snap if snap is not None else fallback


def run_tag(run: Run | None) -> str:
    return run.id if run is not None else "local"


def key(model_name: str, name: str, run: Run | None) -> str:
    """A widget or container key unique per model, panel element and run, e.g. 'vae-z3-vae-20250101-120000-ab12'."""
    return f"{model_name}-{name}-{run_tag(run)}"


def is_live(run: Run | None) -> bool:
    return run is not None and run.effective_state() in LIVE_STATES


def refresh_every(run: Run | None, model_name: str) -> float | None:
    """REFRESH_S while the run trains and the viewer follows it, else None (the panel reruns on interaction only)."""
    if not is_live(run):
        return None
    return REFRESH_S if st.session_state.get(key(model_name, "follow", run), True) else None


def panel(fn: Callable[..., None], run: Run | None, model_name: str) -> Callable[..., None]:
    """`fn` as a fragment: its widgets rerun only it; it refreshes by itself while the run trains (if followed).

    The fragment's identity is fn's name and its place on the page, so wrapping it anew on each run is fine."""
    return st.fragment(fn, run_every=refresh_every(run, model_name))


def tabbed_panels(model_name: str, panels: dict[str, Callable[..., None]], model: Any, run: Run | None,
                  step: int) -> None:
    """The explorer's panels as tabs, of which only the chosen one runs.

    Streamlit computes and sends every tab's content unless the tabs track their state (a key plus bind): then each
    tab's `.open` says whether it is shown. Hidden panels would otherwise rerun every few seconds while a run trains
    (manifolds, scatter plots, decoder weights); measured in Chromium during training, the VAE page's browser cost fell
    from 0.32 to 0.13 cores and the server's from 0.05 to 0.02 when only the open tab ran."""
    tabs = st.tabs(list(panels), key=f"{model_name}-tab", bind=share.BIND)
    for tab, fn in zip(tabs, panels.values()):
        if tab.open is False:  # None (state not tracked, e.g. an old Streamlit) keeps the eager behaviour
            continue
        with tab:
            panel(fn, run, model_name)(model, run, step)


def step_caption(snap: Snapshot, run: Run | None) -> None:
    """One line under each panel saying which weights it shows."""
    live = " (training continues: this panel follows newer snapshots)" if is_live(run) else ""
    st.caption(f"Weights from step {snap.step:,}{live}.")


def show_image(png: bytes, container_key: str, caption: str | None = None, width: int | str = "content") -> None:
    """One PNG inside a keyed container (st.image has no key; the browser test finds `.st-key-<container_key>`)."""
    with st.container(key=container_key):
        st.image(png, caption=caption, output_format="PNG", width=share.image_width(width))


def to_png(images: Any, nrow: int | None = None, width_px: int = IMAGE_PX, pad: int = 2) -> bytes:
    """Images (N, 1, H, W) in [0, 1] -> one PNG: tiled (nrow per row), nearest-neighbour upscaled to about width_px.

    A single image gets no border. PNG (not JPEG) keeps the digits' edges; compress level 1 costs ~0.2 ms."""
    tiles = grid(images, nrow=nrow, pad=0 if images.shape[0] == 1 else pad)  # (rows, cols) uint8
    factor = max(1, round(width_px / tiles.shape[1]))  # at most 1.5 x width_px, below Streamlit's 1460 px cap
    return png_bytes(upscale(tiles, factor))


def test_data(run: Run | None):
    """The test images of the run's dataset (Run.dataset(); CPU, cached per process), falling back to the offline
    digits, with a note saying so, when the dataset's files are not on this machine (or there is no run). Returns
    (ImageData, note or None)."""
    info = run.info() if run is not None else {}
    train_config = info.get("train_config") or {}
    name = run.dataset() if run is not None else OFFLINE_DATASET
    root = train_config.get("data_root")
    note = None
    if name != OFFLINE_DATASET:
        try:
            if dataset_available(name, root):
                return state.get_dataset(name, root), None
        except Exception as e:  # noqa: BLE001 - a missing or damaged dataset must not break exploring
            note = f"{name} could not be loaded here ({e})"
        note = note or f"{name} is not on this machine"
        note += f"; its test images are replaced by the offline '{OFFLINE_DATASET}' digits."
    return state.get_dataset(OFFLINE_DATASET), note


def init_state(widget_key: str, value: Any) -> None:
    """Give a widget its first value through Session State (then create it without `value=`), so callbacks that set
    it (reset buttons, "New noise") never meet a conflicting default."""
    if widget_key not in st.session_state:
        st.session_state[widget_key] = value
