"""The GAN's latent-point sliders when serve.py's grid route is up: the sliders live in the page
(components v2 + dashboard/explore/components/gan_grid.js) and fetch each grid from dashboard/grid_route.py, one HTTP
request a move instead of a rerun of the panel (scripts/measure_ui.py --gan measures both side by side).

Layout only: the grids are the explorer's own (dashboard.explore.gan_grids, made ahead along the hand's
direction); this module mounts the element and keeps the sliders' positions in the session and in the page's link,
under the same names as the Streamlit sliders, so links work whichever sliders a browser shows.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

from dashboard.explore.widgets import key
from dashboard.explore.gan_grids import MEANS_RANGE, POINT_DEFAULTS, ROUTE_PATH, SCALE_STEP, STDS_RANGE, tickets
from genlib.runs.store import Run

JS_PATH = Path(__file__).resolve().parent / "components" / "gan_grid.js"
COMPONENT_NAME = "genlib_gan_grid"
CSS = """
.genlib-gan-grid { display: flex; gap: 1.5rem; align-items: flex-start; flex-wrap: wrap; font-family: var(--st-font); }
.genlib-gan-grid .controls { display: grid; gap: 0.4rem; flex: 1 1 16rem; max-width: 26rem; }
.genlib-gan-grid .row { display: flex; align-items: center; gap: 0.5rem; color: var(--st-text-color); }
.genlib-gan-grid .name { width: 6.5rem; font-size: 0.85rem; }
.genlib-gan-grid .value { width: 2.5rem; font-size: 0.85rem; font-variant-numeric: tabular-nums; text-align: right; }
.genlib-gan-grid input[type=range] { flex: 1; accent-color: var(--st-primary-color); }
.genlib-gan-grid .figure { flex: 2 1 24rem; }
.genlib-gan-grid img { max-width: 100%; image-rendering: pixelated; border-radius: 0.25rem; }
.genlib-gan-grid .note { color: var(--st-text-color); font-size: 0.85rem; }
"""


@functools.cache
def _component() -> Any:
    """The registered component (once per process: registering again would only log a warning)."""
    from streamlit.components.v2 import component

    return component(COMPONENT_NAME, js=JS_PATH.read_text(), css=CSS)


def route_served() -> bool:
    """Whether this process serves the grid route (started as `streamlit run serve.py`, as `make run` does)."""
    return tickets().served and not st.get_option("server.baseUrlPath")


def slider_key(name: str, run: Run | None) -> str:
    """The Streamlit slider's key, which is also the link's parameter for that slider."""
    return key("gan", name, run)


RANGES = {"means": MEANS_RANGE, "stds": STDS_RANGE}


def _on_slider(name: str, value: float) -> float:
    """`value` moved to the nearest position slider `name` has: a multiple of SCALE_STEP within its range."""
    lo, hi = RANGES[name]
    return min(hi, max(lo, round(float(value) / SCALE_STEP) * SCALE_STEP))


def _points_key(run: Run | None) -> str:
    return key("gan", "points", run)


def keep_positions(run: Run | None, points: dict[str, float]) -> None:
    """Remember where the sliders are for this session (either kind of slider calls it after a move)."""
    st.session_state[_points_key(run)] = dict(points)


def positions(run: Run | None) -> dict[str, float]:
    """Where the two sliders are for this session: its own choice, else the link's, else the defaults."""
    if _points_key(run) not in st.session_state:
        out = {}
        for name in RANGES:
            value = st.session_state.get(slider_key(name, run), st.query_params.get(slider_key(name, run)))
            try:
                out[name] = _on_slider(name, value) if value is not None else POINT_DEFAULTS[name]
            except ValueError:
                out[name] = POINT_DEFAULTS[name]  # a mangled link: that slider starts at its default
        keep_positions(run, out)
    return dict(st.session_state[_points_key(run)])


def set_positions(run: Run | None, values: list[float]) -> None:
    """The page let go of a slider at `values` (means, stds): keep them, and in the link as the Streamlit sliders
    would (left out at their defaults)."""
    new = {name: _on_slider(name, v) for name, v in zip(RANGES, values)}
    keep_positions(run, new)
    for name, v in new.items():
        param = slider_key(name, run)
        if param in st.session_state:  # a Streamlit slider of this run exists: it follows, its binding writes the link
            st.session_state[param] = v
            continue
        try:
            if v == POINT_DEFAULTS[name]:
                st.query_params.pop(param, None)
            else:
                st.query_params[param] = f"{v:g}"
        except StreamlitAPIException:  # still bound to a slider of this run: the binding writes it
            pass


def _released(component_key: str, run: Run | None) -> None:
    values = (st.session_state.get(component_key) or {}).get("release")
    if isinstance(values, list) and len(values) == 2:
        set_positions(run, values)


def route_sliders(*, run: Run | None, version: str, model: Any, n: int, seed: int) -> None:
    """The two sliders and their grid, fetched from the route for `model` (weights `version`) at `n` images and noise
    `seed`."""
    points = positions(run)
    ticket = tickets().offer(version, model)
    component_key = key("gan", "route-grid", run)
    data = {
        "uid": component_key, "url": f"{ROUTE_PATH}/{ticket}", "n": int(n), "seed": int(seed),
        "sliders": [
            {"name": "means", "label": "scale_means", "min": MEANS_RANGE[0], "max": MEANS_RANGE[1],
             "step": SCALE_STEP, "value": points["means"], "help": "means = scale_means * linspace(-1, 1, 100)"},
            {"name": "stds", "label": "scale_stds", "min": STDS_RANGE[0], "max": STDS_RANGE[1], "step": SCALE_STEP,
             "value": points["stds"], "help": "stds = scale_stds * linspace(-1, 1, 100)"},
        ],
        "reset": json.dumps(points, sort_keys=True),
    }
    _component()(key=component_key, data=data,
                 on_release_change=functools.partial(_released, component_key, run))
