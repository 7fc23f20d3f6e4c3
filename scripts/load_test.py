"""Classroom load test (a script, not a unit test): one `streamlit run app.py` server, two jobs training, and N
browser sessions (Playwright contexts in Debian's Chromium) that watch the pages and move latent sliders for M
minutes. Reports exceptions (must be none), the server's peak memory and its trend, the points in the loss charts
(downsampled, so bounded however long the runs train), and the slider latency under load against the idle figure.

    nice .venv/bin/python scripts/load_test.py --minutes 3 --sessions 20 --out artifacts/load-test.txt

Everything runs in a temporary runs folder with an empty data root (the offline `digits` dataset), never in runs/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
try:
    from playwright.async_api import TimeoutError as PlaywrightTimeout
except ImportError:  # reported when the script starts the browser
    PlaywrightTimeout = TimeoutError
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 90_000
SLIDER_TIMEOUT_MS = 30_000
RSS_EVERY_S = 3.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the server did not become healthy")


# ---- browser helpers (Streamlit's own e2e patterns, async) ----

async def wait_app(page, idle: bool = False) -> None:
    """Connected and the page's title drawn. Under load the live fragments keep the script state 'running' most of
    the time, so only the idle measurement also waits for 'notRunning'."""
    await page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
        state="attached", timeout=TIMEOUT_MS)
    await page.get_by_test_id("stHeading").first.wait_for(state="visible", timeout=TIMEOUT_MS)
    if idle:
        await page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
            state="attached", timeout=TIMEOUT_MS)


async def exceptions_on(page) -> list[str]:
    return [await e.inner_text() for e in await page.get_by_test_id("stException").all()]


async def move_slider(page, slider_key: str, image_key: str, press: str) -> float | None:
    """Press a key on a slider; seconds until its image is replaced by a different, loaded one (None: unchanged)."""
    sel = f".st-key-{image_key}"
    await page.wait_for_function("(sel) => { const i = document.querySelector(sel + ' img');"
                                 " return i && i.complete && i.naturalWidth > 0; }", arg=sel, timeout=TIMEOUT_MS)
    old = await page.locator(f"{sel} img").first.get_attribute("src")
    thumb = page.locator(f".st-key-{slider_key}").get_by_role("slider")
    await thumb.focus()
    t0 = time.perf_counter()
    await page.keyboard.press(press)
    try:
        await page.wait_for_function(
            "([sel, old]) => { const i = document.querySelector(sel + ' img');"
            " return i && i.getAttribute('src') !== old && i.complete && i.naturalWidth > 0; }",
            arg=[sel, old], timeout=SLIDER_TIMEOUT_MS, polling=20)
    except Exception:  # noqa: BLE001 - an identical image (same src) or a server too slow: not a latency sample
        return None
    return time.perf_counter() - t0


async def chart_points(page) -> int:
    """The most points in any trace of any Plotly chart on the page (what the browser holds)."""
    try:
        await page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                                     ".some(el => el.data && el.data.length)", timeout=15_000)
    except Exception:  # noqa: BLE001 - a page without a chart
        return 0
    return await page.evaluate(
        "() => Math.max(0, ...Array.from(document.querySelectorAll('.js-plotly-plot'))"
        ".flatMap(el => (el.data || []).map(t => (t.x || []).length)))")


async def slider_walk(page, run_id: str, n: int, rng: random.Random, latencies: list[float],
                      values: dict[int, int]) -> None:
    """n presses on the VAE's z sliders (a bounded random walk), each timed until the decoded image changes."""
    for _ in range(n):
        d = rng.randrange(2)
        v = values.get(d, 0)
        press = "ArrowRight" if (v < 20 and rng.random() < 0.5) or v <= -20 else "ArrowLeft"
        dt = await move_slider(page, f"vae-z{d}-{run_id}", f"vae-zimg-{run_id}", press)
        values[d] = v + (1 if press == "ArrowRight" else -1)
        if dt is not None:
            latencies.append(dt)


# ---- the sessions ----

