"""GAN explorer: the course seed's latent points (scale_means, scale_stds), directions in noise space, slerp.

Layout only: each image is one cached call (noise -> generator -> PNG) keyed by the weights' version and the
few numbers that define the noise (seeds, scales, rounded amounts), never by the noise itself. The latent-point grid
(the seed's means/spreads sliders) is also computed ahead: after each move, one background thread makes the next
grids along it (GridAhead), so the next key press or step of a drag finds its grid made and costs a fragment rerun,
not a generator pass over every image (scripts/measure_ui.py --gan measures both ways side by side).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import streamlit as st
import torch

from dashboard.explore import widgets
from dashboard.explore.widgets import key, show_image, step_caption, to_png
from dashboard.share import BIND
from genlib.latent import expected_norm, generate_latent_points, lerp, random_directions, slerp, traverse
from genlib.runs.store import Run
from genlib.settings import current as current_settings

GRID_SIZES = (16, 25, 36, 49, 64, 100)  # the seed plots 100, 225 and 400; more than 100 is slow on a CPU
MEANS_RANGE, STDS_RANGE, SCALE_STEP = (-10.0, 10.0), (0.0, 10.0), 0.5  # the latent-point sliders
# grids made ahead after each move: the next two positions along it (or the means slider's two neighbours at first).
# More compete with the grid asked for on a 2-core CPU: with 4-5 ahead the 'fast' preset's median went from 288 to
# 383 ms at load average 20 (scripts/measure_ui.py --gan).
AHEAD = 2
AMOUNT = 6.0  # direction sliders span [-6, 6]; a noise vector's norm is about 10 (sqrt(100))
N_STRIP = 9


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _noise(dim: int, seed: int) -> torch.Tensor:
    """One noise vector (dim,) ~ N(0, I), the same for the same seed."""
    return torch.randn(dim, generator=_gen(seed))


def _directions(dim: int, kind: str, spec: tuple[int, ...]) -> torch.Tensor:
    """(k, dim) unit directions: k random orthonormal ones from seed spec[0] (k = spec[1]), or basis vectors."""
    if kind == "random":
        return random_directions(dim, spec[1], _gen(spec[0]))
    return torch.eye(dim)[list(spec)]


# ---- cached computations ----

def _latent_grid(model: Any, n: int, scale_means: float, scale_stds: float, seed: int) -> bytes:
    """The seed's generate_latent_points(n, scale_means, scale_stds) through the generator, one forward pass."""
    z = generate_latent_points(n, model.latent_dim, scale_means, scale_stds, _gen(seed))  # (n, dim)
    with torch.inference_mode():
        x = model.decode(z)  # (n, 1, 28, 28)
    return to_png(x, nrow=int(round(n ** 0.5)), width_px=widgets.GRID_PX * 2 // 3)


GridKey = tuple[str, int, float, float, int]  # (weights version, n, scale_means, scale_stds, seed)


class GridAhead:
    """Latent-point grids by GridKey: made on demand, or ahead on one background thread (never touching Streamlit).

    `get` returns a made grid, waits for one being made, or makes it now; `ahead` queues grids one slider step away
    from the shown one, and drops what earlier calls queued but no thread has started (the hand has moved on)."""

    def __init__(self, max_entries: int = 512) -> None:
        self._lock = threading.Lock()
        self._made: OrderedDict[GridKey, bytes] = OrderedDict()
        self._making: dict[GridKey, Future] = {}
        self._generation = 0
        self._max = max_entries
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gan-grid-ahead")

    def _keep(self, key: GridKey, png: bytes) -> None:
        with self._lock:
            self._made[key] = png
            self._made.move_to_end(key)
            while len(self._made) > self._max:
                self._made.popitem(last=False)

    def cached(self, key: GridKey) -> bool:
        with self._lock:
            return key in self._made

    def get(self, key: GridKey, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            png = self._made.get(key)
            if png is not None:
                self._made.move_to_end(key)
                return png
            pending = self._making.get(key)
        if pending is not None:
            try:
                png = pending.result()  # None: it was dropped unstarted
            except Exception:  # noqa: BLE001 - made again below, where its error reaches the page
                png = None
            if png is not None:
                return png
        png = make()
        self._keep(key, png)
        return png

    def _job(self, generation: int, key: GridKey, make: Callable[[], bytes]) -> bytes | None:
        try:
            with self._lock:
                if generation != self._generation:  # a newer move queued other grids: this one is not wanted now
                    return None
            png = make()
            self._keep(key, png)
            return png
        finally:
            with self._lock:
                self._making.pop(key, None)

    def ahead(self, jobs: list[tuple[GridKey, Callable[[], bytes]]]) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            for key, make in jobs:
                if key not in self._made and key not in self._making:
                    self._making[key] = self._pool.submit(self._job, generation, key, make)


@st.cache_resource(show_spinner=False)
def grid_ahead() -> GridAhead | None:
    """The server's one GridAhead (shared by every viewer: two students at the same slider positions share grids);
    None with $GENLIB_GAN_AHEAD=0 (each grid made when asked, as scripts/measure_ui.py --gan compares)."""
    return GridAhead() if current_settings().gan_ahead else None


def neighbours(scale_means: float, scale_stds: float, last: tuple[float, float] | None) -> list[tuple[float, float]]:
    """The slider positions one step away (two along the last move, first), within the sliders' ranges."""
    def ok(m: float, s: float) -> bool:
        return MEANS_RANGE[0] <= m <= MEANS_RANGE[1] and STDS_RANGE[0] <= s <= STDS_RANGE[1]

    d = SCALE_STEP
    out = [(scale_means + d, scale_stds), (scale_means - d, scale_stds), (scale_means, scale_stds + d),
           (scale_means, scale_stds - d)]
    if last is not None and last != (scale_means, scale_stds):
        dm, ds = scale_means - last[0], scale_stds - last[1]
        step = (d * ((dm > 0) - (dm < 0)), d * ((ds > 0) - (ds < 0)))
        if step != (0.0, 0.0):
            on = [(scale_means + step[0], scale_stds + step[1]), (scale_means + 2 * step[0], scale_stds + 2 * step[1])]
            out = on + [p for p in out if p not in on]
    return [(round(m, 2), round(s, 2)) for m, s in out if ok(m, s)]


@st.cache_data(max_entries=256, show_spinner=False)
def _made_now(version: str, n: int, scale_means: float, scale_stds: float, seed: int, _model: Any) -> bytes:
    """Without GridAhead: each grid made when first asked (cached per weights version and slider positions)."""
    return _latent_grid(_model, n, scale_means, scale_stds, seed)


def latent_points_png(version: str, n: int, scale_means: float, scale_stds: float, seed: int, model: Any,
                      last: tuple[float, float] | None = None) -> bytes:
    """The grid at these slider positions (made now unless made ahead), then the grids one step away queued."""
    ahead = grid_ahead()
    if ahead is None:
        return _made_now(version, n, scale_means, scale_stds, seed, model)
    png = ahead.get((version, n, scale_means, scale_stds, seed),
                    lambda: _latent_grid(model, n, scale_means, scale_stds, seed))
    ahead.ahead([((version, n, m, s, seed), (lambda m=m, s=s: _latent_grid(model, n, m, s, seed)))
                 for m, s in neighbours(scale_means, scale_stds, last)[:AHEAD]])
    return png


@st.cache_data(max_entries=1024, show_spinner=False)
def moved_png(version: str, base_seed: int, kind: str, spec: tuple[int, ...], amounts: tuple[float, ...],
              _model: Any) -> bytes:
    """One noise vector moved by sum_i amounts[i] * direction_i, generated."""
    z = _noise(_model.latent_dim, base_seed) + torch.tensor(amounts) @ _directions(_model.latent_dim, kind, spec)
    with torch.inference_mode():
        x = _model.decode(z[None])
    return to_png(x)


@st.cache_data(max_entries=256, show_spinner=False)
def traversal_png(version: str, base_seed: int, kind: str, spec: tuple[int, ...], amounts: tuple[float, ...],
                  which: int, _model: Any) -> bytes:
    """N_STRIP images along direction `which` from -AMOUNT to +AMOUNT, the others at their slider amounts."""
    dirs = _directions(_model.latent_dim, kind, spec)  # (k, dim)
    z = _noise(_model.latent_dim, base_seed) + torch.tensor(amounts) @ dirs
    z = z - amounts[which] * dirs[which]  # this direction's own slider is replaced by the sweep
    path = traverse(z, dirs[which], torch.linspace(-AMOUNT, AMOUNT, N_STRIP))  # (N_STRIP, dim)
    with torch.inference_mode():
        x = _model.decode(path)
    return to_png(x, nrow=N_STRIP, width_px=widgets.GRID_PX)


@st.cache_data(max_entries=1024, show_spinner=False)
def interpolated_png(version: str, seed_a: int, seed_b: int, method: str, t: float, _model: Any) -> bytes:
    za, zb = _noise(_model.latent_dim, seed_a), _noise(_model.latent_dim, seed_b)
    z = (slerp if method == "spherical" else lerp)(za, zb, t)
    with torch.inference_mode():
        x = _model.decode(z[None])
    return to_png(x)


@st.cache_data(max_entries=128, show_spinner=False)
def interpolation_strip(version: str, seed_a: int, seed_b: int, method: str, _model: Any) -> tuple[bytes, list]:
    """(PNG of N_STRIP images from noise a to noise b, the path's norms |z_t|)."""
    za, zb = _noise(_model.latent_dim, seed_a), _noise(_model.latent_dim, seed_b)
    path = (slerp if method == "spherical" else lerp)(za, zb, torch.linspace(0, 1, N_STRIP))  # (N_STRIP, dim)
    with torch.inference_mode():
        x = _model.decode(path)
    return to_png(x, nrow=N_STRIP, width_px=widgets.GRID_PX), path.norm(dim=1).tolist()


# ---- panels ----

def _latent_points(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    seed_key = key("gan", "seed", run)

    def new_noise() -> None:
        old = st.session_state.get(seed_key)
        seed = secrets.randbelow(100_000)
        st.session_state[seed_key] = seed if seed != old else seed + 1

    left, right = st.columns([2, 3])
    with left:
        scale_means = st.slider("scale_means", -10.0, 10.0, 1.0, 0.5, key=key("gan", "means", run), bind=BIND,
                                help="means = scale_means * linspace(-1, 1, 100)")
        scale_stds = st.slider("scale_stds", 0.0, 10.0, 1.0, 0.5, key=key("gan", "stds", run), bind=BIND,
                               help="stds = scale_stds * linspace(-1, 1, 100) (a negative std draws the same as "
                                    "its absolute value)")
        n = st.select_slider("Images", GRID_SIZES, value=36, key=key("gan", "n", run), bind=BIND)
        c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
        widgets.init_state(seed_key, 0)
        seed = int(c1.number_input("Noise seed", 0, 2**31 - 1, key=seed_key, bind=BIND,
                                   help="The same seed draws the same noise: reproducible demos."))
        c2.button("New noise", key=key("gan", "newnoise", run), on_click=new_noise)
    last_key = key("gan", "last-points", run)  # where the sliders were on the last run: which way the hand moves
    last = st.session_state.get(last_key)
    st.session_state[last_key] = (scale_means, scale_stds)
    with right:
        show_image(latent_points_png(snap.version, n, scale_means, scale_stds, seed, snap.model, last),
                   key("gan", "grid", run))
    st.caption("The seed's generate_latent_points: coordinate k of the noise is drawn around "
               "scale_means * (-1 ... 1) with spread |scale_stds * (-1 ... 1)|. Moving the means moves the "
               "generator from digit to digit; larger spreads give more varied digits.")
    step_caption(snap, run)


def _directions_panel(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    dim = snap.model.latent_dim
    c1, c2, c3 = st.columns(3)
    base_seed = int(c1.number_input("Sample (noise seed)", 0, 2**31 - 1, 0, key=key("gan", "dirbase", run), bind=BIND))
    kind = c2.radio("Directions", ["random", "coordinates"], horizontal=True, key=key("gan", "dirkind", run), bind=BIND,
                    format_func=lambda s: {"random": "random unit directions",
                                           "coordinates": "single noise coordinates"}[s])
    if kind == "random":
        dir_seed = int(c3.number_input("Direction seed", 0, 2**31 - 1, 0, key=key("gan", "dirseed", run), bind=BIND))
        k = 4
        spec = (dir_seed, k)
        names = [f"direction {i}" for i in range(k)]
        slider_keys = [key("gan", f"dir{i}", run) for i in range(k)]
    else:
        coords = c3.multiselect("Coordinates", list(range(dim)), default=list(range(min(4, dim))),
                                max_selections=6, key=key("gan", "dircoords", run), bind=BIND, format_func=lambda d: f"z{d}")
        spec = tuple(sorted(coords))
        names = [f"z{c}" for c in spec]
        slider_keys = [key("gan", f"dir-z{c}", run) for c in spec]
    if not names:
        st.info("Choose at least one coordinate.")
        return
    left, right = st.columns([2, 3])
    with left:
        amounts = tuple(round(st.slider(name, -AMOUNT, AMOUNT, 0.0, 0.25, key=sk, bind=BIND), 2)
                        for name, sk in zip(names, slider_keys))
    with right:
        show_image(moved_png(snap.version, base_seed, kind, spec, amounts, snap.model), key("gan", "dir-img", run))
    which = st.selectbox("Sweep along", list(range(len(names))), format_func=lambda i: names[i],
                         key=key("gan", "dirsweep", run), bind=BIND)
    show_image(traversal_png(snap.version, base_seed, kind, spec, amounts, which, snap.model),
               key("gan", "dir-strip", run), caption=f"{names[which]} from -{AMOUNT:g} to +{AMOUNT:g}")
    st.caption(f"One sample's {dim}-dimensional noise moved along a few directions (unit vectors; the noise "
               f"itself has length about {expected_norm(dim):.0f}). Some directions change the digit's identity, "
               "others only its thickness or slant: the generator's code is not aligned with the axes.")
    step_caption(snap, run)


def _interpolation(model: Any, run: Run | None, step: int) -> None:
    snap = widgets.current(run, widgets.local_snapshot(model, step))
    c1, c2, c3 = st.columns(3)
    seed_a = int(c1.number_input("Noise seed A", 0, 2**31 - 1, 0, key=key("gan", "sa", run), bind=BIND))
    seed_b = int(c2.number_input("Noise seed B", 0, 2**31 - 1, 1, key=key("gan", "sb", run), bind=BIND))
    compare = c3.checkbox("Compare with the straight line", value=False, key=key("gan", "slin", run), bind=BIND)
    t = st.slider("Position t between A and B", 0.0, 1.0, 0.5, 0.05, key=key("gan", "st", run), bind=BIND)
    left, right = st.columns([1, 3])
    with left:
        show_image(interpolated_png(snap.version, seed_a, seed_b, "spherical", round(t, 2), snap.model),
                   key("gan", "slerp-img", run), caption=f"slerp at t = {t:.2f}")
    with right:
        strip, norms = interpolation_strip(snap.version, seed_a, seed_b, "spherical", snap.model)
        show_image(strip, key("gan", "slerp-strip", run),
                   caption="spherical: |z| " + " ".join(f"{v:.1f}" for v in norms))
        if compare:
            strip, norms = interpolation_strip(snap.version, seed_a, seed_b, "linear", snap.model)
            show_image(strip, key("gan", "lerp-strip", run),
                       caption="linear: |z| " + " ".join(f"{v:.1f}" for v in norms))
    st.caption("Spherical interpolation (White 2016) walks from noise A to noise B along a great circle, so every "
               "code keeps the length typical of N(0, I) draws; the straight line's midpoints are shorter than any "
               "noise the generator was trained on and can look washed out.")
    step_caption(snap, run)


# the GAN's exploration tabs, each panel(model, run, step)
PANELS = {"The seed's latent points": _latent_points, "Directions": _directions_panel, "Interpolation": _interpolation}
