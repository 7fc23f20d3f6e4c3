"""The RBM page's Physics section in a real Chromium: a small pre-made Ising study (two temperatures, tiny Monte Carlo
sets, RBMs trained a few hundred steps in-process through genlib) opens with the thermodynamics chart, the table, the
Monte Carlo and RBM lattices side by side and the correlation function G(r), and no exception; screenshot in
artifacts/screenshots/ising.png.
"""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

try:
    from playwright.sync_api import expect
except ImportError:  # conftest.py skips every test here
    expect = None
else:
    expect.set_options(timeout=60_000)

APP_TIMEOUT_MS = 90_000
from st_pages import wait_for_app_run  # noqa: E402 (scripts/ is on sys.path)
SWEEP = "sweep-browser"


@pytest.fixture(scope="module")
def ising_study(browser_env):
    """One sweep of two temperatures in the server's runs folder: Monte Carlo data (n = 300, L = 8) cached in its
    data root, one RBM per temperature trained 60 CD steps and saved as a finished run."""
    import torch

    from genlib.runs.checkpoints import save_checkpoint
    from genlib.data import load_dataset
    from genlib.ising.compare import SweepPlan
    from genlib.models import build_model
    from genlib.runs.store import RunStore
    from genlib.training import TrainConfig, train

    torch.set_num_threads(1)
    store = RunStore(browser_env["GENLIB_RUNS_DIR"])
    plan = SweepPlan(sweep_id=SWEEP, L=8, temperatures=(1.8, 3.0), n=300, epochs=20, batch_size=100, k=2)
    for job in plan.jobs():
        tc = {**job["train_config"], "data_root": browser_env["GENLIB_DATA_ROOT"]}
        data = load_dataset(tc["dataset"], root=tc["data_root"])
        torch.manual_seed(0)
        model = build_model("rbm", job["model_config"])
        model.configure_training(lr=tc["lr"])
        train(model, data, TrainConfig(**tc))
        run = store.create({"model": "rbm", "model_config": job["model_config"], "train_config": tc,
                            "dataset": tc["dataset"], "title": job["title"], "sweep": job["sweep"]})
        save_checkpoint(run.checkpoint_path, model, train_config=tc, progress={"step": 60, "epoch": 20})
        run.write_state(state="finished", step=60, epoch=20)
    return SWEEP


def test_physics_section_shows_observables_lattices_and_correlations(page, app_url, ising_study, screenshot_dir):
    page.goto(f"{app_url}/rbm", wait_until="domcontentloaded")
    wait_for_app_run(page)
    expect(page.get_by_role("heading", name="Physics: the 2-D Ising model")).to_be_visible()
    expect(page.locator(".st-key-ising-sweep-select").get_by_role("combobox")).to_have_value(
        re.compile(f"^{ising_study} · 2 temperature"))
    # the four-panel thermodynamics chart: plotly drew its SVG with the subplot titles
    curves = page.locator(f".st-key-ising-curves-{ising_study} .js-plotly-plot")
    expect(curves).to_be_visible()
    expect(curves).to_contain_text("energy per spin E/N")
    expect(curves).to_contain_text("susceptibility")
    expect(curves.locator("g.trace.scatter")).not_to_have_count(0)
    # the table, both lattices (loaded PNGs) and G(r)
    expect(page.get_by_text("z = (RBM − Monte Carlo) / combined standard error")).to_be_visible()
    for caption in ("Monte Carlo at T = 3.000", "RBM samples at T = 3.000"):  # the slider starts at the middle T
        expect(page.get_by_text(caption)).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
        ".filter(i => i.complete && i.naturalWidth >= 100).length >= 2", timeout=APP_TIMEOUT_MS)
    corr = page.locator(f".st-key-ising-corr-{ising_study} .js-plotly-plot")
    expect(corr).to_be_visible()
    expect(corr).to_contain_text("G(r)")
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.get_by_text("RBM samples at T = 3.000").scroll_into_view_if_needed()  # the app scrolls inside its own div
    page.screenshot(path=str(screenshot_dir / "ising.png"))
