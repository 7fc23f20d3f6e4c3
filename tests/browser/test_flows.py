"""What a student does, in a real Chromium against `streamlit run serve.py`: train a VAE from its page and watch the
loss chart stream, reload and open a second browser and find the job, move latent sliders and buttons on the VAE,
GAN and RBM explorers and see the images change, list the runs, and screenshot every page to
artifacts/screenshots/ (look at them: they are what the class sees).

The tests run in file order and share one server (conftest.py). The VAE run that test_vae_training_streams starts
is the one the latent-slider test explores; the GAN and RBM are tiny runs pre-trained in worker processes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

try:
    from playwright.sync_api import expect
except ImportError:  # conftest.py skips every test here (or, with GENLIB_REQUIRE_BROWSER=1, errors them)
    expect = None
else:
    expect.set_options(timeout=30_000)

SHARED: dict[str, str] = {}  # run ids handed from one test to the next
APP_TIMEOUT_MS = 60_000
from st_pages import (by_key, image_bytes, open_page, wait_for_app_run,  # noqa: E402 (scripts/ on sys.path)
                      wait_image_loaded)
FIRST_POINT_TIMEOUT_MS = 120_000  # worker start (torch import) + data load + the first log window, on a busy CPU


# ---- helpers (Streamlit's own e2e patterns: e2e_playwright/shared/app_utils.py) ----

def image_of(page, key: str):
    return by_key(page, key).locator("img").first


def change_and_wait(page, key: str, action, timeout: int = APP_TIMEOUT_MS) -> tuple[bytes, bytes]:
    """Run `action` and wait for the keyed image to be replaced by a different, fully loaded one; returns the
    (old, new) PNG bytes."""
    old_src = wait_image_loaded(page, key)
    old = image_bytes(page, old_src)
    action()
    expect(image_of(page, key)).not_to_have_attribute("src", old_src, timeout=timeout)
    new_src = wait_image_loaded(page, key)
    return old, image_bytes(page, new_src)


def press_on_slider(page, key: str, keys: str, expected_value: str) -> None:
    """Focus the keyed slider's thumb and press a key (no mouse: a click on the track would move it too)."""
    thumb = by_key(page, key).get_by_role("slider")
    thumb.focus()
    page.keyboard.press(keys)
    expect(thumb).to_have_value(expected_value)  # 1.67's slider is an <input type=range> (react-aria)


def plot_points(page, key: str) -> int:
    """Points in the first trace of the keyed Plotly chart, read from the chart's own data (-1: no chart yet)."""
    return page.evaluate(
        "(sel) => { const el = document.querySelector(sel + ' .js-plotly-plot');"
        " return el && el.data && el.data.length ? (el.data[0].x || []).length : -1; }", f".st-key-{key}")


def wait_plot_points(page, key: str, at_least: int, timeout: int) -> int:
    page.wait_for_function(
        "([sel, n]) => { const el = document.querySelector(sel + ' .js-plotly-plot');"
        " return el && el.data && el.data.length && (el.data[0].x || []).length >= n; }",
        arg=[f".st-key-{key}", at_least], timeout=timeout, polling=100)
    return plot_points(page, key)


def full_page_screenshot(page, path: Path, max_height: int = 9000) -> None:
    """The whole page, not only the viewport: Streamlit scrolls inside stMain, so grow the viewport to the content
    (charts redraw at the new size), wait for the images, shoot, and put the viewport back."""
    size = page.viewport_size
    height = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=stMain]');"
        " const s = document.querySelector('[data-testid=stSidebarContent]');"
        " return Math.max(m ? m.scrollHeight : 0, s ? s.scrollHeight : 0, document.documentElement.scrollHeight); }")
    page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), max_height)})
    try:
        page.wait_for_function(
            "() => { const m = document.querySelector('[data-testid=stMain]');"
            " return (!m || m.scrollHeight <= m.clientHeight + 2)"
            " && Array.from(document.images).every(i => i.complete); }", timeout=10_000)
    except Exception:  # noqa: BLE001 - taller than max_height, or an image still loading: shoot what there is
        pass
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)


