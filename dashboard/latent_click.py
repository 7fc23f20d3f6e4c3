"""Click the latent map: the VAE's map of test codes as a Plotly chart whose clicks decode (Streamlit's plotly
selection events, `on_select="rerun"`, selection_mode "points").

Every test digit's dot carries its index (customdata), so a click on a dot decodes that digit's mean code mu(x).
For a 2-D latent the map is the latent plane itself, so an invisible grid of click targets covers it as well: a
click anywhere decodes the code under the pointer (to the grid's spacing, ~1/50 of the map), which is also how a
student probes the empty regions between classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GRID_N = 50  # click targets per side over a 2-D latent plane
GRID_PAD = 0.1  # the grid extends the test codes' bounding box by this share on each side


def click_grid(coords: np.ndarray, n: int = GRID_N, pad: float = GRID_PAD) -> tuple[np.ndarray, np.ndarray]:
    """x and y (n * n,) of a regular grid over the bounding box of coords (N, 2), widened by `pad` each side."""
    lo, hi = coords.min(0), coords.max(0)
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad * span, hi + pad * span
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
    return gx.ravel(), gy.ravel()


def map_figure(coords: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], axis_titles: tuple[str, str],
               latent_plane: bool) -> Any:
    """The latent map: one trace of dots per class (customdata: test index) and, when `latent_plane` (the axes are
    z0 and z1 themselves), a last trace of invisible click targets (customdata: -1)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    fig = go.Figure()
    palette = qualitative.D3  # ten distinct hues, one per class (the default sequence repeats pale tints)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        fig.add_trace(go.Scattergl(x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=classes[int(c)],
                                   customdata=idx, hovertemplate="test image %{customdata}<extra>" + classes[int(c)]
                                   + "</extra>",
                                   marker={"size": 4, "opacity": 0.7, "color": palette[int(c) % len(palette)]},
                                   unselected={"marker": {"opacity": 0.5}}))  # plotly would fade them to 0.14
    if latent_plane:
        gx, gy = click_grid(coords)
        fig.add_trace(go.Scattergl(x=gx, y=gy, mode="markers", name="click to decode", showlegend=False,
                                   customdata=np.full(gx.shape, -1),
                                   hovertemplate="z = (%{x:.2f}, %{y:.2f})<extra>click to decode</extra>",
                                   marker={"size": 10, "opacity": 0.0, "color": "#000000"},
                                   selected={"marker": {"opacity": 1.0, "size": 12}},
                                   unselected={"marker": {"opacity": 0.0}}))
    fig.update_layout(height=480, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis_title=axis_titles[0],
                      yaxis_title=axis_titles[1], legend_title_text="label", hovermode="closest",
                      clickmode="event+select")
    return fig


def clicked_code(selection: Any, means: np.ndarray) -> tuple[np.ndarray, int | None] | None:
    """The code a click picked: (z (k,), test index or None) from a plotly selection state, or None.

    A dot gives its test digit's mean code means[index]; a grid target on a 2-D latent gives (x, y) itself. With
    several points selected (a box or lasso), the first one counts."""
    points = (selection or {}).get("points") or []
    if not points:
        return None
    p = points[0]
    index = p.get("customdata")
    if isinstance(index, (list, tuple)):
        index = index[0] if index else None
    if index is not None and int(index) >= 0:
        return means[int(index)].astype(np.float32), int(index)
    if means.shape[1] == 2 and "x" in p and "y" in p:
        return np.array([p["x"], p["y"]], dtype=np.float32), None
    return None
