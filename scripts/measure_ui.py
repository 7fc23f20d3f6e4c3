#!/usr/bin/env python3
"""How the dashboard feels in a real browser, in numbers (a measurement, not a test):

  (a) slider-to-image latency of the VAE's latent sliders in Chromium, from the key press (ArrowRight on the focused
      slider, time taken in the page by a keydown listener), both ways the page offers them: the default sliders
      (the in-browser decoder, dashboard/explore/browser_decoder.py) to the first animation frame after the new image was
      painted; the server-side sliders (?vae-server=true, a round trip per move) to the moment the new image has
      loaded in the DOM (a MutationObserver sees the new <img src>, then its `load` event). All performance.now()
      in the page; median and 95th percentile over --moves moves, idle and while a training job runs on the same CPU;
  (b) the time from clicking "Start training" to the first point on that run's loss chart (read from the Plotly
      chart's own data in the DOM), with the server-side part split out (run created -> worker started -> first
      metrics row);
  (c) the dashboard's cost to training: images/s of that job while its page is open in a browser tab streaming
      its charts (and another tab exploring), against the same configuration run from the CLI with nothing else
      running (`python -m genlib train ... --max-steps N`, its last-line JSON images_per_second), and, where the
      dashboard gives its jobs fewer threads than PyTorch's default (1 on a 2-core CPU), the CLI at that count too;
  (d) (a)-while-training and (c) under both job backends, GENLIB_JOB_BACKEND=process (worker processes, the
      default) and =thread (training threads inside the Streamlit server), each with its own server.

A floor comes first: the same latency for a bare Streamlit app (one slider in a fragment, one 280 px PNG made with
numpy), so the table shows what the dashboard and genlib add to Streamlit's own round trip.

    .venv/bin/python scripts/measure_ui.py --data-root ../shared/data               # ~7 min on 2 CPU cores
    .venv/bin/python scripts/measure_ui.py --moves 50 --backends process --json
    .venv/bin/python scripts/measure_ui.py --gan --moves 30   # only the GAN page's latent-point sliders (~10 min)

The training job is the VAE page's default (the seed's VAE: 784-512-512-8, batch 128) on MNIST when --data-root
has it, else on the offline digits; the explored VAE is the same architecture, pre-trained for a few seconds. The
browser is Debian's Chromium on the same machine as the server (a student's browser runs on their own laptop), so
(c) is an upper bound on the dashboard's cost. Figures on a shared machine are noisy: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "scripts") not in sys.path:
    sys.path.append(str(REPO / "scripts"))
import st_harness  # noqa: E402  (the launch helpers the browser tests and the load test share)
from st_pages import open_page, wait_for_app_run  # noqa: E402
from measure_drag import key_latencies, wait_decoder  # noqa: E402  (the in-browser decoder's figures)

VAE_CONFIG = {"hidden": 512, "latent": 8, "batch_size": 128, "lr": 1e-3}  # the VAE form's defaults (the seed's)
PRETRAIN_STEPS = 150  # the explored VAE: enough for digit-like decodes
SLIDER_STEP = 0.05
SLIDER_MAX = 3.0
CLICK_ATTEMPTS = 3  # a Start training click that creates no run is retried (and counted: see the report)
CLICK_WAIT_S = 30.0
CLICKS_LOST: list[int] = []


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _chromium() -> str:
    path = st_harness.chromium_path()
    if path is None:
        raise SystemExit("error: Chromium not found (/usr/bin/chromium or `chromium` on PATH)")
    return path


def niced_chromium(nice: int, work: Path) -> str:
    """Chromium's path, or for nice > 0 a wrapper script that starts it (and so all its child processes) at that
    niceness: the measurement of a remote browser on a machine that has only one."""
    if nice <= 0:
        return _chromium()
    wrapper = work / "chromium-niced"
    wrapper.write_text(f'#!/bin/sh\nexec nice -n {int(nice)} "{_chromium()}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between order statistics (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ---- the server ----

class Server:
    """`streamlit run serve.py` (as `make run`) on a free port with the given environment; stopped on exit."""

    def __init__(self, env: dict[str, str], log_path: Path, script: str = "serve.py",
                 options: list[str] | None = None) -> None:
        self.port = st_harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            st_harness.streamlit_command(self.port, script) + [f"--{o}" if "=" in o else o for o in (options or [])],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            st_harness.wait_healthy(self.url, self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.close()
            raise SystemExit(f"error: {e}; see {log_path}") from e

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


# ---- the browser ----

RECORDER_JS = """
(imgSel) => {
  const L = window.__lat = {keys: [], loads: [], last: null};
  document.addEventListener('keydown', () => L.keys.push(performance.now()), true);
  const check = () => {
    const img = document.querySelector(imgSel + ' img');
    if (!img || img.src === L.last) return;
    L.last = img.src;
    const src = img.src;
    const done = () => L.loads.push({src, t: performance.now()});
    if (img.complete && img.naturalWidth > 0) done(); else img.addEventListener('load', done, {once: true});
  };
  new MutationObserver(check).observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  check();
}
"""


def slider_latencies(page, img_sel: str, slider_keys: list[str], moves: int,
                     timeout_ms: int = 30_000, per_slider: int | None = None) -> dict[str, Any]:
    """Press ArrowRight `moves` times on the given sliders (fresh values only: a slider is used from 0 up to its
    maximum, then the next one, so no image comes from a cache), each time waiting for the image under `img_sel`
    to be replaced and loaded; returns the latencies in ms, key press to image loaded, both timed in the page."""
    page.locator(img_sel + " img").first.wait_for(timeout=60_000)
    page.evaluate(RECORDER_JS, img_sel)
    page.wait_for_function("() => window.__lat.loads.length >= 1", timeout=timeout_ms)
    per_slider = per_slider or int(SLIDER_MAX / SLIDER_STEP)
    out, missed = [], 0
    for i in range(moves):
        key = slider_keys[(i // per_slider) % len(slider_keys)]
        page.locator(f".st-key-{key}").get_by_role("slider").focus()  # a no-op when it has the focus already
        n_loads = page.evaluate("() => window.__lat.loads.length")
        page.keyboard.press("ArrowRight")
        try:
            page.wait_for_function("(n) => window.__lat.loads.length > n", arg=n_loads, timeout=timeout_ms)
        except Exception:  # noqa: BLE001 - the same image came back (identical PNG): not a latency sample
            missed += 1
            continue
        t_key, t_load = page.evaluate("() => [window.__lat.keys[window.__lat.keys.length - 1],"
                                      " window.__lat.loads[window.__lat.loads.length - 1].t]")
        out.append(t_load - t_key)
        wait_for_app_run(page)  # let the fragment's run end before the next press
    return {"ms": out, "missed": missed}


def vae_slider_latencies(page, run_id: str, dims: list[int], moves: int) -> dict[str, Any]:
    return slider_latencies(page, f".st-key-vae-zimg-{run_id}", [f"vae-z{d}-{run_id}" for d in dims], moves)


# The floor: Streamlit alone, one slider in a fragment and one 280 px PNG made without torch (numpy + Pillow).
FLOOR_APP = """
import io
import numpy as np
import streamlit as st
from PIL import Image

