"""The home page's gallery: one sample grid per model from its best pretrained run (genlib.runs.pretrained), read
from the run folder's saved grids when it has one, else (for the models that sample in one pass) sampled once per
weights version, cached for every viewer."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import state
from genlib.models import model_class, model_names
from genlib.runs.store import Run

GALLERY_SAMPLES = 36  # a 6x6 grid when the run folder has no saved one
GALLERY_WIDTH = 240  # px on screen


def one_pass(model: object) -> bool:
    """Whether runs of `model` may be sampled here: its samples take one network pass (its class's
    one_pass_sampling). The RBM's Gibbs and the EBM's Langevin chains run hundreds of steps (the shipped EBM: minutes
    of a busy 2-core CPU for 16 samples), too slow for a home page: without a saved grid they get a note instead
    (every training run saves live.png, so only a damaged or hand-made run folder lacks one)."""
    return model in model_names() and model_class(str(model)).one_pass_sampling


def stored_grid(run: Run) -> Path | None:
    """The run's newest saved sample grid: its last epoch grid (samples/epoch-*.png), else live.png, else None."""
    grids = run.epoch_grids()
    if grids:
        return grids[-1]
    return run.live_png if run.live_png.is_file() else None


@st.cache_data(max_entries=16, show_spinner=False)
def _sampled_png(weights: str, mtime_ns: int, n: int = GALLERY_SAMPLES, seed: int = 1234) -> bytes:
    """`n` samples of the model in `weights` (a fixed seed), as a PNG grid: once per weights version, CPU."""
    import torch

    from genlib.images import grid, png_bytes
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(weights, device="cpu"), device="cpu").eval()
    with torch.no_grad():
        images = model.sample(n, generator=torch.Generator().manual_seed(seed))  # (n, 1, 28, 28) in [0, 1]
    return png_bytes(grid(images))


def gallery_image(run: Run) -> tuple[bytes, str] | None:
    """(PNG bytes at about GALLERY_WIDTH px, where they came from) for `run`, or None when it has no saved grid and
    cannot be sampled cheaply (no weights, or not one_pass)."""
    from dashboard.run_images import grid_png

    saved = stored_grid(run)
    if saved is not None:
        return grid_png(str(saved), saved.stat().st_mtime_ns, GALLERY_WIDTH), f"saved grid {saved.name}"
    weights = run.latest_weights()
    if weights is None or not one_pass(run.info().get("model")):
        return None
    return _sampled_png(str(weights), weights.stat().st_mtime_ns), f"{GALLERY_SAMPLES} fresh samples"


def best_runs(models: list[str]) -> dict[str, Run | None]:
    """Each model's best pretrained run in this server's runs folder (None where it has none)."""
    from genlib.runs.pretrained import best_pretrained

    state.get_manager()  # installs the shipped pretrained runs on a fresh server
    runs = state.get_store().list()
    return {m: best_pretrained(runs, m) for m in models}