def selected(page, key: str):
    """The shown value of a keyed selectbox (its combobox input), for to_have_value."""
    return by_key(page, key).get_by_role("combobox")


def run_param(page) -> str | None:
    return (parse_qs(urlparse(page.url).query).get("run") or [None])[0]


# ---- the flows ----

def test_home_page(page, app_url, screenshot_dir):
    open_page(page, app_url + "/")
    expect(page.get_by_role("heading", name="Deep generative models you can watch learn")).to_be_visible()
    for label in ("Train an RBM", "Train a VAE", "Train a GAN"):
        expect(page.get_by_test_id("stMain").get_by_role("link", name=re.compile(label))).to_be_visible()
    # the empty data root: the page says MNIST is missing and the offline digits are used
    expect(page.get_by_test_id("stAlertContentWarning")).to_contain_text("digits")
    expect(page.get_by_test_id("stSidebar")).to_contain_text("Training device")
    full_page_screenshot(page, screenshot_dir / "home.png")


def test_vae_training_streams_and_survives_reload(browser, page, app_url, screenshot_dir):
    open_page(page, app_url + "/vae")
    expect(page.get_by_role("heading", name="Variational autoencoder (VAE)")).to_be_visible()
    # a small VAE on the offline digits, long enough to watch (it is stopped at the end of the test)
    for field, value in (("hidden", "64"), ("latent", "2"), ("epochs", "300")):
        box = by_key(page, f"vae-form-{field}").locator("input")
        box.fill(value)
        box.press("Tab")
    expect(selected(page, "vae-form-dataset")).to_have_value(re.compile("Digits"))
    by_key(page, "vae-form-submit").get_by_role("button").click()
    page.wait_for_url(re.compile(r"[?&]run=vae-"), timeout=APP_TIMEOUT_MS)
    run_id = run_param(page)
    SHARED["vae"] = run_id
    wait_for_app_run(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    chart = f"loss-{run_id}"

    # the loss chart gains points while the run trains, on the same page (no reload: the marker survives)
    page.evaluate("() => { window.__sameDocument = 'yes'; }")
    first = wait_plot_points(page, chart, 1, FIRST_POINT_TIMEOUT_MS)
    t0 = time.monotonic()
    later = wait_plot_points(page, chart, first + 2, APP_TIMEOUT_MS)
    assert later >= first + 2, (first, later)
    assert page.evaluate("() => window.__sameDocument") == "yes", "the page reloaded instead of streaming"
    print(f"loss chart: {first} -> {later} points in {time.monotonic() - t0:.1f} s without a reload")
    expect(page.get_by_test_id("stMain").get_by_test_id("stProgress")).to_contain_text("Running")
    full_page_screenshot(page, screenshot_dir / "vae-training.png")

    # a reload finds the job: the same run selected, listed in the sidebar as running, its chart drawn
    page.reload(wait_until="domcontentloaded")
    wait_for_app_run(page)
    assert run_param(page) == run_id
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar).to_contain_text(f"VAE · {run_id}")
    expect(sidebar).to_contain_text(re.compile(r"running · step"))
    expect(selected(page, "vae-run-select")).to_have_value(re.compile(rf"^{run_id} · running"))
    assert wait_plot_points(page, chart, 1, APP_TIMEOUT_MS) >= 1

    # a second browser (another student, no cookies, no ?run=) sees the same job
    other = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        p2 = other.new_page()
        open_page(p2, app_url + "/vae")
        expect(selected(p2, "vae-run-select")).to_have_value(re.compile(rf"^{run_id} · running"))
        expect(p2.get_by_test_id("stSidebar")).to_contain_text(f"VAE · {run_id}")
        assert wait_plot_points(p2, chart, 1, APP_TIMEOUT_MS) >= 1
    finally:
        other.close()

    # stop it (keeps a checkpoint for the explorer); the page follows the state change by itself
    stop = by_key(page, f"stop-{run_id}").get_by_role("button")
    if stop.count():
        stop.click()
    expect(selected(page, "vae-run-select")).to_have_value(re.compile(rf"^{run_id} · (stopped|finished)"),
                                                       timeout=APP_TIMEOUT_MS)


