"""dashboard/grid_route.py: the HTTP route the GAN page's sliders fetch grids from. It answers with the generator's grid
for the positions asked (the same PNG as the panel's Streamlit path), refuses bad values and unknown tickets with a
sentence, charges each new grid to the browser's share of the explorer work, and serve.py mounts it."""

from __future__ import annotations

import ast
import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import genlib.work_budget as wb
from dashboard import grid_route
from dashboard.explore import gan_grids
from genlib.models import build_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fast_gan():
    torch.manual_seed(0)
    return build_model("gan", {"preset": "fast", "noise_dim": 16}).eval()


def _run(coro):
    """The coroutine's result, on an event loop of its own thread: in a whole-suite run Playwright's session-wide
    browser keeps an event loop running in this one, where asyncio.run refuses to start another."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _get(ticket: str, query: str, cookies: str = "") -> tuple[int, bytes, dict]:
    """The route's answer to GET /genlib/gan-grid/<ticket>?<query>, called as Starlette calls it."""
    from starlette.requests import Request

    headers = [(b"cookie", cookies.encode())] if cookies else []
    scope = {"type": "http", "method": "GET", "path": f"{grid_route.ROUTE_PATH}/{ticket}",
             "query_string": query.encode(), "headers": headers, "path_params": {"ticket": ticket},
             "client": ("10.0.0.7", 5000)}
    response = _run(grid_route.gan_grid(Request(scope)))
    return response.status_code, bytes(response.body), dict(response.headers)


def test_the_route_draws_the_generators_grid_at_the_positions_asked(fast_gan):
    table = grid_route.tickets()
    ticket = table.offer("test-version-1", fast_gan)
    assert table.offer("test-version-1", fast_gan) == ticket  # one ticket per weights version
    status, body, headers = _get(ticket, "n=16&means=2.50&stds=0.5&seed=7&last_means=2.0&last_stds=0.5")
    assert status == 200 and headers["content-type"] == "image/png"
    assert body == gan_grids.latent_grid(fast_gan, 16, 2.5, 0.5, 7)  # what the Streamlit sliders would show
    other = _get(ticket, "n=16&means=3.0&stds=0.5&seed=7")[1]
    assert other != body and other == gan_grids.latent_grid(fast_gan, 16, 3.0, 0.5, 7)


@pytest.mark.parametrize("query, says", [
    ("n=17&means=1&stds=1&seed=0", "n must be one of 16, 25"),
    ("n=16&means=1.25&stds=1&seed=0", "means must be a multiple of 0.5"),
    ("n=16&means=11&stds=1&seed=0", "means must be a multiple of 0.5 in [-10, 10]"),
    ("n=16&means=1&stds=-0.5&seed=0", "stds must be a multiple of 0.5 in [0, 10]"),
    ("n=16&means=nan&stds=1&seed=0", "means must be"),
    ("n=16&means=1&stds=1&seed=-1", "seed must be a whole number"),
    ("n=16&means=1&stds=1", "seed must be a whole number"),
])
def test_bad_values_are_refused_with_what_they_may_be(fast_gan, query, says):
    ticket = grid_route.tickets().offer("test-version-bad", fast_gan)
    status, body, _ = _get(ticket, query)
    assert status == 400 and says in body.decode()


def test_a_ticket_no_page_offered_is_refused_and_old_tickets_are_forgotten(fast_gan):
    status, body, _ = _get("made-up-ticket", "n=16&means=1&stds=1&seed=0")
    assert status == 404 and "no longer shown" in body.decode()
    table = gan_grids.GridTickets(max_entries=2)
    first = table.offer("v1", fast_gan)
    table.offer("v2", fast_gan)
    table.offer("v3", fast_gan)
    assert table.get(first) is None and table.offer("v1", fast_gan) != first  # a new ticket when offered again
    assert len({table.offer(f"w{i}", fast_gan) for i in range(5)}) == 5 and table.get("v2") is None


def test_new_grids_are_charged_to_the_browser_and_refused_past_its_share(fast_gan, monkeypatch):
    ticket = grid_route.tickets().offer("test-version-charge", fast_gan)
    per_grid = grid_route.tickets().get(ticket).flops_per_image * 16
    assert per_grid > 0
    # a share of two grids: the third new one waits, with Retry-After and a sentence saying whose share is used
    monkeypatch.setattr(wb, "CAPS", wb.Caps(session_flops=2.5 * per_grid, server_flops=100 * per_grid))
    cookie = "_streamlit_xsrf=2|00000000|0123456789abcdef0123456789abcdef|1700000000"
    assert _get(ticket, "n=16&means=1&stds=1&seed=0", cookie)[0] == 200
    assert _get(ticket, "n=16&means=1.5&stds=1&seed=0", cookie)[0] == 200
    assert _get(ticket, "n=16&means=1&stds=1&seed=0", cookie)[0] == 200  # asked before: free
    status, body, headers = _get(ticket, "n=16&means=2&stds=1&seed=0", cookie)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert "This browser (all its tabs together)" in body.decode() and "can run in" in body.decode()


def test_serve_py_mounts_the_route_and_marks_it_served():
    """`make run` starts serve.py (an st.App of app.py with the route); its lifespan tells pages the route is up."""
    tree = ast.parse((ROOT / "serve.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "App"]
    assert len(calls) == 1 and ast.literal_eval(calls[0].args[0]) == "app.py"
    assert {k.arg for k in calls[0].keywords} == {"routes", "lifespan"}
    assert "serve.py" in (ROOT / "Makefile").read_text()
    paths = [r.path for r in grid_route.routes()]
    assert paths == [grid_route.ROUTE_PATH + "/{ticket}"]

    async def life():
        table = grid_route.tickets()
        assert not table.served
        async with grid_route.lifespan(None):
            assert table.served
        assert not table.served

    _run(life())
