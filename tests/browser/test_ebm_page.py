"""The EBM page in a real Chromium: a tiny EBM run (trained in-process into the server's runs folder) opens with its
Langevin chain and the energies printed under the images, the step slider scrubs the chain, the replay buffer's grid
shows, and the RBM tab runs Langevin and Gibbs on a tiny RBM saved beside it; screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urljoin

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

try:
    from playwright.sync_api import expect
except ImportError:  # conftest.py skips every test here
    expect = None
else:
    expect.set_options(timeout=60_000)

APP_TIMEOUT_MS = 90_000
from st_pages import wait_for_app_run, wait_image_loaded  # noqa: E402 (scripts/ is on sys.path)


@pytest.fixture(scope="module")
def rbm_run(browser_env):
    """A tiny RBM (a few hundred CD-1 steps on the offline digits, in-process) saved as a finished run, so this test
    never waits for the shared pre-training."""
    import torch

    from genlib.runs.checkpoints import save_checkpoint
    from genlib.data import load_dataset, to_unit
    from genlib.models import build_model
    from genlib.runs.store import RunStore

    torch.manual_seed(0)
    rbm = build_model("rbm", {"n_hidden": 64})
    rbm.configure_training(lr=0.1)
    x = to_unit(load_dataset("digits").x_train)
    for i in range(300):
        rbm.train_step(x[(i * 64) % 1472:(i * 64) % 1472 + 64])
    run = RunStore(browser_env["GENLIB_RUNS_DIR"]).create({"model": "rbm", "model_config": rbm.config_dict(),
                                                            "dataset": "digits", "train_config": {"dataset": "digits"}})
    save_checkpoint(run.checkpoint_path, rbm, train_config={"dataset": "digits"}, progress={"step": 300})
    run.write_state(state="finished", step=300)
    return run.id


@pytest.fixture(scope="module")
def ebm_run(browser_env, rbm_run):
    """A tiny EBM trained for a few steps on the offline digits, straight into the server's runs folder."""
    from genlib.runs.store import RunStore
    from genlib.training import TrainConfig
    from genlib.jobs.worker import run_job

    cfg = TrainConfig(dataset="digits", epochs=1, max_steps=4, batch_size=32, log_every=1, device="cpu",
                      n_samples=4, lr=1e-3)
    run = RunStore(browser_env["GENLIB_RUNS_DIR"]).create({
        "model": "ebm", "dataset": "digits", "train_config": dataclasses.asdict(cfg),
        "model_config": {"channels": (8, 8, 16, 16), "hidden": 16, "langevin_steps": 5, "buffer_size": 64,
                         "sample_steps": 5}})
    assert run_job(run)["state"] == "finished"
    return run.id


def test_ebm_page_chain_slider_replay_and_rbm(page, app_url, ebm_run, rbm_run, screenshot_dir):
    page.goto(f"{app_url}/ebm?run={ebm_run}", wait_until="domcontentloaded")
    wait_for_app_run(page)
    expect(page.get_by_role("heading", name="Energy-based model (EBM)")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    # the chain viewer: four chains from noise, each image with its energy printed under it
    chain = f"ebm-chain-img-{ebm_run}"
    old_src = wait_image_loaded(page, chain)
    expect(page.locator(f".st-key-{chain} img")).to_have_count(4)
    captions = page.locator(f".st-key-{chain}").inner_text()
    assert len(re.findall(r"E = -?\d+\.\d{3}", captions)) == 4, captions
    expect(page.locator(f".st-key-ebm-chain-energy-{ebm_run} .js-plotly-plot")).to_be_visible()
    page.screenshot(path=str(screenshot_dir / "ebm.png"), full_page=True)
    # scrub back to step 0: the images become the starting noise
    thumb = page.locator(f".st-key-ebm-lframe-{ebm_run}").get_by_role("slider")
    thumb.focus()
    page.keyboard.press("Home")
    expect(thumb).to_have_value("0")
    expect(page.locator(f".st-key-{chain} img").first).not_to_have_attribute("src", old_src, timeout=APP_TIMEOUT_MS)
    new_src = wait_image_loaded(page, chain)
    assert page.request.get(urljoin(page.url, new_src)).body() != page.request.get(urljoin(page.url, old_src)).body()
    # the replay buffer's grid, as the worker saved it
    page.get_by_role("tab", name="Replay buffer").click()
    wait_image_loaded(page, f"ebm-replay-img-{ebm_run}")
    # the RBM tab: Langevin on the free energy beside the Gibbs chain, F printed under every image
    page.get_by_role("tab", name="An RBM as an EBM").click()
    combo = page.locator(f".st-key-ebm-rbm-run-{ebm_run}").get_by_role("combobox")
    if combo.input_value() != rbm_run:  # other RBM runs (shared pre-training, shipped ones) may be listed first
        combo.click()
        page.get_by_role("option", name=rbm_run).click()
        expect(combo).to_have_value(rbm_run)
        wait_for_app_run(page)
    for name in ("langevin", "gibbs"):
        key = f"ebm-rbm-{name}-{ebm_run}"
        wait_image_loaded(page, key)
        assert len(re.findall(r"F = -?\d+\.\d{3}", page.locator(f".st-key-{key}").inner_text())) == 4
    page.screenshot(path=str(screenshot_dir / "ebm-rbm.png"), full_page=True)