def test_vae_latent_slider_changes_image(page, app_url, screenshot_dir):
    run_id = SHARED.get("vae")
    if not run_id:
        pytest.skip("needs the VAE run started by test_vae_training_streams_and_survives_reload")
    open_page(page, f"{app_url}/vae?run={run_id}&vae-server=true")  # the server-side sliders (the fallback)
    img = f"vae-zimg-{run_id}"
    old, new = change_and_wait(page, img, lambda: press_on_slider(page, f"vae-z0-{run_id}", "ArrowRight", "0.05"))
    assert old != new, "the decoded image did not change when z0 moved"
    # and back: the cached image of z = 0 comes back
    back_old, back = change_and_wait(page, img, lambda: press_on_slider(page, f"vae-z0-{run_id}", "ArrowLeft", "0"))
    assert back == old
    full_page_screenshot(page, screenshot_dir / "vae.png")


def test_gan_explorer_controls_change_grid(page, app_url, screenshot_dir, pretrain):
    run_id = pretrain()["gan"]
    open_page(page, f"{app_url}/gan?run={run_id}&gan-server=true")
    expect(page.get_by_role("heading", name="Generative adversarial network (GAN)")).to_be_visible()
    grid = f"gan-grid-{run_id}"
    old, new = change_and_wait(page, grid, lambda: by_key(page, f"gan-newnoise-{run_id}").get_by_role("button").click())
    assert old != new, "New noise did not change the grid"
    old, new = change_and_wait(page, grid, lambda: press_on_slider(page, f"gan-means-{run_id}", "ArrowRight", "1.5"))
    assert old != new, "scale_means did not change the grid"
    full_page_screenshot(page, screenshot_dir / "gan.png")


def test_rbm_explorer_controls_change_image(page, app_url, screenshot_dir, pretrain):
    run_id = pretrain()["rbm"]
    open_page(page, f"{app_url}/rbm?run={run_id}&rbm-server=true")  # clamps by server-side sliders (the fallback)
    expect(page.get_by_role("heading", name="Restricted Boltzmann machine (RBM)")).to_be_visible()
    wait_image_loaded(page, f"rbm-filters-{run_id}")
    full_page_screenshot(page, screenshot_dir / "rbm.png")
    # the Gibbs chain: back from the last step to the start (random pixels). Neighbouring steps can show the same
    # image: a briefly trained RBM's chain often sits in one mode with saturated hidden units.
    page.get_by_role("tab", name="Gibbs chain").click()
    chain = f"rbm-chain-img-{run_id}"
    old, new = change_and_wait(page, chain, lambda: press_on_slider(page, f"rbm-gframe-{run_id}", "Home", "0"))
    assert old != new, "the Gibbs step slider did not change the chain image"
    # clamping a hidden unit changes p(v|h)
    page.get_by_role("tab", name="Clamp hidden units").click()
    clamp = f"rbm-clamp-img-{run_id}"
    thumb = by_key(page, f"rbm-h0-{run_id}").get_by_role("slider")
    before = float(thumb.input_value())
    key, value = ("ArrowLeft", before - 0.05) if before >= 0.5 else ("ArrowRight", before + 0.05)
    old, new = change_and_wait(page, clamp, lambda: press_on_slider(page, f"rbm-h0-{run_id}", key,
                                                                    f"{round(value, 2):g}"))
    assert old != new, "clamping hidden unit 0 did not change p(v|h)"
    full_page_screenshot(page, screenshot_dir / "rbm-chain-clamp.png")


def test_runs_page_lists_every_run(page, app_url, screenshot_dir, pretrain):
    ids = list(pretrain().values()) + ([SHARED["vae"]] if "vae" in SHARED else [])
    open_page(page, app_url + "/runs")
    expect(page.get_by_role("heading", name="All runs")).to_be_visible()
    table = page.get_by_test_id("stDataFrame").locator("table")
    for run_id in ids:
        expect(table).to_contain_text(run_id)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
    full_page_screenshot(page, screenshot_dir / "runs.png")