@st.fragment
def panel():
    v = st.slider("z", -3.0, 3.0, 0.0, 0.05, key="z")
    rng = np.random.default_rng(int(round((v + 3) * 100)))
    img = np.kron((rng.random((28, 28)) * 255).astype(np.uint8), np.ones((10, 10), np.uint8))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    with st.container(key="img"):
        st.image(buf.getvalue(), output_format="PNG")

panel()
"""


def floor_latencies(browser, env: dict[str, str], work: Path, moves: int,
                    options: list[str] | None = None) -> dict[str, Any]:
    app = work / "floor_app.py"
    app.write_text(FLOOR_APP)
    server = Server(env, work / "streamlit-floor.log", script=str(app), options=options)
    try:
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        open_page(page, server.url + "/")
        res = slider_latencies(page, ".st-key-img", ["z"], moves)
        ctx.close()
    finally:
        server.close()
    return summary(res["ms"]) | {"missed": res["missed"]}


# ---- CPU time by process group (who pays for the dashboard) ----

def cpu_seconds(server_pid: int, worker_pid: int | None) -> dict[str, float]:
    """User + system CPU seconds so far of: the Streamlit server (itself, without children), the training worker
    process (if any), every Chromium process this script started, this script with its Playwright driver, and the
    whole machine ('machine'), so that 'others' (what other users run meanwhile) can be told apart."""
    import psutil

    def cpu(p) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return 0.0

    me = psutil.Process(os.getpid())
    kids = me.children(recursive=True)
    out = {"server": cpu(psutil.Process(server_pid))}
    if worker_pid:
        try:
            out["worker"] = cpu(psutil.Process(worker_pid))
        except psutil.NoSuchProcess:
            out["worker"] = 0.0
    is_chrome = [("chrom" in p.name().lower() or "headless" in p.name().lower()) for p in kids]
    out["chromium"] = sum(cpu(p) for p, c in zip(kids, is_chrome) if c)
    mine = {server_pid, worker_pid} | {p.pid for p, c in zip(kids, is_chrome) if c}
    out["script+driver"] = cpu(me) + sum(cpu(p) for p in kids if p.pid not in mine)
    m = psutil.cpu_times()
    out["machine"] = m.user + m.nice + m.system + getattr(m, "irq", 0) + getattr(m, "softirq", 0)
    return out


class CpuMeter:
    """Cores busy per process group between start() and stop(), with 'others' = the machine minus ours."""

    def __init__(self, server_pid: int, worker_pid: int | None = None) -> None:
        self.server_pid, self.worker_pid = server_pid, worker_pid

    def start(self) -> "CpuMeter":
        self.t0, self.c0 = time.monotonic(), cpu_seconds(self.server_pid, self.worker_pid)
        return self

    def stop(self) -> dict[str, float]:
        dt, c1 = time.monotonic() - self.t0, cpu_seconds(self.server_pid, self.worker_pid)
        cores = {k: (c1[k] - self.c0.get(k, 0.0)) / dt for k in c1}
        ours = sum(v for k, v in cores.items() if k != "machine")
        cores["others"] = max(0.0, cores.pop("machine") - ours)
        return {k: round(v, 2) for k, v in cores.items()}


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 1) if ms else float("nan"),
            "p95_ms": round(percentile(ms, 95), 1), "min_ms": round(min(ms), 1) if ms else float("nan"),
            "max_ms": round(max(ms), 1) if ms else float("nan")}


def start_training_from_form(page, store, dataset_title: str, debug_dir: Path) -> tuple[str, float]:
    """Fill nothing but the dataset (the form's defaults are the seed's VAE), click Start training; returns the
    new run's id and the seconds from the click to the first point on its loss chart (timed in the page). On a
    failure, a screenshot of the page is left in `debug_dir`."""
    try:
        page.locator(".st-key-vae-form-submit").wait_for(state="attached", timeout=60_000)
        if not page.locator(".st-key-vae-form-hidden").is_visible():
            page.get_by_text("Train a new VAE").click()
        combo = page.locator(".st-key-vae-form-dataset").get_by_role("combobox")
        if combo.input_value() != dataset_title:
            combo.click()
            page.get_by_role("option", name=dataset_title, exact=True).click()
        wait_for_app_run(page)
        before = {r.id for r in store.list()}
        page.evaluate("() => { document.addEventListener('click', () => {"
                      " if (window.__click === null) window.__click = performance.now(); }, true); }")
        run_id = None
        for attempt in range(1, CLICK_ATTEMPTS + 1):
            page.evaluate("() => { window.__click = null; }")
            page.locator(".st-key-vae-form-submit").get_by_role("button").click()
            deadline = time.monotonic() + CLICK_WAIT_S
            while run_id is None and time.monotonic() < deadline:  # the server creates the run folder on submit
                new = [r.id for r in store.list() if r.id not in before and r.id.startswith("vae-")]
                run_id = new[0] if new else None
                time.sleep(0.05)
            if run_id is not None:
                break
            shot = debug_dir / f"start-click-lost-{attempt}.png"
            page.screenshot(path=str(shot), full_page=True)
            log(f"WARNING: no run created {CLICK_WAIT_S:.0f} s after clicking Start training (attempt {attempt}); "
                f"screenshot {shot}")
            CLICKS_LOST.append(attempt)
        if run_id is None:
            raise TimeoutError(f"no run was created after {CLICK_ATTEMPTS} clicks on Start training")
        handle = page.wait_for_function(
            "(sel) => { const el = document.querySelector(sel + ' .js-plotly-plot');"
            " return el && el.data && el.data.length && (el.data[0].x || []).length >= 1 ? performance.now() : null;"
            " }", arg=f".st-key-loss-{run_id}", timeout=180_000, polling="raf")
        t_point = handle.json_value()
        return run_id, (t_point - page.evaluate("() => window.__click")) / 1000
    except Exception:
        shot = debug_dir / f"start-training-failed-{int(time.time())}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            log(f"start training failed at {page.url}; screenshot {shot}")
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise


def chart_points(page, run_id: str) -> int:
    return page.evaluate("(sel) => { const el = document.querySelector(sel + ' .js-plotly-plot');"
                         " return el && el.data && el.data.length ? (el.data[0].x || []).length : -1; }",
                         f".st-key-loss-{run_id}")


# ---- training figures from a run folder ----

def rate_between(rows: list[dict], t0: float | None = None, t1: float | None = None, skip: int = 0) -> dict | None:
    """Images/s over the metrics rows logged in [t0, t1] (after the first `skip` rows): training time only (the
    loop's own clock, without checkpoints and grids) and wall clock."""
    rows = [r for r in rows if "images" in r and "seconds" in r and "t" in r]
    rows = rows[skip:]
    if t0 is not None:
        rows = [r for r in rows if r["t"] >= t0]
    if t1 is not None:
        rows = [r for r in rows if r["t"] <= t1]
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]
    images = b["images"] - a["images"]
    return {"images": images, "train_img_s": round(images / max(b["seconds"] - a["seconds"], 1e-9), 1),
            "wall_img_s": round(images / max(b["t"] - a["t"], 1e-9), 1), "windows": len(rows) - 1}


