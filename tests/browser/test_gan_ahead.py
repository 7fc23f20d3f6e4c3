"""The GAN page's latent-point sliders in Chromium with grids made one slider step ahead (dashboard.explore.gan):
after key presses, the grid on screen is the generator's for the slider positions shown, not a neighbour's."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

try:
    from playwright.sync_api import expect
except ImportError:  # conftest.py skips every test here (or, with GENLIB_REQUIRE_BROWSER=1, errors them)
    expect = None
else:
    expect.set_options(timeout=60_000)

from st_pages import by_key, image_bytes, open_page, wait_for_app_run, wait_image_loaded  # noqa: E402


def _expected(runs_dir: str, run_id: str, n: int, means: float, stds: float, seed: int) -> np.ndarray:
    from dashboard.explore import gan_grids
    from genlib.images import read_png
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.runs.store import RunStore

    weights = RunStore(runs_dir).get(run_id).latest_weights()
    model = model_from_checkpoint(load_checkpoint(weights, device="cpu"), device="cpu").eval()
    return read_png(gan_grids.latent_grid(model, n, means, stds, seed)).astype(int)


def _shown(page, key: str) -> np.ndarray | None:
    """The keyed grid as shown, or None when a rerun replaced it between reading its address and fetching it (the
    server drops a run's old media file, so that address answers 404)."""
    from genlib.images import read_png

    data = image_bytes(page, wait_image_loaded(page, key), replaced_ok=True)
    return None if data is None else read_png(data).astype(int)


def _shows(page, key: str, want: np.ndarray, timeout_s: float = 60.0) -> bool:
    """Whether the keyed grid comes to equal `want` (to one grey level: the server's single thread and this
    process's sum in another order) within `timeout_s`; the page may still be swapping images."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        got = _shown(page, key)
        if got is not None and got.shape == want.shape and np.abs(got - want).max() <= 1:
            return True
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(200)


def test_key_presses_show_the_generators_grid_for_the_new_positions(page, app_url, browser_env):
    import shutil
    from pathlib import Path

    # the shipped 'fast' GAN, copied into the server's runs folder (the session's pre-trained runs are not needed)
    run_id, runs_dir = "pretrained-gan", browser_env["GENLIB_RUNS_DIR"]
    if not (Path(runs_dir) / run_id).exists():
        shutil.copytree(Path(__file__).resolve().parents[2] / "pretrained" / run_id, Path(runs_dir) / run_id)
    open_page(page, f"{app_url}/gan?run={run_id}&gan-server=true")
    grid = f"gan-grid-{run_id}"
    assert _shows(page, grid, _expected(runs_dir, run_id, 36, 1.0, 1.0, 0))
    thumb = by_key(page, f"gan-means-{run_id}").get_by_role("slider")
    thumb.focus()
    page.keyboard.press("ArrowRight")  # 1.5: made ahead while the page sat still
    expect(thumb).to_have_value("1.5")
    wait_for_app_run(page)
    assert _shows(page, grid, _expected(runs_dir, run_id, 36, 1.5, 1.0, 0)), \
        "the grid after ArrowRight is not the generator's at scale_means = 1.5"
    for _ in range(3):  # three presses without waiting: the queued grids of passed positions must not win
        page.keyboard.press("ArrowRight")
    expect(thumb).to_have_value("3")
    wait_for_app_run(page)
    assert _shows(page, grid, _expected(runs_dir, run_id, 36, 3.0, 1.0, 0)), \
        "the grid is not the generator's at scale_means = 3"
    stds = by_key(page, f"gan-stds-{run_id}").get_by_role("slider")
    stds.focus()
    page.keyboard.press("ArrowLeft")
    expect(stds).to_have_value("0.5")
    wait_for_app_run(page)
    assert _shows(page, grid, _expected(runs_dir, run_id, 36, 3.0, 0.5, 0)), \
        "the grid is not the generator's at scale_stds = 0.5"
