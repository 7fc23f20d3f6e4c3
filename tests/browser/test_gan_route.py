"""The GAN page's latent-point sliders in Chromium as `make run` serves them (serve.py): the sliders live in the page
and fetch each grid from the server's grid route, with no Streamlit rerun per move. After key presses the grid on
screen is the generator's at the positions shown; letting go writes them into the link, which gives a second browser
the same sliders and grid; the route's refusals reach the page as sentences."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

try:
    from playwright.sync_api import expect
except ImportError:  # conftest.py skips every test here (or, with GENLIB_REQUIRE_BROWSER=1, errors them)
    expect = None
else:
    expect.set_options(timeout=60_000)

from st_pages import open_page  # noqa: E402

RUN_ID = "pretrained-gan"
UID = f"gan-route-grid-{RUN_ID}"


def _expected(runs_dir: str, n: int, means: float, stds: float, seed: int) -> np.ndarray:
    from dashboard.explore import gan_grids
    from genlib.images import read_png
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.runs.store import RunStore

    weights = RunStore(runs_dir).get(RUN_ID).latest_weights()
    model = model_from_checkpoint(load_checkpoint(weights, device="cpu"), device="cpu").eval()
    return read_png(gan_grids.latent_grid(model, n, means, stds, seed)).astype(int)


def _handle(page) -> dict:
    return page.evaluate("(uid) => { const h = (window.__genlibGanGrids || {})[uid]; return h ? "
                         "{loads: h.loads, url: h.url, error: h.error} : null; }", UID)


def _wait_for_grid(page, means: float, stds: float, n: int = 36, seed: int = 0) -> str:
    """Wait until the page has painted the grid of these positions; returns its route URL."""
    want = f"n={n}&means={means:.2f}&stds={stds:.2f}&seed={seed}"
    page.wait_for_function("([uid, want]) => { const h = (window.__genlibGanGrids || {})[uid]; "
                           "return h && h.url && h.url.includes(want); }", arg=[UID, want], timeout=60_000)
    return _handle(page)["url"]


def _shown(page, url: str) -> np.ndarray:
    """The grid behind the painted picture's route URL, fetched as this browser (its cookies)."""
    from urllib.parse import urljoin

    from genlib.images import read_png

    r = page.request.get(urljoin(page.url, url))
    assert r.ok, f"GET {url}: {r.status} {r.text()[:200]}"
    return read_png(r.body()).astype(int)


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and np.abs(got - want).max() <= 1  # one grey level: sums in another order


@pytest.fixture
def gan_run(browser_env):
    runs_dir = browser_env["GENLIB_RUNS_DIR"]
    if not (Path(runs_dir) / RUN_ID).exists():  # the shipped 'fast' GAN, copied into the server's runs folder
        shutil.copytree(Path(__file__).resolve().parents[2] / "pretrained" / RUN_ID, Path(runs_dir) / RUN_ID)
    return runs_dir


def test_in_page_sliders_fetch_the_generators_grid_and_keep_it_in_the_link(browser, page, app_url, gan_run,
                                                                          screenshot_dir):
    open_page(page, f"{app_url}/gan?run={RUN_ID}")
    assert _close(_shown(page, _wait_for_grid(page, 1.0, 1.0)), _expected(gan_run, 36, 1.0, 1.0, 0))
    means = page.get_by_label("scale_means", exact=True)
    expect(means).to_have_value("1")
    means.focus()
    for _ in range(3):  # three presses without waiting: a grid still on its way must not win over the last one
        page.keyboard.press("ArrowRight")
    expect(means).to_have_value("2.5")
    assert _close(_shown(page, _wait_for_grid(page, 2.5, 1.0)), _expected(gan_run, 36, 2.5, 1.0, 0)), \
        "the grid after three ArrowRight presses is not the generator's at scale_means = 2.5"
    stds = page.get_by_label("scale_stds", exact=True)
    stds.focus()
    page.keyboard.press("ArrowLeft")
    assert _close(_shown(page, _wait_for_grid(page, 2.5, 0.5)), _expected(gan_run, 36, 2.5, 0.5, 0))
    # letting go (a key press is one) writes the positions into the address, for a copied link
    page.wait_for_function("(k) => window.location.search.includes(k)", arg=f"gan-means-{RUN_ID}=2.5")
    page.wait_for_function("(k) => window.location.search.includes(k)", arg=f"gan-stds-{RUN_ID}=0.5")
    expect(means).to_have_value("2.5")  # the reruns that answered the releases did not pull the thumbs back
    page.screenshot(path=str(screenshot_dir / "gan-route-sliders.png"))
    student_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        student = student_ctx.new_page()
        open_page(student, page.url)
        expect(student.get_by_label("scale_means", exact=True)).to_have_value("2.5")
        expect(student.get_by_label("scale_stds", exact=True)).to_have_value("0.5")
        assert _close(_shown(student, _wait_for_grid(student, 2.5, 0.5)), _expected(gan_run, 36, 2.5, 0.5, 0))
    finally:
        student_ctx.close()


def test_the_server_side_toggle_keeps_the_positions_and_the_route_refuses_what_it_must(page, app_url, gan_run):
    open_page(page, f"{app_url}/gan?run={RUN_ID}&gan-means-{RUN_ID}=-2")
    url = _wait_for_grid(page, -2.0, 1.0)
    page.get_by_text("Server-side sliders").first.click()  # Streamlit's sliders take over where the page's were
    thumb = page.locator(f".st-key-gan-means-{RUN_ID}").get_by_role("slider")
    expect(thumb).to_have_value("-2")
    # the route: a made-up ticket and a value off the sliders' lattice are refused with a sentence each
    ticket_url = url.split("?")[0]
    bad = page.request.get(f"{app_url}{ticket_url.rsplit('/', 1)[0]}/not-a-ticket?n=36&means=1&stds=1&seed=0")
    assert bad.status == 404 and "no longer shown" in bad.text()
    off = page.request.get(f"{app_url}{ticket_url}?n=36&means=1.25&stds=1&seed=0")
    assert off.status == 400 and "multiple of 0.5" in off.text()