def stop_run(store, run_id: str, timeout: float = 60) -> None:
    from genlib.runs.store import LIVE_STATES

    run = store.get(run_id)
    run.send(command="stop")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.effective_state() in LIVE_STATES:
        time.sleep(0.2)


def cli_train(runs_dir: Path, env: dict[str, str], dataset: str, data_root: str, steps: int,
              threads: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "genlib", "train", "vae", "--dataset", dataset, "--data-root", data_root,
           "--hidden", str(VAE_CONFIG["hidden"]), "--latent", str(VAE_CONFIG["latent"]),
           "--batch-size", str(VAE_CONFIG["batch_size"]), "--lr", str(VAE_CONFIG["lr"]),
           "--max-steps", str(steps), "--runs-dir", str(runs_dir), "--quiet"]
    cmd += ["--threads", str(threads)] if threads else []
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cli_figures(runs_dir: Path, env: dict[str, str], dataset: str, data_root: str, steps: int,
                threads: int | None = None) -> dict[str, Any]:
    """The CLI baseline: images/s of the whole run (its last-line JSON) and over its metrics rows (first two
    windows skipped, as the streamed figure's warm-up is)."""
    from genlib.runs.store import RunStore

    line = cli_train(runs_dir, env, dataset, data_root, steps, threads=threads)
    rows, _ = RunStore(runs_dir).get(line["run_id"]).metrics(0)
    out = {"steps": steps, "images_per_second": line["images_per_second"], "windowed": rate_between(rows, skip=2)}
    return out | ({"threads": threads} if threads else {})


