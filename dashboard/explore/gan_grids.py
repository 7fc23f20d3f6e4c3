"""The GAN explorer's latent-point grids (the course seed's generate_latent_points through the generator, as PNG):
made when asked, or ahead along the hand's direction on one background thread (GridAhead), and offered to the grid
route (dashboard/grid_route.py) under unguessable tickets for the weights a page shows (GridTickets).

Each grid is keyed by the weights' version and the few numbers that define the noise (size, slider positions, seed),
never by the noise itself: after each move the next grids along it are made ahead, so the next key press or step of
a drag finds its grid made (scripts/measure_ui.py --gan measures the ways side by side).
"""

from __future__ import annotations

import functools
import secrets
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import streamlit as st
import torch

from dashboard.explore import widgets
from dashboard.explore.widgets import to_png
from genlib.latent import generate_latent_points
from genlib.settings import current as current_settings

GRID_SIZES = (16, 25, 36, 49, 64, 100)  # the seed plots 100, 225 and 400; more than 100 is slow on a CPU
MEANS_RANGE, STDS_RANGE, SCALE_STEP = (-10.0, 10.0), (0.0, 10.0), 0.5  # the latent-point sliders
POINT_DEFAULTS = {"means": 1.0, "stds": 1.0}  # where they start
# grids made ahead after each move: the next two positions along it (or the means slider's two neighbours at first).
# More compete with the grid asked for on a 2-core CPU: with 4-5 ahead the 'fast' preset's median went from 288 to
# 383 ms at load average 20 (scripts/measure_ui.py --gan).
AHEAD = 2
ROUTE_PATH = "/genlib/gan-grid"  # where serve.py mounts dashboard/grid_route.py: GET <ROUTE_PATH>/<ticket>?n=&means=...


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def latent_grid(model: Any, n: int, scale_means: float, scale_stds: float, seed: int) -> bytes:
    """The seed's generate_latent_points(n, scale_means, scale_stds) through the generator, one forward pass."""
    z = generate_latent_points(n, model.latent_dim, scale_means, scale_stds, gen(seed))  # (n, dim)
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
    return latent_grid(_model, n, scale_means, scale_stds, seed)


def latent_points_png(version: str, n: int, scale_means: float, scale_stds: float, seed: int, model: Any,
                      last: tuple[float, float] | None = None) -> bytes:
    """The grid at these slider positions (made now unless made ahead), then the grids one step away queued."""
    ahead = grid_ahead()
    if ahead is None:
        return _made_now(version, n, scale_means, scale_stds, seed, model)
    png = ahead.get((version, n, scale_means, scale_stds, seed),
                    lambda: latent_grid(model, n, scale_means, scale_stds, seed))
    ahead.ahead([((version, n, m, s, seed), (lambda m=m, s=s: latent_grid(model, n, m, s, seed)))
                 for m, s in neighbours(scale_means, scale_stds, last)[:AHEAD]])
    return png


# ---- the weights the grid route may draw from ----

@dataclass(frozen=True)
class GridTicket:
    """Weights a page shows: their version (the grid cache's key), the model, and one image's generator FLOPs."""

    version: str
    model: Any
    flops_per_image: float


class GridTickets:
    """ticket -> GridTicket for the weights pages show now (the most recent `max_entries`: a training run offers a
    new version per snapshot, and a page whose ticket was dropped gets a new one on its next rerun)."""

    def __init__(self, max_entries: int = 32) -> None:
        self._lock = threading.Lock()
        self._by_ticket: OrderedDict[str, GridTicket] = OrderedDict()
        self._by_version: dict[str, str] = {}
        self._max = max_entries
        self.served = False  # whether serve.py mounted the route in this process (else pages keep Streamlit sliders)

    def offer(self, version: str, model: Any) -> str:
        """The ticket under which the route draws grids from `model` (one per version, shared by its viewers)."""
        with self._lock:
            ticket = self._by_version.get(version)
            if ticket is not None and ticket in self._by_ticket:
                self._by_ticket.move_to_end(ticket)
                return ticket
        flops = _image_flops(model)  # outside the lock: a forward pass with a FLOP counter
        with self._lock:
            ticket = secrets.token_urlsafe(16)
            self._by_ticket[ticket] = GridTicket(version=version, model=model, flops_per_image=flops)
            self._by_version[version] = ticket
            while len(self._by_ticket) > self._max:
                old, entry = self._by_ticket.popitem(last=False)
                if self._by_version.get(entry.version) == old:
                    del self._by_version[entry.version]
            return ticket

    def get(self, ticket: str) -> GridTicket | None:
        with self._lock:
            return self._by_ticket.get(ticket)


@functools.cache
def tickets() -> GridTickets:
    """The process's one ticket table (the pages' script threads and the route's requests share it)."""
    return GridTickets()


def _image_flops(model: Any) -> float:
    """FLOPs of the generator on one noise vector (what a grid of n images costs is n of these)."""
    from genlib.work_budget import forward_flops

    return forward_flops(model.decode, torch.zeros(1, model.latent_dim))
