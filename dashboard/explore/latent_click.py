"""Click the latent map and the manifold: the VAE's map of test codes, and its manifold image, as Plotly charts whose
clicks decode (Streamlit's plotly selection events, `on_select="rerun"`, selection_mode "points").

Every test digit's dot carries its index (customdata), so a click on a dot decodes that digit's mean code mu(x).
For a 2-D latent the map is the latent plane itself, so an invisible grid of click targets covers it as well: a
click anywhere decodes the code under the pointer (to the grid's spacing, ~1/50 of the map), which is also how a
student probes the empty regions between classes.

Plotly reports no selection for image or heatmap traces (streamlit/streamlit#8760, #15042), so the manifold is the
decoded grid's PNG as a layout image under one invisible marker per tile (customdata: the tile's index in
genlib.latent.manifold_grid's row-major order); with hoverdistance -1 a click anywhere picks the nearest tile.
"""

from __future__ import annotations

import base64
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


def tile_centres(n: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y (n * n,) of the manifold's tile centres in plot units (one tile = 1), in manifold_grid's order:
    index r * n + c is column c (x = c + 0.5) and row r counted from the top (y = n - r - 0.5)."""
    rows, cols = np.divmod(np.arange(n * n), n)
    return cols + 0.5, n - rows - 0.5


def manifold_figure(png: bytes, values: np.ndarray, axis_titles: tuple[str, str], tile_px: int = 28,
                    pad_px: int = 2) -> Any:
    """The manifold PNG (an n x n grid of tile_px images, pad_px apart and around, as genlib.images.grid tiles
    them) as a layout image whose tiles sit on integer cells [c, c + 1] x [r, r + 1], under invisible click targets
    at the tile centres; the axes are labelled with the grid's coordinates `values` (n,)."""
    import plotly.graph_objects as go

    n = len(values)
    pitch = tile_px + pad_px  # the grid's period in source pixels; one plot unit
    edge = pad_px / (2 * pitch)  # the outer padding is one pad, the gaps two half pads: centres land on c + 0.5
    x, y = tile_centres(n)
    rows, cols = np.divmod(np.arange(n * n), n)
    text = [f"z = ({values[c]:.2f}, {values[n - 1 - r]:.2f})" for r, c in zip(rows, cols)]
    fig = go.Figure(go.Scatter(
        x=x, y=y, mode="markers", customdata=np.arange(n * n), text=text, name="click to decode", showlegend=False,
        hovertemplate="%{text}<extra>click to decode</extra>",
        marker={"size": 12, "opacity": 0.0, "color": "#ff4b4b", "symbol": "square-open", "line": {"width": 3}},
        selected={"marker": {"opacity": 1.0, "size": 18}}, unselected={"marker": {"opacity": 0.0}}))
    src = "data:image/png;base64," + base64.b64encode(png).decode()
    fig.add_layout_image(source=src, xref="x", yref="y", x=-edge, y=n + edge, sizex=n + 2 * edge,
                         sizey=n + 2 * edge, xanchor="left", yanchor="top", sizing="stretch", layer="below")
    every = 1 if n <= 10 else 2  # label every other tile of a dense grid
    ticks = np.arange(0, n, every)
    fig.update_xaxes(range=[-edge, n + edge], tickvals=ticks + 0.5, ticktext=[f"{values[c]:.1f}" for c in ticks],
                     title_text=axis_titles[0], showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(range=[-edge, n + edge], tickvals=ticks + 0.5,
                     ticktext=[f"{values[t]:.1f}" for t in ticks],
                     title_text=axis_titles[1], showgrid=False, zeroline=False, scaleanchor="x", scaleratio=1,
                     constrain="domain")
    fig.update_layout(height=560, margin={"l": 10, "r": 10, "t": 10, "b": 10}, hovermode="closest",
                      hoverdistance=-1, clickmode="event+select", dragmode=False, plot_bgcolor="#000000")
    return fig


def clicked_tile(selection: Any, n: int) -> int | None:
    """The manifold tile a click picked (its index in manifold_grid's order), or None (no click, or a stale one
    from a grid of another size)."""
    points = (selection or {}).get("points") or []
    if not points:
        return None
    index = points[0].get("customdata")
    if isinstance(index, (list, tuple)):
        index = index[0] if index else None
    if index is None or not 0 <= int(index) < n * n:
        return None
    return int(index)