async def session(i: int, browser, url: str, runs: dict[str, str], stop_at: float, out: dict) -> None:
    rng = random.Random(i)
    ctx = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await ctx.new_page()
    page.on("pageerror", lambda e: out["page_errors"].append(f"session {i}: {e}"))
    values: dict[int, int] = {}
    pages = [f"{url}/vae?run={runs['explore']}", f"{url}/vae?run={runs['vae']}", f"{url}/gan?run={runs['gan']}",
             f"{url}/runs", f"{url}/"]
    k = i % len(pages)  # sessions start on different pages
    try:
        await asyncio.sleep(rng.uniform(0, 10))  # students arrive over ten seconds
        while time.monotonic() < stop_at:
            target = pages[k % len(pages)]
            k += 1
            try:
                await visit(page, target, runs, rng, values, out)
            except PlaywrightTimeout as e:  # a page too slow to draw within 90 s: counted, and the student moves on
                out["timeouts"].append(f"session {i} on {target}: {str(e).splitlines()[0][:120]}")
            found = await exceptions_on(page)
            out["exceptions"] += [f"session {i} on {target}: {e[:300]}" for e in found]
        out["heap_mb"].append(await page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize"
                                                  " / 1048576 : 0"))
    except Exception as e:  # noqa: BLE001 - a session that breaks is a finding, not a crash of the test
        out["session_errors"].append(f"session {i}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    finally:
        await ctx.close()


async def visit(page, target: str, runs: dict[str, str], rng: random.Random, values: dict[int, int],
                out: dict) -> None:
    """One page visit of a student: open it, then move sliders or watch the live views."""
    await page.goto(target, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    await wait_app(page)
    out["visits"] += 1
    if target.endswith(runs["explore"]):
        values.clear()  # a fresh page starts the sliders at 0
        await slider_walk(page, runs["explore"], 6, rng, out["latency"], values)
    elif "/gan?" in target:
        await asyncio.sleep(4)  # watch the live view refresh
        await move_slider(page, f"gan-means-{runs['gan']}", f"gan-grid-{runs['gan']}", "ArrowRight")
    else:
        await asyncio.sleep(6)  # watch: the sidebar and the live chart refresh by themselves
    if "/vae?" in target or "/gan?" in target:
        out["chart_points"] = max(out["chart_points"], await chart_points(page))


async def sample_rss(pid: int, stop: asyncio.Event, samples: list[tuple[float, float]]) -> None:
    import psutil

    proc = psutil.Process(pid)
    t0 = time.monotonic()
    while not stop.is_set():
        try:
            samples.append((time.monotonic() - t0, proc.memory_info().rss / 2**20))
        except psutil.Error:
            return
        try:
            await asyncio.wait_for(stop.wait(), RSS_EVERY_S)
        except asyncio.TimeoutError:
            pass


async def drive(url: str, runs: dict[str, str], args, server_pid: int, start_jobs) -> dict:
    from playwright.async_api import async_playwright

    out = {"latency": [], "exceptions": [], "page_errors": [], "session_errors": [], "timeouts": [], "visits": 0,
           "chart_points": 0,
           "heap_mb": [], "idle_latency": [], "rss": []}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # idle: one session, no jobs training
        ctx = await browser.new_context(viewport={"width": 1300, "height": 900})
        page = await ctx.new_page()
        await page.goto(f"{url}/vae?run={runs['explore']}", wait_until="domcontentloaded", timeout=TIMEOUT_MS)
        await wait_app(page, idle=True)
        await slider_walk(page, runs["explore"], 3, random.Random(99), [], {})  # warm-up: imports, caches
        await page.goto(f"{url}/vae?run={runs['explore']}", wait_until="domcontentloaded", timeout=TIMEOUT_MS)
        await wait_app(page, idle=True)
        await slider_walk(page, runs["explore"], args.idle_moves, random.Random(7), out["idle_latency"], {})
        await ctx.close()
        # load: two jobs training, N sessions for M minutes, the server's memory sampled throughout
        runs.update(start_jobs())
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(server_pid, stop, out["rss"]))
        stop_at = time.monotonic() + args.minutes * 60
        await asyncio.gather(*(session(i, browser, url, runs, stop_at, out) for i in range(args.sessions)))
        stop.set()
        await sampler
        await browser.close()
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def report(out: dict, args, jobs_info: str, log_tail: str) -> str:
    rss = out["rss"]
    values = [m for _, m in rss]
    third = max(1, len(values) // 3)
    first, last = statistics.mean(values[:third]), statistics.mean(values[-third:])
    half = rss[len(rss) // 2:]
    slope = 0.0
    if len(half) > 2:
        ts, ms = [t for t, _ in half], [m for _, m in half]
        tm, mm = statistics.mean(ts), statistics.mean(ms)
        slope = sum((t - tm) * (m - mm) for t, m in half) / max(1e-9, sum((t - tm) ** 2 for t in ts)) * 60
    lat, idle = out["latency"], out["idle_latency"]
    lines = [
        f"load test: {args.sessions} browser sessions (Playwright contexts, Chromium) for {args.minutes} min, "
        f"two jobs training; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores",
        f"jobs: {jobs_info}",
        f"page visits: {out['visits']}; visits that timed out (page not drawn, or slider image not replaced, "
        f"within 90 s): {len(out['timeouts'])}; sessions that broke: {len(out['session_errors'])}",
        f"exceptions shown in pages: {len(out['exceptions'])}; browser page errors: {len(out['page_errors'])}; "
        f"tracebacks in the server log: {log_tail.count('Traceback')}",
        f"server RSS: start {values[0]:.0f} MB, peak {max(values):.0f} MB, first third mean {first:.0f} MB, last third "
        f"mean {last:.0f} MB, trend over the second half {slope:+.1f} MB/min ({len(values)} samples every "
        f"{RSS_EVERY_S:.0f} s)",
        f"loss charts: at most {out['chart_points']} points in one trace (the builders cap curves at 2,000)",
        f"browser JS heap at the end: median {statistics.median(out['heap_mb'] or [0]):.0f} MB, "
        f"max {max(out['heap_mb'] or [0]):.0f} MB per page",
        f"slider -> new image, idle (1 session, no jobs): n={len(idle)}, median {statistics.median(idle or [0]) * 1000:.0f} ms, "
        f"p95 {pct(idle, 0.95) * 1000:.0f} ms",
        f"slider -> new image, under load: n={len(lat)}, median {statistics.median(lat or [0]) * 1000:.0f} ms, "
        f"p95 {pct(lat, 0.95) * 1000:.0f} ms, max {max(lat or [0]) * 1000:.0f} ms",
    ]
    for name in ("exceptions", "page_errors", "session_errors", "timeouts"):
        lines += [f"  {name}: {e}" for e in out[name][:20]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--idle-moves", type=int, default=12)
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "load-test.txt"))
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="genlib-load-"))
    (base / "runs").mkdir()
    (base / "data").mkdir()
    env = dict(os.environ, GENLIB_RUNS_DIR=str(base / "runs"), GENLIB_DATA_ROOT=str(base / "data"),
               GENLIB_JOB_BACKEND="process", GENLIB_MAX_JOBS="2", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    env.pop("GENLIB_TEACHER_TOKEN", None)
    os.environ.update({k: env[k] for k in ("GENLIB_RUNS_DIR", "GENLIB_DATA_ROOT", "PYTHONPATH")})
    from genlib.jobs import JobManager
    from genlib.runs import RunStore

    mgr = JobManager(RunStore(base / "runs"), backend="process", max_jobs=2)
    print("pre-training the VAE the sessions explore...", file=sys.stderr)
    # 80 epochs logged every step: 2,400 metric rows, more than a chart may draw (2,000), so the cap is exercised
    explore = mgr.submit("vae", {"hidden": 64, "latent": 2},
                         {"dataset": "digits", "batch_size": 50, "epochs": 80, "log_every": 1, "threads": 1,
                          "n_samples": 16})
    assert mgr.wait(explore, timeout=600).state == "finished"

    def start_jobs() -> dict[str, str]:
        # two long jobs that log every step, so their metric logs outgrow the charts' 2,000-point cap
        common = {"dataset": "digits", "epochs": 100_000, "log_every": 1, "threads": 1, "n_samples": 16}
        return {"vae": mgr.submit("vae", {"hidden": 128, "latent": 2}, {**common, "batch_size": 50}),
                "gan": mgr.submit("gan", {"preset": "fast"}, {**common, "batch_size": 32, "lr": 2e-4})}

    port = free_port()
    log_path = base / "streamlit.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                                   "--server.port", str(port), "--server.address", "127.0.0.1",
                                   "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    runs = {"explore": explore}
    try:
        wait_healthy(url, server)
        out = asyncio.run(drive(url, runs, args, server.pid, start_jobs))
        rows = {k: sum(1 for _ in open(mgr.store.get(runs[k]).metrics_path)) for k in ("explore", "vae", "gan")}
        jobs = ", ".join(f"{k} {runs[k]} at step {mgr.status(runs[k]).step:,} ({rows[k]:,} metric rows)"
                         for k in ("explore", "vae", "gan"))
    finally:
        mgr.close(stop_jobs=True, timeout=30)
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    text = report(out, args, jobs, log_path.read_text(errors="replace"))
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    bad = out["exceptions"] or out["page_errors"] or out["session_errors"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
