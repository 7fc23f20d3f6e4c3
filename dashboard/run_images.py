"""A run's saved sample grids as PNG bytes for the page, cached per file and modification time (shared by the training
panel, the forks' branch view and the EBM's replay view, which is why it sits below all three)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

IMAGE_WIDTH = 480  # px on screen for a sample grid (nearest-neighbour upscaled, so pixels stay crisp)


@st.cache_data(max_entries=64, show_spinner=False)
def grid_png(path: str, mtime_ns: int, width: int = IMAGE_WIDTH) -> bytes:
    """A saved sample grid, nearest-neighbour upscaled to about `width` px, as PNG bytes (keyed by file and mtime)."""
    from genlib.images import png_bytes, read_png, upscale  # lazily: genlib.images imports torch (start-up cost)

    img = read_png(Path(path).read_bytes())
    return png_bytes(upscale(img, max(1, width // img.shape[1])))
