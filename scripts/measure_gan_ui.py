"""The GAN page's latent-point sliders in Chromium, three ways side by side (a measurement, not a test; run through
`scripts/measure_ui.py --gan`): the page's own sliders fetching each grid from the grid route (serve.py, the default),
Streamlit's sliders with grids made one step ahead (?gan-server=true), and Streamlit's sliders with each grid made
when asked ($GENLIB_GAN_AHEAD=0). ArrowRight on the focused slider -> the new grid loaded, timed in the page; each
preset's run ('fast': the shipped pretrained GAN; 'seed': a seed-preset GAN trained 20 steps here), idle and while a
VAE job trains at the dashboard workers' niceness.

    .venv/bin/python scripts/measure_ui.py --gan --moves 30 --data-root ../shared/data
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from measure_ui import REPO, VAE_CONFIG, Server, log, slider_latencies, summary
from st_pages import open_page

# scale_means from 1.0 to 10 and scale_stds from 1.0 to 10 in steps of 0.5 are 18 fresh positions each
GAN_MOVES_PER_SLIDER = 18
LABELS = ("scale_means", "scale_stds")  # the page's own sliders (dashboard/explore/gan_sliders.py)


def streamlit_slider_latencies(page, run_id: str, moves: int) -> dict[str, Any]:
    """Streamlit's sliders: ArrowRight on means, then stds -> the new grid loaded (at most 2 x 18 moves)."""
    return slider_latencies(page, f".st-key-gan-grid-{run_id}", [f"gan-means-{run_id}", f"gan-stds-{run_id}"],
                            min(moves, 2 * GAN_MOVES_PER_SLIDER), per_slider=GAN_MOVES_PER_SLIDER)


def route_slider_latencies(page, run_id: str, moves: int, timeout_ms: int = 30_000) -> dict[str, Any]:
    """The page's own sliders: ArrowRight on means, then stds -> the fetched grid painted (the component's own
    clock, from the slider's input event to the image's load event). No wait for Streamlit between presses: the
    release each press sends reruns the panel in the background, as when a student taps the key."""
    uid = f"gan-route-grid-{run_id}"
    handle = "(uid) => { const h = (window.__genlibGanGrids || {})[uid]; return h ? [h.loads, h.lastMs] : null; }"
    page.wait_for_function(f"(uid) => {{ const h = ({handle})(uid); return h && h[0] >= 1; }}", arg=uid,
                           timeout=60_000)
    out, missed = [], 0
    for i in range(min(moves, 2 * GAN_MOVES_PER_SLIDER)):
        page.get_by_label(LABELS[(i // GAN_MOVES_PER_SLIDER) % 2], exact=True).focus()
        loads = page.evaluate(handle, uid)[0]
        page.keyboard.press("ArrowRight")
        try:
            page.wait_for_function(f"([uid, n]) => ({handle})(uid)[0] > n", arg=[uid, loads], timeout=timeout_ms)
        except Exception:  # noqa: BLE001 - no new grid within the timeout
            missed += 1
            continue
        out.append(page.evaluate(handle, uid)[1])
    return {"ms": out, "missed": missed}


def measure_gan(args, browser, env: dict[str, str], runs_dir: Path, dataset: str, data_root: str,
                work: Path) -> dict[str, Any]:
    """Each preset's figures, idle then while a VAE job trains, on freshly opened pages; the three ways interleaved
    (their order alternates), on two servers side by side: GENLIB_GAN_AHEAD=1 (the route, and Streamlit's sliders
    made ahead) and =0 (made when asked)."""
    from genlib.runs.pretrained import install
    from genlib.runs.store import RunStore

    store = RunStore(runs_dir)
    install(store)
    runs = {"fast": "pretrained-gan"}
    log("GAN: training a seed-preset GAN for 20 steps (its sliders' latency does not depend on its quality)")
    out = subprocess.run([sys.executable, "-m", "genlib", "train", "gan", "--preset", "seed", "--dataset", "digits",
                          "--max-steps", "20", "--runs-dir", str(runs_dir), "--quiet"],
                         cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if out.returncode == 0:
        runs["seed"] = json.loads(out.stdout.strip().splitlines()[-1])["run_id"]
    else:
        log(f"GAN: the seed-preset run failed, measuring 'fast' only:\n{out.stderr[-1500:]}")
    servers = {flag: Server(dict(env, GENLIB_JOB_BACKEND="process", GENLIB_GAN_AHEAD=flag),
                            work / f"streamlit-gan-ahead{flag}.log", options=args.st_option) for flag in ("1", "0")}
    ways = {"route": ("1", "", route_slider_latencies), "ahead": ("1", "&gan-server=true", streamlit_slider_latencies),
            "asked": ("0", "&gan-server=true", streamlit_slider_latencies)}
    result: dict[str, Any] = {}
    job = None
    try:
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        for phase in ("idle", "training"):
            if phase == "training":
                cmd = ["nice", "-n", "10", sys.executable, "-m", "genlib", "train", "vae", "--dataset", dataset,
                       "--data-root", data_root, "--hidden", str(VAE_CONFIG["hidden"]), "--latent",
                       str(VAE_CONFIG["latent"]), "--batch-size", str(VAE_CONFIG["batch_size"]), "--epochs", "50",
                       "--runs-dir", str(work / "gan-load-runs"), "--quiet"]
                job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                metrics = list((work / "gan-load-runs").glob("*/metrics.jsonl"))
                t0 = time.time()
                while not metrics and time.time() - t0 < 300:  # past its imports and data loading: training
                    time.sleep(1)
                    metrics = list((work / "gan-load-runs").glob("*/metrics.jsonl"))
            for i, (preset, run_id) in enumerate(runs.items()):
                order = list(ways) if i % 2 == 0 else list(ways)[::-1]  # interleaved: no way always first
                for way in order:
                    flag, params, measure = ways[way]
                    open_page(page, f"{servers[flag].url}/gan?run={run_id}{params}")
                    log(f"GAN ({preset}, {way}) {phase}: {args.moves} slider moves")
                    res = measure(page, run_id, args.moves)
                    result[f"{preset}_{phase}_{way}"] = summary(res["ms"]) | {"missed": res["missed"]}
        ctx.close()
    finally:
        if job is not None:
            job.terminate()
            job.wait(30)
        for server in servers.values():
            server.close()
    return result