def browser_slider_figures(page, url: str, run_id: str, dims: list[int], moves: int, server_pid: int,
                           worker_pid: int | None = None) -> dict[str, Any]:
    """The default sliders (the in-browser decoder): key press -> new image on screen, as `summary` gives it."""
    open_page(page, f"{url}/vae?run={run_id}")
    uid = f"vae-smooth-{run_id}"
    wait_decoder(page, uid)
    meter = CpuMeter(server_pid, worker_pid).start()
    res = key_latencies(page, uid, dims, moves)
    return summary(res["ms"]) | {"missed": res["missed"], "cores": meter.stop()}


# ---- one backend ----

def measure_backend(backend: str, args, browser, env: dict[str, str], store, explored: str, dataset: str,
                    dataset_title: str, work: Path) -> dict[str, Any]:
    log(f"[{backend}] starting the dashboard")
    server = Server(dict(env, GENLIB_JOB_BACKEND=backend), work / f"streamlit-{backend}.log",
                    options=args.st_option)
    result: dict[str, Any] = {"backend": backend}
    job = None
    try:
        explorer_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        trainer_ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        explorer, trainer = explorer_ctx.new_page(), trainer_ctx.new_page()
        # the server-side sliders: each move is a round trip (the in-browser decoder, the default, is measure_drag.py's)
        open_page(explorer, f"{server.url}/vae?run={explored}&vae-server=true")

        log(f"[{backend}] (a) idle: {args.moves} slider moves")
        meter = CpuMeter(server.proc.pid).start()
        idle = vae_slider_latencies(explorer, explored, [0, 1, 2, 3], args.moves)
        result["idle"] = summary(idle["ms"]) | {"missed": idle["missed"], "cores": meter.stop()}
        log(f"[{backend}] (a) idle: {args.moves} key presses on the default (in-browser) sliders")
        result["idle_browser"] = browser_slider_figures(explorer, server.url, explored, [0, 1, 2, 3], args.moves,
                                                        server.proc.pid)

        log(f"[{backend}] (b) Start training (VAE on {dataset}) from the form in a second browser")
        open_page(trainer, f"{server.url}/vae")
        job, first_s = start_training_from_form(trainer, store, dataset_title, work)
        run = store.get(job)
        info, state = run.info(), run.state()
        rows, _ = run.metrics(0)
        first_row_t = next((r["t"] for r in rows if "t" in r and "images" in r), None)
        result["train_to_first_point_s"] = round(first_s, 2)
        result["start_clicks_lost"] = len(CLICKS_LOST)
        CLICKS_LOST.clear()
        result["server_side_s"] = {
            "created_to_worker_start": round(state.get("started", float("nan")) - info["created"], 2),
            "created_to_first_metrics_row": round(first_row_t - info["created"], 2) if first_row_t else None}

        log(f"[{backend}] (a) while {job} trains: {args.moves} key presses on the default (in-browser) sliders")
        worker_pid = run.state().get("pid") if backend == "process" else None
        result["training_browser"] = browser_slider_figures(explorer, server.url, explored, [4, 5, 6, 7],
                                                            args.moves, server.proc.pid, worker_pid)
        log(f"[{backend}] (a) while {job} trains: {args.moves} server-side slider moves")
        open_page(explorer, f"{server.url}/vae?run={explored}&vae-server=true")
        meter = CpuMeter(server.proc.pid, worker_pid).start()
        busy = vae_slider_latencies(explorer, explored, [4, 5, 6, 7], args.moves)
        result["training"] = summary(busy["ms"]) | {"missed": busy["missed"], "cores": meter.stop()}

        log(f"[{backend}] (c) {args.stream_seconds:.0f} s of training with its page streaming")
        explorer.goto("about:blank")  # only the job's own page is open now
        meter = CpuMeter(server.proc.pid, worker_pid).start()
        points0, t0 = chart_points(trainer, job), time.time()
        refreshes, last = 0, points0
        while time.time() - t0 < args.stream_seconds:
            trainer.wait_for_timeout(500)
            p = chart_points(trainer, job)
            refreshes += p != last
            last = p
        t1 = time.time()
        result["cpu_cores_used"] = meter.stop()
        rows, _ = run.metrics(0)
        result["streaming"] = rate_between(rows, t0, t1)
        result["chart_updates_seen"] = refreshes
        result["chart_points"] = [points0, last]
        explorer_ctx.close()
        trainer_ctx.close()
    finally:
        if job is not None:
            stop_run(store, job)  # before the server goes: a thread-backend job lives in it
        server.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    shared = (REPO / ".." / "shared" / "data").resolve()  # the course machine's copy, as scripts/bench.py uses
    p.add_argument("--data-root", default=os.environ.get("GENLIB_DATA_ROOT") or str(shared),
                   help="datasets folder; MNIST there is used for the training job, else the offline digits")
    p.add_argument("--moves", type=int, default=30, help="slider moves per latency figure (default 30)")
    p.add_argument("--backends", default="process,thread", help="comma-separated: process, thread")
    p.add_argument("--stream-seconds", type=float, default=30.0,
                   help="seconds of training measured with the job's page streaming (default 30)")
    p.add_argument("--cli-steps", type=int, default=None,
                   help="steps of the CLI baseline run (default: as many as the streamed window trained, at least 300)")
    p.add_argument("--st-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a Streamlit option for every server, e.g. runner.postScriptGC=false (repeatable)")
    p.add_argument("--browser-nice", type=int, default=0, metavar="N",
                   help="run Chromium at niceness N (e.g. 19): it then only takes CPU the server and the job leave, "
                        "as if the students' browsers ran on their own laptops (the usual case); 0 (default) "
                        "lets it compete with the job like any process on this machine")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the floor (a bare Streamlit app with one slider and one image)")
    p.add_argument("--gan", action="store_true",
                   help="measure only the GAN page's latent-point sliders (each preset, idle and while a job trains)")
    p.add_argument("--json", action="store_true", help="also print every figure as one JSON object (last line)")
    p.add_argument("--keep", action="store_true", help="keep the temporary runs folder and server logs")
    args = p.parse_args(argv)
    if args.moves < 1:
        p.error("--moves must be at least 1")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in ("process", "thread") for b in backends):
        p.error("--backends takes process and/or thread")

    from playwright.sync_api import sync_playwright

    from genlib.data import DATASETS, dataset_available
    from genlib.runs.store import RunStore

    data_root = str(Path(args.data_root).resolve())
    dataset = "mnist" if dataset_available("mnist", data_root) else "digits"
    work = Path(tempfile.mkdtemp(prefix="measure-ui-"))
    runs_dir = work / "runs"
    runs_dir.mkdir()
    env = dict(os.environ, GENLIB_RUNS_DIR=str(runs_dir), GENLIB_DATA_ROOT=data_root, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH")) if x))
    store = RunStore(runs_dir)
    load_before = os.getloadavg()
    report: dict[str, Any] = {"dataset": dataset, "moves": args.moves, "cpus": os.cpu_count(),
                              "streamlit_options": args.st_option, "browser_nice": args.browser_nice,
                              "loadavg_before": [round(x, 2) for x in load_before], "backends": {}}
    finished = False
    if args.gan:
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=niced_chromium(args.browser_nice, work),
                                             args=list(st_harness.CHROMIUM_ARGS))
                try:
                    if not args.no_floor:  # Streamlit's own round trip on this machine now: the least a move costs
                        log(f"(a) the floor: a bare Streamlit slider and image, {args.moves} moves")
                        report["floor"] = floor_latencies(browser, env, work, args.moves, args.st_option)
                    from measure_gan_ui import measure_gan  # the GAN page's sliders, three ways

                    report["gan"] = measure_gan(args, browser, env, runs_dir, dataset, data_root, work)
                finally:
                    browser.close()
            finished = True
        finally:
            report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            if not (args.keep or not finished):
                shutil.rmtree(work, ignore_errors=True)
        print(f"\nGAN latent-point sliders, ArrowRight -> new grid loaded (ms), {report['moves']} moves, load average "
              f"{report['loadavg_before'][0]:.2f} before / {report['loadavg_after'][0]:.2f} after:")
        shown = ({"floor (bare app)": report["floor"]} if "floor" in report else {}) | report["gan"]
        for name, fig in shown.items():
            nan = float("nan")
            print(f"  {name:24s} median {fig.get('median_ms', nan):7.1f}  p95 {fig.get('p95_ms', nan):7.1f}"
                  f"  (n={fig.get('n')}, missed {fig.get('missed')})")
        if args.json:
            print(json.dumps(report))
        return 0
    try:
        log(f"pre-training the explored VAE ({PRETRAIN_STEPS} steps on {dataset})")
        explored = cli_train(runs_dir, env, dataset, data_root, PRETRAIN_STEPS)["run_id"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=niced_chromium(args.browser_nice, work),
                                         args=list(st_harness.CHROMIUM_ARGS))
            try:
                if not args.no_floor:
                    log(f"(a) the floor: a bare Streamlit slider and image, {args.moves} moves")
                    report["floor"] = floor_latencies(browser, env, work, args.moves, args.st_option)
                for backend in backends:
                    try:
                        report["backends"][backend] = measure_backend(backend, args, browser, env, store, explored,
                                                                      dataset, DATASETS[dataset].title, work)
                    except Exception as e:  # noqa: BLE001 - report it and measure the other backend anyway
                        log(f"[{backend}] failed: {type(e).__name__}: {e}")
                        report["backends"][backend] = {"backend": backend, "error": f"{type(e).__name__}: {e}"}
            finally:
                browser.close()
        streamed = [r["streaming"]["images"] for r in report["backends"].values() if r.get("streaming")]
        steps = args.cli_steps or max(300, int(max(streamed, default=0) / VAE_CONFIG["batch_size"]))
        log(f"(c) the same job from the CLI, nothing else running: {steps} steps")
        report["cli"] = cli_figures(work / "cli-runs", env, dataset, data_root, steps)
        from genlib.jobs.worker import dashboard_job_threads, worker_threads_from_env

        job_threads = worker_threads_from_env() or dashboard_job_threads()  # as dashboard/state.py decides them
        if job_threads:  # the dashboard's jobs ran with fewer threads than the CLI's default: that figure too
            log(f"(c) the same job from the CLI with the dashboard jobs' {job_threads} thread(s)")
            report["cli_job_threads"] = cli_figures(work / "cli-runs-threads", env, dataset, data_root, steps,
                                                    threads=job_threads)
        finished = not any("error" in r for r in report["backends"].values())
    finally:
        report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        if args.keep or not finished:
            log(f"kept {work} (server logs, runs and any failure screenshot)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(report)
    if args.json:
        print(json.dumps(report))
    return 0


def print_table(r: dict[str, Any]) -> None:
    print(f"\nDashboard UI figures: VAE {VAE_CONFIG['hidden']}-{VAE_CONFIG['latent']} on {r['dataset']}, "
          f"{r['cpus']} CPUs, load average {r['loadavg_before'][0]:.2f} before / {r['loadavg_after'][0]:.2f} after"
          + (f", streamlit options {' '.join(r['streamlit_options'])}" if r.get("streamlit_options") else "")
          + (f", Chromium at nice {r['browser_nice']} (a remote browser)" if r.get("browser_nice") else ""))
    print("\n(a, d) slider-to-image latency (ms): 'default' = the in-browser decoder (key press -> first frame after "
          "the new image is painted), 'server' = server-side sliders (?vae-server=true: key press -> new image "
          "loaded)")
    print(f"  {'backend':<8} {'phase':<15} {'n':>3} {'median':>8} {'p95':>8} {'max':>8} {'missed':>6}  "
          "cores busy: server/worker/chromium/others")
    if r.get("floor"):
        s = r["floor"]
        print(f"  {'(floor)':<8} {'bare streamlit':<15} {s['n']:>3} {s['median_ms']:>8.0f} {s['p95_ms']:>8.0f} "
              f"{s['max_ms']:>8.0f} {s['missed']:>6}")
    phases = {"idle_browser": "idle, default", "training_browser": "training, deflt",
              "idle": "idle, server", "training": "training, srv"}
    for b, res in r["backends"].items():
        for phase, label in phases.items():
            s = res.get(phase)
            if s:
                c = s.get("cores", {})
                print(f"  {b:<8} {label:<15} {s['n']:>3} {s['median_ms']:>8.0f} {s['p95_ms']:>8.0f} "
                      f"{s['max_ms']:>8.0f} {s['missed']:>6}  {c.get('server', 0):.2f}/{c.get('worker', 0):.2f}/"
                      f"{c.get('chromium', 0):.2f}/{c.get('others', 0):.2f}")
    for b, res in r["backends"].items():
        if res.get("error"):
            print(f"  {b:<8} FAILED: {res['error']}")
    print("\n(b) click 'Start training' -> first point on the loss chart (s)")
    for b, res in r["backends"].items():
        if "train_to_first_point_s" in res:
            ss = res["server_side_s"]
            lost = res.get("start_clicks_lost")
            print(f"  {b:<8} {res['train_to_first_point_s']:>6.1f} s  (run created -> worker started "
                  f"{ss['created_to_worker_start']:.1f} s, -> first metrics row {ss['created_to_first_metrics_row']} s)"
                  + (f"  WARNING: {lost} click(s) on Start training created no run and were retried" if lost else ""))
    print("\n(c) training images/s: page open and streaming vs the CLI")
    print(f"  {'where':<26} {'train img/s':>12} {'wall img/s':>11} {'images':>8}  notes")
    for b, res in r["backends"].items():
        s = res.get("streaming")
        if s:
            print(f"  {'dashboard, ' + b + ' backend':<26} {s['train_img_s']:>12,.0f} {s['wall_img_s']:>11,.0f} "
                  f"{s['images']:>8,}  {res['chart_updates_seen']} chart updates seen, points "
                  f"{res['chart_points'][0]} -> {res['chart_points'][1]}")
    for b, res in r["backends"].items():
        if res.get("cpu_cores_used"):
            print(f"  cores busy while streaming ({b} backend): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in res["cpu_cores_used"].items()))
    cli = r.get("cli")
    if cli:
        w = cli.get("windowed") or {}
        print(f"  {'CLI (windowed, same rows)':<26} {w.get('train_img_s', float('nan')):>12,.0f} "
              f"{w.get('wall_img_s', float('nan')):>11,.0f} {w.get('images', 0):>8,}  first 2 windows skipped")
        print(f"  {'CLI (last-line JSON)':<26} {cli['images_per_second']:>12,.0f} {'':>11} "
              f"{cli['steps'] * VAE_CONFIG['batch_size']:>8,}  images_per_second of the whole run")
    cli_t = r.get("cli_job_threads")
    if cli_t:
        w = cli_t.get("windowed") or {}
        print(f"  {'CLI, ' + str(cli_t['threads']) + ' thread(s) as the jobs':<26} "
              f"{w.get('train_img_s', float('nan')):>12,.0f} {w.get('wall_img_s', float('nan')):>11,.0f} "
              f"{w.get('images', 0):>8,}  windowed; last-line JSON {cli_t['images_per_second']:,.0f}")


if __name__ == "__main__":
    sys.exit(main())
