"""The GAN explorer's grid route: `GET /genlib/gan-grid/<ticket>?n=&means=&stds=&seed=` answers with the PNG of the
course seed's generate_latent_points grid, so the page's own sliders (dashboard/explore/components/gan_grid.js) get a
new grid per key press or drag step from one HTTP request instead of a Streamlit rerun of the panel (serve.py mounts
the route; without it the panel keeps Streamlit's sliders).

A page offers the weights it shows (`GridTickets.offer(version, model)`) and hands its browser an unguessable ticket:
the route draws only from weights a page is showing, never loads a run by name, writes nothing, and charges each new
grid to the asking browser's share of the explorer work (dashboard.work_meter), as a page rerun would.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping

from dashboard import work_meter
from dashboard.explore import gan_grids
from dashboard.explore.gan_grids import GRID_SIZES, MEANS_RANGE, ROUTE_PATH, SCALE_STEP, STDS_RANGE, tickets


@dataclass(frozen=True)
class GridQuery:
    """One grid the page asks for: its size, the two sliders, the noise seed, and where the sliders were before (the
    direction the hand moves, for the grids made ahead)."""

    n: int
    means: float
    stds: float
    seed: int
    last: tuple[float, float] | None


def _on_lattice(name: str, text: str | None, lo: float, hi: float, step: float) -> float:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not (lo <= value <= hi) or abs(value / step - round(value / step)) > 1e-6:
        raise ValueError(f"{name} must be a multiple of {step:g} in [{lo:g}, {hi:g}], not {text!r}")
    return round(round(value / step) * step, 2)


def parse_query(params: Mapping[str, str]) -> GridQuery:
    """The query string's grid, or ValueError saying which value is wrong and what it may be."""
    try:
        n = int(params.get("n", ""))
    except ValueError:
        n = -1
    if n not in GRID_SIZES:
        raise ValueError(f"n must be one of {', '.join(map(str, GRID_SIZES))}, not {params.get('n')!r}")
    try:
        seed = int(params.get("seed", ""))
    except ValueError:
        seed = -1
    if not 0 <= seed < 2**31:
        raise ValueError(f"seed must be a whole number in [0, 2^31), not {params.get('seed')!r}")
    means = _on_lattice("means", params.get("means"), *MEANS_RANGE, SCALE_STEP)
    stds = _on_lattice("stds", params.get("stds"), *STDS_RANGE, SCALE_STEP)
    last = None
    if "last_means" in params and "last_stds" in params:
        try:
            last = (_on_lattice("last_means", params["last_means"], *MEANS_RANGE, SCALE_STEP),
                    _on_lattice("last_stds", params["last_stds"], *STDS_RANGE, SCALE_STEP))
        except ValueError:
            last = None  # only a hint for the grids made ahead
    return GridQuery(n=n, means=means, stds=stds, seed=seed, last=last)


async def gan_grid(request: Any) -> Any:
    """The route's handler: 200 with the PNG, 400 (a bad value), 404 (a ticket no page offers now) or 429 (this
    browser's or the server's explorer work used up), each error with a sentence the page shows."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import PlainTextResponse, Response

    entry = tickets().get(request.path_params.get("ticket", ""))
    if entry is None:
        return PlainTextResponse("These weights are no longer shown: the page fetches newer ones when it reruns "
                                 "(press R or reload the page).", status_code=404)
    try:
        q = parse_query(request.query_params)
    except ValueError as e:
        return PlainTextResponse(str(e), status_code=400)
    flops = entry.flops_per_image * q.n
    client = request.client.host if request.client is not None else "unknown"
    refusal, key = work_meter.charge(request.cookies, f"route:{client}",
                                     ("gan-grid", entry.version, q.n, q.means, q.stds, q.seed), flops)
    if refusal is not None:
        return PlainTextResponse(work_meter.refusal_message(refusal, key, flops), status_code=429,
                                 headers={"Retry-After": str(max(1, math.ceil(refusal.wait_s)))})
    png = await run_in_threadpool(gan_grids.latent_points_png, entry.version, q.n, q.means, q.stds, q.seed, entry.model,
                                  q.last)
    # the same URL always names the same picture (the ticket fixes the weights): the browser may keep it
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def routes() -> list[Any]:
    """The routes serve.py mounts beside Streamlit's own."""
    from starlette.routing import Route

    return [Route(ROUTE_PATH + "/{ticket}", gan_grid, methods=["GET"])]


@contextlib.asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    """serve.py's lifespan: from here on, pages in this process may use the route."""
    tickets().served = True
    try:
        yield
    finally:
        tickets().served = False
