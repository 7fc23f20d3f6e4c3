"""Classroom load test (a script, not a unit test): one `streamlit run serve.py` server (or N behind nginx), two jobs
training, and N student sessions that watch the pages and move latent sliders for M minutes. Most sessions are
browserless websocket clients speaking Streamlit's own protocol (scripts/st_ws_client.py: the server does the same
work for them as for a browser tab, reruns, fragment auto-reruns and image fetches included, while the client costs
almost no CPU); a few are real Chromium tabs (Playwright) that also check the rendered page for exceptions and
measure what the browser holds. On a 2-core machine twenty Chromium tabs would starve the server they are meant to load.

Reports: exceptions (must be none), sessions held, page visits and timeouts, the server's peak memory and its trend
(first vs last third, slope over the second half), the points in the loss charts (downsampled, so bounded however
long the runs train), and the slider latency (slider change -> new image fetched) idle vs under load, separately for
the websocket clients and the browsers; the server's CPU per viewer and the two training jobs' speed (steps/s) under
load. The summary block is printed and written to --out; the server's samples (seconds, RSS MB, connections,
threads) go beside it as <out>.server.csv.

    nice .venv/bin/python scripts/load_test.py --minutes 3 --ws-sessions 17 --browser-sessions 3 \\
        --out artifacts/load-test.txt

`--servers N` (N > 1) starts N app servers on the one runs folder behind Debian's nginx with the shipped
deploy/nginx-genlib.conf (scripts/st_harness.py renders and starts it), as docs/cluster.md sets up a class: session
number j carries the sticky cookie of server j mod N (on the websocket's upgrade and its image requests, or in the
browser profile), so the sessions divide evenly; the two jobs are started once, beside the servers, and every server
shows them. The summary adds each server's sessions held, CPU and peak RSS; the other figures are over all servers.

`--hostile-sessions N` adds N websocket students trying to take the server (hostile_session: every expensive link
with a fresh seed so no cache helps, every button pressed, in a loop); their own figures are reported apart, so the
others' slider latency and the jobs' speed can be compared with a run without them. The server runs in teacher mode
(a GENLIB_TEACHER_TOKEN nobody types), as in a lecture: a student's presses must be refused.

Everything runs in a temporary runs folder with an empty data root (the offline `digits` dataset) and the shipped
pretrained runs installed, never in runs/.
Exit status 1 if any session saw an exception or broke.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# scripts/ is on the path (this file's folder)
from st_harness import (STICKY_COOKIE, launch_chromium, nginx_path, start_app_servers,  # noqa: E402
                        start_nginx, sticky_key, stop_server, streamlit_command)
from st_ws_client import Session  # noqa: E402
from cpu_wait import SchedTotals  # noqa: E402

TIMEOUT_S = 90.0  # a page or a slider's image not there within this: a timeout, and the student moves on
WARMUP_TIMEOUT_S = 600.0  # the first page load imports torch and the models (minutes on a busy 2-core machine)
SLIDER_TIMEOUT_MS = 30_000
RSS_EVERY_S = 3.0
THINK_S = (0.3, 1.0)  # a websocket student's pause between two slider moves (a browser's is its own latency)
# the VAE's latent sliders decode in the browser by default (dashboard/explore/browser_decoder.py), which costs the server
# nothing per move; the load test measures the server-side sliders (the fallback, ?vae-server=true), the worst case
SERVER_SLIDERS = "vae-server=true"


@dataclass(frozen=True)
class Seat:
    """Where one student's session connects: the URL (the app server's, or with --servers N the proxy's), the
    sticky cookie that makes the proxy send it to app server number `server` ('' with one server)."""

    url: str
    cookie: str = ""
    server: int = 0


def new_mode() -> dict:
    return {"sessions": 0, "held": 0, "visits": 0, "timeouts": [], "exceptions": [], "session_errors": [],
            "latency": [], "idle_latency": [], "gan_route": [], "page_load": [], "idle_page_load": [], "unchanged": 0,
            "chart_points": 0, "images": 0, "images_gone": 0, "overtaken": 0, "pressed": 0, "image_bytes": 0,
            "held_by_server": {}}


def held(mode: dict, seat: Seat) -> None:
    """A session of this mode held to the end, on its seat's app server."""
    mode["held"] += 1
    mode["held_by_server"][seat.server] = mode["held_by_server"].get(seat.server, 0) + 1


# ---- websocket students ----

async def ws_slider_walk(s: Session, run_id: str, n: int, rng: random.Random, latencies: list[float],
                         mode: dict, think: bool = True) -> None:
    """n moves of the VAE's z sliders by one step (a bounded random walk), each timed until the new image is fetched."""
    for _ in range(n):
        key = f"vae-z{rng.randrange(2)}-{run_id}"
        value, lo, hi, step = s.slider(key)
        up = (rng.random() < 0.5 and value + step <= hi / 3) or value - step < lo / 3  # stay in the middle third
        value = value + step if up else value - step
        dt, _ = await s.move_slider(key, round(value, 6), f"vae-zimg-{run_id}")
        if dt is None:
            mode["unchanged"] += 1  # the same decoded image: not a latency sample
        else:
            latencies.append(dt)
        if think:
            await asyncio.sleep(rng.uniform(*THINK_S))


def ws_chart_points(s: Session) -> int:
    """The most points in any trace of any Plotly chart the server sent (what a browser would hold)."""
    most = 0
    for el in s.elements.values():
        if el.kind == "plotly_chart" and el.proto.spec:
            data = json.loads(el.proto.spec).get("data", [])
            most = max([most] + [len(t.get("x") or []) for t in data])
    return most


async def ws_visit(seat: Seat, page: str, query: str, runs: dict[str, str], rng: random.Random, mode: dict) -> None:
    """One page visit (a fresh tab: a new session): open it, then move sliders or watch its live fragments."""
    async with Session(seat.url, timeout=TIMEOUT_S, cookie=seat.cookie) as s:
        try:
            run = await s.open(page, query)
            mode["visits"] += 1
            mode["page_load"].append(run.seconds)
            if query.startswith(f"run={runs['explore']}&"):
                await ws_slider_walk(s, runs["explore"], 6, rng, mode["latency"], mode)
            elif page == "gan":
                await asyncio.sleep(4)  # watch the live view refresh (auto-reruns of its fragments)
                await ws_gan_move(s, runs["gan"], rng, mode)
            else:
                await asyncio.sleep(6)  # watch: the sidebar and the live chart refresh by themselves
            if page in ("vae", "gan"):
                mode["chart_points"] = max(mode["chart_points"], ws_chart_points(s))
        finally:
            mode["exceptions"] += [f"ws on /{page}?{query}: {e[:300]}" for e in s.exceptions]
            mode["images"] += s.images_fetched
            mode["images_gone"] += s.images_gone
            mode["overtaken"] += s.overtaken


async def ws_session(i: int, seat: Seat, runs: dict[str, str], stop_at: float, mode: dict) -> None:
    rng = random.Random(1000 + i)
    pages = [("vae", f"run={runs['explore']}&{SERVER_SLIDERS}"), ("vae", f"run={runs['vae']}"),
             ("gan", f"run={runs['gan']}"),
             ("runs", ""), ("", "")]
    k, errors = i % len(pages), 0
    await asyncio.sleep(rng.uniform(0, 10))  # students arrive over ten seconds
    while time.monotonic() < stop_at:
        page, query = pages[k % len(pages)]
        k += 1
        try:
            await ws_visit(seat, page, query, runs, rng, mode)
        except (asyncio.TimeoutError, TimeoutError) as e:
            mode["timeouts"].append(f"ws {i} on /{page}?{query}: {type(e).__name__}: {str(e)[:300]}")
        except Exception as e:  # noqa: BLE001 - a broken visit is a finding; the student reloads
            errors += 1
            mode["session_errors"].append(f"ws {i} on /{page}?{query}: {type(e).__name__}: {str(e)[:200]}")
            await asyncio.sleep(2)
    if errors == 0:
        held(mode, seat)


async def ws_idle(seats: list[Seat], runs: dict[str, str], moves: int, mode: dict) -> None:
    """The idle figure: one websocket session on the first app server, no jobs training; a warm-up walk first on
    every app server (imports, caches), so that none pays its imports under load."""
    walks = [(seat, 3, []) for seat in seats] + [(seats[0], moves, mode["idle_latency"])]
    for seat, n, latencies in walks:
        async with Session(seat.url, timeout=WARMUP_TIMEOUT_S if n == 3 else TIMEOUT_S, cookie=seat.cookie) as s:
            run = await s.open("vae", f"run={runs['explore']}&{SERVER_SLIDERS}")
            if latencies is mode["idle_latency"]:  # (the warm-up's load includes the imports)
                mode["idle_page_load"].append(run.seconds)
            await ws_slider_walk(s, runs["explore"], n, random.Random(7 + n), latencies, mode, think=False)
    mode["unchanged"] = 0


# ---- a hostile student: every expensive link and every button, in a loop ----

def hostile_links(runs: dict[str, str], rng: random.Random) -> list[tuple[str, str, dict]]:
    """(page, query, widgets to set after opening) of the links that cost the server most, each with a fresh seed
    so that no cache serves it: the RBM's longest Gibbs chains and their animation, its in-browser decoder's weights,
    the epochs' animation of a live and a finished run, the EBM's longest Langevin chains, the RBM-as-EBM chains,
    the VAE's largest manifold, the runs page."""
    from urllib.parse import urlencode

    rbm, ebm, vae, gan = runs["rbm"], runs["ebm"], runs["explore"], runs["gan"]
    seed = rng.randrange(2**31 - 1)
    chain = {"run": rbm, "rbm-tab": "Gibbs chain", f"rbm-gchains-{rbm}": 16, f"rbm-gsteps-{rbm}": 1000,
             f"rbm-gseed-{rbm}": seed}
    return [
        ("rbm", urlencode(chain), {}),
        ("rbm", urlencode({**chain, f"rbm-gseed-{rbm}": seed + 1, f"rbm-gplay-{rbm}": "true"}), {}),
        ("rbm", urlencode({"run": rbm, "rbm-tab": "Clamp hidden units"}), {}),
        ("vae", urlencode({"run": vae, f"epoch-play-{vae}": "true", "vae-tab": "Manifold", f"vae-mn-{vae}": 20,
                           f"vae-mspan-{vae}": round(rng.uniform(0.5, 4.0), 2)}), {}),
        ("gan", urlencode({"run": gan, f"epoch-play-{gan}": "true"}), {}),
        ("ebm", urlencode({"run": ebm, "ebm-tab": "Langevin chain"}),
         {f"ebm-lsteps-{ebm}": 1000, f"ebm-lseed-{ebm}": seed}),
        ("ebm", urlencode({"run": ebm, "ebm-tab": "An RBM as an EBM"}),
         {f"ebm-rsteps-{ebm}": 1000, f"ebm-rseed-{ebm}": seed}),
        ("runs", "", {}),
    ]


async def hostile_session(i: int, seat: Seat, runs: dict[str, str], stop_at: float, mode: dict) -> None:
    """One student trying to take the server until stop_at: open each expensive link, set its widgets to their most
    expensive values, press every button on the page; again, with new seeds."""
    rng = random.Random(5000 + i)
    errors = 0
    await asyncio.sleep(rng.uniform(0, 10))
    while time.monotonic() < stop_at:
        for page, query, widgets in hostile_links(runs, rng):
            if time.monotonic() >= stop_at:
                break
            s = Session(seat.url, timeout=TIMEOUT_S, cookie=seat.cookie)
            try:
                async with s:
                    run = await s.open(page, query)
                    mode["visits"] += 1
                    mode["page_load"].append(run.seconds)
                    for key, value in widgets.items():
                        if key in s.widget_keys():
                            await s.set_widget(key, value)
                    mode["pressed"] += len(await s.press_every_button())
            except (asyncio.TimeoutError, TimeoutError) as e:
                mode["timeouts"].append(f"hostile {i} on /{page}?{query}: {type(e).__name__}: {str(e)[:300]}")
            except Exception as e:  # noqa: BLE001 - a refused or broken visit is a finding; the student goes on
                errors += 1
                mode["session_errors"].append(f"hostile {i} on /{page}?{query}: {type(e).__name__}: {str(e)[:200]}")
                await asyncio.sleep(1)
            finally:
                mode["exceptions"] += [f"hostile on /{page}?{query}: {e[:300]}" for e in s.exceptions]
                mode["images"] += s.images_fetched
                mode["image_bytes"] += s.image_bytes
    if errors == 0:
        held(mode, seat)


# ---- browser students (Streamlit's own e2e patterns, async) ----

async def wait_app(page, idle: bool = False) -> None:
    """Connected and the page's title drawn. Under load the live fragments keep the script state 'running' most of
    the time, so only the idle measurement also waits for 'notRunning'."""
    await page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
        state="attached", timeout=TIMEOUT_S * 1000)
    await page.get_by_test_id("stHeading").first.wait_for(state="visible", timeout=TIMEOUT_S * 1000)
    if idle:
        await page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
            state="attached", timeout=TIMEOUT_S * 1000)


async def exceptions_on(page) -> list[str]:
    return [await e.inner_text() for e in await page.get_by_test_id("stException").all()]


async def move_slider(page, slider_key: str, image_key: str, press: str) -> float | None:
    """Press a key on a slider; seconds until its image is replaced by a different, loaded one (None: unchanged)."""
    sel = f".st-key-{image_key}"
    await page.wait_for_function("(sel) => { const i = document.querySelector(sel + ' img');"
                                 " return i && i.complete && i.naturalWidth > 0; }", arg=sel, timeout=TIMEOUT_S * 1000)
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


async def move_gan_slider(page, run_id: str) -> float | None:
    """ArrowRight on the GAN page's own scale_means slider (serve.py's grid route); seconds until the page painted
    the fetched grid (None: none within the timeout, or the run has no snapshot yet)."""
    uid = f"gan-route-grid-{run_id}"
    loads = "(uid) => ((window.__genlibGanGrids || {})[uid] || {}).loads || 0"
    try:
        await page.wait_for_function(f"(uid) => ({loads})(uid) >= 1", arg=uid, timeout=TIMEOUT_S * 1000)
    except Exception:  # noqa: BLE001 - no grid yet (no snapshot): nothing to move
        return None
    before = await page.evaluate(loads, uid)
    await page.get_by_label("scale_means", exact=True).focus()
    t0 = time.perf_counter()
    await page.keyboard.press("ArrowRight")
    try:
        await page.wait_for_function(f"([uid, n]) => ({loads})(uid) > n", arg=[uid, before],
                                     timeout=SLIDER_TIMEOUT_MS, polling=20)
    except Exception:  # noqa: BLE001 - a server too slow: not a latency sample
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


async def slider_walk(page, run_id: str, n: int, rng: random.Random, latencies: list[float], mode: dict) -> None:
    """n presses on the VAE's z sliders (a bounded random walk), each timed until the decoded image changes."""
    values: dict[int, int] = {}
    for _ in range(n):
        d = rng.randrange(2)
        v = values.get(d, 0)
        press = "ArrowRight" if (v < 20 and rng.random() < 0.5) or v <= -20 else "ArrowLeft"
        dt = await move_slider(page, f"vae-z{d}-{run_id}", f"vae-zimg-{run_id}", press)
        values[d] = v + (1 if press == "ArrowRight" else -1)
        if dt is None:
            mode["unchanged"] += 1
        else:
            latencies.append(dt)


async def ws_gan_move(s: Any, run_id: str, rng: random.Random, mode: dict) -> None:
    """One move of the GAN page's latent-point sliders: the page's own (serve.py's grid route), a GET of the route
    as its browser would send it (timed into mode["gan_route"]); else Streamlit's slider, a fragment rerun. Nothing
    before the run's first snapshot."""
    data = s.component_data(f"gan-route-grid-{run_id}")
    if data is not None:
        means = next(d for d in data["sliders"] if d["name"] == "means")
        stds = next(d for d in data["sliders"] if d["name"] == "stds")
        m = means["value"] + rng.choice((-1, 1)) * means["step"]
        m = m if means["min"] <= m <= means["max"] else means["value"] - means["step"]
        dt, status, body = await s.get(f"{data['url']}?n={data['n']}&means={m:.2f}&stds={stds['value']:.2f}"
                                       f"&seed={data['seed']}")
        if status == 200:
            mode["gan_route"].append(dt)
        elif status != 429:  # a share used up is the route doing its job; anything else is a fault
            mode["exceptions"].append(f"GAN grid route answered HTTP {status}: {body[:200]!r}")
        return
    key = f"gan-means-{run_id}"
    if key in s.widget_keys():
        value, _, hi, step = s.slider(key)
        await s.move_slider(key, value + step if value + step <= hi else value - step, f"gan-grid-{run_id}")


async def browser_visit(page, target: str, runs: dict[str, str], rng: random.Random, mode: dict) -> None:
    t0 = time.perf_counter()
    await page.goto(target, wait_until="domcontentloaded", timeout=TIMEOUT_S * 1000)
    await wait_app(page)
    mode["visits"] += 1
    mode["page_load"].append(time.perf_counter() - t0)
    if target.endswith(f"run={runs['explore']}&{SERVER_SLIDERS}"):
        await slider_walk(page, runs["explore"], 6, rng, mode["latency"], mode)
    elif "/gan?" in target:
        await asyncio.sleep(4)  # watch the live view refresh
        dt = await move_gan_slider(page, runs["gan"])
        if dt is not None:
            mode["gan_route"].append(dt)
    else:
        await asyncio.sleep(6)  # watch: the sidebar and the live chart refresh by themselves
    if "/vae?" in target or "/gan?" in target:
        mode["chart_points"] = max(mode["chart_points"], await chart_points(page))


async def browser_context(browser, seat: Seat):
    """A fresh browser profile (a student's tab) that the proxy sends to its seat's app server."""
    ctx = await browser.new_context(viewport={"width": 1300, "height": 900})
    if seat.cookie:
        name, _, value = seat.cookie.partition("=")
        await ctx.add_cookies([{"name": name, "value": value, "url": seat.url}])
    return ctx


async def browser_session(i: int, browser, seat: Seat, runs: dict[str, str], stop_at: float, mode: dict,
                          out: dict) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    rng = random.Random(i)
    url = seat.url
    ctx = await browser_context(browser, seat)
    page = await ctx.new_page()
    page.on("pageerror", lambda e: out["page_errors"].append(f"browser {i}: {e}"))
    pages = [f"{url}/vae?run={runs['explore']}&{SERVER_SLIDERS}", f"{url}/vae?run={runs['vae']}",
             f"{url}/gan?run={runs['gan']}",
             f"{url}/runs", f"{url}/"]
    k = i % len(pages)
    try:
        await asyncio.sleep(rng.uniform(0, 10))
        while time.monotonic() < stop_at:
            target = pages[k % len(pages)]
            k += 1
            try:
                await browser_visit(page, target, runs, rng, mode)
            except PlaywrightTimeout as e:
                mode["timeouts"].append(f"browser {i} on {target}: {str(e).splitlines()[0][:120]}")
            mode["exceptions"] += [f"browser {i} on {target}: {e[:300]}" for e in await exceptions_on(page)]
        out["heap_mb"].append(await page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize"
                                                  " / 1048576 : 0"))
        held(mode, seat)
    except Exception as e:  # noqa: BLE001 - a session that breaks is a finding, not a crash of the test
        mode["session_errors"].append(f"browser {i}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    finally:
        await ctx.close()


async def browser_idle(browser, seat: Seat, runs: dict[str, str], moves: int, mode: dict) -> None:
    ctx = await browser_context(browser, seat)
    page = await ctx.new_page()
    for n, latencies in ((3, []), (moves, mode["idle_latency"])):
        t0 = time.perf_counter()
        await page.goto(f"{seat.url}/vae?run={runs['explore']}&{SERVER_SLIDERS}", wait_until="domcontentloaded",
                        timeout=TIMEOUT_S * 1000)
        await wait_app(page, idle=True)
        if latencies is mode["idle_latency"]:
            mode["idle_page_load"].append(time.perf_counter() - t0)
        await slider_walk(page, runs["explore"], n, random.Random(7 + n), latencies, mode)
    await ctx.close()
    mode["unchanged"] = 0


# ---- the run ----

async def sample_servers(servers: list[tuple[int, int]], stop: asyncio.Event, out: dict, job_steps=None) -> None:
    """Every RSS_EVERY_S seconds, the app servers' ((pid, port) each) RSS (MB), open websocket/HTTP connections,
    threads and CPU seconds, summed over the servers and per server (out["per_server"][k]), and the training jobs'
    steps (job_steps(): {name: step})."""
    import psutil

    procs = [(psutil.Process(pid), port) for pid, port in servers]
    t0 = time.monotonic()
    while not stop.is_set():
        try:
            now = time.monotonic() - t0
            out["sched"].sample(process_groups({pid for pid, _ in servers}))
            out["sched_seconds"] = now
            cpu = [sum(proc.cpu_times()[:2]) for proc, _ in procs]  # user + system
            rss = [proc.memory_info().rss / 2**20 for proc, _ in procs]
            for k, (c, m) in enumerate(zip(cpu, rss)):
                out["per_server"][k]["cpu"].append((now, c))
                out["per_server"][k]["rss"].append(m)
            out["cpu"].append((now, sum(cpu)))
            out["rss"].append((now, sum(rss)))
            if job_steps is not None:
                out["steps"].append((now, job_steps()))
            out["connections"].append(sum(1 for proc, port in procs for c in proc.net_connections("tcp")
                                          if c.status == "ESTABLISHED" and c.laddr and c.laddr.port == port))
            out["threads"].append(sum(proc.num_threads() for proc, _ in procs))
        except psutil.Error:
            return
        try:
            await asyncio.wait_for(stop.wait(), RSS_EVERY_S)
        except asyncio.TimeoutError:
            pass


def process_groups(server_pids: set[int]) -> dict[str, list[int]]:
    """This script's processes by role, for scripts/cpu_wait.py: the app servers, the training jobs' workers (and
    the waiting standby), and the clients (this process, Chromium, Playwright's driver; nginx as the proxy)."""
    import psutil

    me = psutil.Process()
    groups: dict[str, list[int]] = {"server": sorted(server_pids), "jobs": [], "clients": [me.pid], "proxy": []}
    for child in me.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if child.pid in server_pids:
            continue
        role = ("jobs" if "genlib" in cmd and (" worker " in cmd or " standby" in cmd)
                else "proxy" if "nginx" in cmd else "clients")
        groups[role].append(child.pid)
    return groups


async def drive(seats: list[Seat], servers: list[tuple[int, int]], runs: dict[str, str], args, start_jobs,
                job_steps) -> dict:
    """The idle figures on the first app server, then the load: session number j (websocket, then Chromium, then
    hostile) on seats[j % len(seats)], so that the sessions divide evenly over the app servers."""
    out = {"ws": new_mode(), "browser": new_mode(), "hostile": new_mode(), "page_errors": [], "heap_mb": [],
           "rss": [], "connections": [], "threads": [], "cpu": [], "steps": [], "sched": SchedTotals(),
           "sched_seconds": 0.0,
           "per_server": [{"port": port, "sessions": 0, "cpu": [], "rss": []} for _, port in servers]}
    out["ws"]["sessions"], out["browser"]["sessions"] = args.ws_sessions, args.browser_sessions
    out["hostile"]["sessions"] = args.hostile_sessions
    n_ws, n_browser = args.ws_sessions, args.browser_sessions
    for j in range(n_ws + n_browser + args.hostile_sessions):
        out["per_server"][j % len(seats)]["sessions"] += 1

    def seat(j: int) -> Seat:
        return seats[j % len(seats)]

    await ws_idle(seats, runs, args.idle_moves, out["ws"])
    playwright = browser = None
    if args.browser_sessions:
        from playwright.async_api import async_playwright

        playwright = await async_playwright().start()
        browser = await launch_chromium(playwright)
        await browser_idle(browser, seats[0], runs, args.idle_moves, out["browser"])
    try:
        runs.update(start_jobs())  # load: two jobs training, N sessions for M minutes, the servers sampled throughout
        if args.trace_memory:
            os.kill(servers[0][0], signal.SIGUSR1)  # scripts/traced_server.py: start tracing now, after the imports
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_servers(servers, stop, out, job_steps))
        stop_at = time.monotonic() + args.minutes * 60
        await asyncio.gather(*(ws_session(i, seat(i), runs, stop_at, out["ws"]) for i in range(n_ws)),
                             *(browser_session(i, browser, seat(n_ws + i), runs, stop_at, out["browser"], out)
                               for i in range(n_browser)),
                             *(hostile_session(i, seat(n_ws + n_browser + i), runs, stop_at, out["hostile"])
                               for i in range(args.hostile_sessions)))
        stop.set()
        await sampler
    finally:
        if browser is not None:
            await browser.close()
            await playwright.stop()
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def ms(xs: list[float]) -> str:
    if not xs:
        return "n=0"
    return (f"n={len(xs)}, median {statistics.median(xs) * 1000:.0f} ms, p95 {pct(xs, 0.95) * 1000:.0f} ms, "
            f"max {max(xs) * 1000:.0f} ms")


def memory_trend(rss: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(mean of the first third, mean of the last third, least-squares slope over the second half in MB/min)."""
    values = [m for _, m in rss]
    third = max(1, len(values) // 3)
    half = rss[len(rss) // 2:]
    slope = 0.0
    if len(half) > 2:
        tm, mm = statistics.mean(t for t, _ in half), statistics.mean(m for _, m in half)
        slope = sum((t - tm) * (m - mm) for t, m in half) / max(1e-9, sum((t - tm) ** 2 for t, _ in half)) * 60
    return statistics.mean(values[:third]), statistics.mean(values[-third:]), slope


def cpu_per_viewer(cpu: list[tuple[float, float]], viewers: int, who: str = "server") -> str:
    """The server's (or servers' summed) CPU over the load phase: cores busy on average, and per viewer."""
    if len(cpu) < 2 or viewers < 1:
        return f"{who} CPU: not sampled"
    (t0, c0), (t1, c1) = cpu[0], cpu[-1]
    cores = (c1 - c0) / max(1e-9, t1 - t0)
    return (f"{who} CPU under load: {c1 - c0:,.0f} CPU-s in {t1 - t0:,.0f} s = {cores:.2f} cores busy on average, "
            f"{cores / viewers * 100:.1f}% of a core per viewer ({viewers} viewers)")


def per_server(out: dict) -> list[str]:
    """One line per app server (with --servers N > 1): its sessions held to the end, CPU and peak RSS."""
    lines = []
    for k, srv in enumerate(out["per_server"]):
        kept = sum(out[m]["held_by_server"].get(k, 0) for m in ("ws", "browser", "hostile"))
        lines.append(f"[app server {k + 1} :{srv['port']}] sessions held to the end {kept}/{srv['sessions']}; "
                     + cpu_per_viewer(srv["cpu"], srv["sessions"], "its")
                     + f"; peak RSS {max(srv['rss'] or [0]):.0f} MB")
    return lines


def job_speed(steps: list[tuple[float, dict]]) -> str:
    """Each training job's steps per second over the second half of the load phase (the first half includes its
    start: imports, data)."""
    if len(steps) < 4:
        return "jobs: speed not sampled"
    (t0, s0), (t1, s1) = steps[len(steps) // 2], steps[-1]
    rates = [f"{k} {(s1.get(k, 0) - s0.get(k, 0)) / max(1e-9, t1 - t0):.1f} steps/s" for k in sorted(s1)]
    return "training jobs' speed over the second half of the load: " + ", ".join(rates)


def report(out: dict, args, jobs_info: str, log_text: str) -> str:
    values = [m for _, m in out["rss"]] or [0.0]
    first, last, slope = memory_trend(out["rss"] or [(0.0, 0.0)])
    conns = out["connections"] or [0]
    n_exc = len(out["ws"]["exceptions"]) + len(out["browser"]["exceptions"]) + len(out["hostile"]["exceptions"])
    viewers = args.ws_sessions + args.browser_sessions + args.hostile_sessions
    many = args.servers > 1
    server = f"{args.servers} app servers' (summed)" if many else "server"
    lines = [
        "==== load test summary ====",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores; {args.minutes:g} min with "
        f"{args.ws_sessions} websocket sessions (scripts/st_ws_client.py) + {args.browser_sessions} Chromium "
        f"sessions (Playwright) + {args.hostile_sessions} hostile websocket sessions, two jobs training (workers at "
        f"nice {args.worker_nice}, as the dashboard starts them: genlib/jobs/priority.py); "
        + (f"{args.servers} app servers on one runs folder behind nginx (deploy/nginx-genlib.conf), the sessions "
           "spread evenly by the sticky cookie; " if many else "one app server; ")
        + f"load average at the start {args.load_at_start}",
        f"jobs: {jobs_info}",
        job_speed(out["steps"]),
        cpu_per_viewer(out["cpu"], viewers, server),
        "CPU and run-queue wait by role, threads alive at the 3 s samples (Streamlit's short-lived script threads are "
        "mostly missed; scripts/cpu_wait.py): " + out["sched"].summary(out["sched_seconds"]),
        *(per_server(out) if many else []),
        f"EXCEPTIONS: {n_exc} in pages (websocket {len(out['ws']['exceptions'])}, browser "
        f"{len(out['browser']['exceptions'])}, hostile {len(out['hostile']['exceptions'])}); browser page errors "
        f"{len(out['page_errors'])}; tracebacks in the server log{'s' if many else ''} {log_text.count('Traceback')}",
        f"{server} connections (TCP, established): peak {max(conns)}, median {statistics.median(conns):.0f}; "
        f"{server} threads: peak {max(out['threads'] or [0])}, last {(out['threads'] or [0])[-1]}",
        f"{server} RSS: start {values[0]:.0f} MB, peak {max(values):.0f} MB, first third mean {first:.0f} MB, last "
        f"third mean {last:.0f} MB, slope over the second half {slope:+.1f} MB/min ({len(values)} samples every "
        f"{RSS_EVERY_S:.0f} s; MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', 'unset')})",
        f"browser JS heap at the end: median {statistics.median(out['heap_mb'] or [0]):.0f} MB, "
        f"max {max(out['heap_mb'] or [0]):.0f} MB per page",
    ]
    for name, label in (("ws", "websocket"), ("browser", "browser")):
        m = out[name]
        if not m["sessions"]:
            continue
        lines += [
            f"[{label}] sessions held to the end {m['held']}/{m['sessions']}; page visits {m['visits']}, timed out "
            f"(not drawn, or no image, within {TIMEOUT_S:.0f} s) {len(m['timeouts'])}; broken visits/sessions "
            f"{len(m['session_errors'])}; loss chart traces at most {m['chart_points']} points (cap 2,000)",
            f"[{label}] slider -> new image, idle (1 session, no jobs): {ms(m['idle_latency'])}",
            f"[{label}] slider -> new image, under load: {ms(m['latency'])}; moves giving the same image "
            f"{m['unchanged']}",
            f"[{label}] GAN page's own sliders, one grid from the route (GET -> PNG), under load: "
            f"{ms(m['gan_route'])}",
            f"[{label}] page load (open -> drawn), idle: {ms(m['idle_page_load'])}; under load: {ms(m['page_load'])}",
        ]
        if name == "ws":
            lines.append(f"[{label}] images fetched {m['images']:,}; image URLs already replaced when fetched (404, "
                         f"a newer run's image follows) {m['images_gone']:,}; slider moves overtaken by a full rerun "
                         f"of the page (Streamlit drops a fragment rerun then) {m['overtaken']}")
    h = out["hostile"]
    if h["sessions"]:
        lines += [
            f"[hostile] sessions held {h['held']}/{h['sessions']}; expensive links opened {h['visits']}, buttons "
            f"pressed {h['pressed']}, timed out {len(h['timeouts'])}, broken visits {len(h['session_errors'])}; "
            f"images fetched {h['images']:,} ({h['image_bytes'] / 2**20:,.1f} MB)",
            f"[hostile] page load (open -> drawn) of the expensive links: {ms(h['page_load'])}",
        ]
    for name in ("ws", "browser", "hostile"):
        for kind in ("exceptions", "session_errors", "timeouts"):
            lines += [f"  {name} {kind}: {e}" for e in out[name][kind][:15]]
    lines += [f"  page error: {e}" for e in out["page_errors"][:15]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0, help="how long the sessions run under load")
    ap.add_argument("--ws-sessions", type=int, default=17, help="browserless websocket sessions")
    ap.add_argument("--browser-sessions", type=int, default=3, help="Chromium sessions (0: no browser needed)")
    ap.add_argument("--explore-from", metavar="RUN_DIR", help="copy this finished run folder (one --keep-explore "
                    "saved) as the explored VAE instead of training it again")
    ap.add_argument("--keep-explore", metavar="DIR", help="save the explored VAE's run folder into DIR")
    ap.add_argument("--hostile-sessions", type=int, default=0,
                    help="websocket sessions opening every expensive link and pressing every button in a loop")
    ap.add_argument("--idle-moves", type=int, default=12, help="slider moves timed for the idle figure")
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "load-test.txt"), help="where the summary is written")
    ap.add_argument("--trace-memory", metavar="DIR", help="run the server under tracemalloc (scripts/traced_server.py),"
                    " snapshots in DIR, and append what grew from a third of the way in to the end (slows the server:"
                    " not for the latency or RSS figures)")
    ap.add_argument("--trace-every", type=float, default=20.0, help="seconds between tracemalloc snapshots")
    ap.add_argument("--servers", type=int, default=1, help="app servers on the one runs folder; more than one: "
                    "behind Debian's nginx (deploy/nginx-genlib.conf), the sessions spread evenly over them by the "
                    "sticky cookie")
    args = ap.parse_args()
    if args.servers < 1:
        ap.error("--servers N needs N >= 1")
    if args.servers > 1 and args.trace_memory:
        ap.error("--trace-memory traces one server: use it with --servers 1")
    if args.servers > 1 and nginx_path() is None:
        ap.error("--servers N > 1 needs nginx in front of the servers: apt-get install nginx")
    if args.ws_sessions < 0 or args.browser_sessions < 0 or args.hostile_sessions < 0 \
            or args.ws_sessions + args.browser_sessions < 1:
        ap.error("give at least one session: --ws-sessions N and/or --browser-sessions N, both >= 0")
    args.load_at_start = " ".join(f"{x:.1f}" for x in os.getloadavg())

    base = Path(tempfile.mkdtemp(prefix="genlib-load-"))
    (base / "runs").mkdir()
    (base / "data").mkdir()
    env = dict(os.environ, GENLIB_RUNS_DIR=str(base / "runs"), GENLIB_DATA_ROOT=str(base / "data"),
               GENLIB_JOB_BACKEND="process", GENLIB_MAX_JOBS="2", PYTHONUNBUFFERED="1", GENLIB_PRETRAINED_DIR="none",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    # teacher mode, as in a lecture: a token nobody types, so every student's action that writes must be refused
    env["GENLIB_TEACHER_TOKEN"] = secrets.token_hex(16)
    os.environ.update({k: env[k] for k in ("GENLIB_RUNS_DIR", "GENLIB_DATA_ROOT", "PYTHONPATH")})
    from genlib.jobs.manager import JobManager
    from genlib.runs.store import RunStore

    from genlib.settings import Settings

    # the workers at the dashboard's niceness ($GENLIB_WORKER_NICE, 10 by default), as a teacher's Start gives them
    args.worker_nice = Settings.from_environ(env).worker_nice
    mgr = JobManager(RunStore(base / "runs"), backend="process", max_jobs=2, worker_nice=args.worker_nice)
    if args.explore_from:  # the finished VAE of an earlier load test: the same run, minutes less per measurement
        import shutil

        source = Path(args.explore_from)
        shutil.copytree(source, base / "runs" / source.name)
        explore = source.name
    else:
        print("pre-training the VAE the sessions explore...", file=sys.stderr)
        # 80 epochs logged every step: 2,400 metric rows, more than a chart may draw (2,000), so the cap is exercised
        explore = mgr.submit("vae", {"hidden": 64, "latent": 2},
                             {"dataset": "digits", "batch_size": 50, "epochs": 80, "log_every": 1, "threads": 1,
                              "n_samples": 16})
    assert mgr.wait(explore, timeout=600).state == "finished"
    if args.keep_explore:
        import shutil

        shutil.copytree(base / "runs" / explore, Path(args.keep_explore) / explore, dirs_exist_ok=True)
    # the shipped pretrained runs, as on a fresh install (read-only; the hostile links open its RBM and EBM)
    from genlib.runs.pretrained import install

    install(mgr.store, ROOT / "pretrained")
    extra = {"rbm": "pretrained-rbm", "ebm": "pretrained-ebm"}

    def start_jobs() -> dict[str, str]:
        # two long jobs that log every step, so their metric logs outgrow the charts' 2,000-point cap
        common = {"dataset": "digits", "epochs": 100_000, "log_every": 1, "threads": 1, "n_samples": 16}
        return {"vae": mgr.submit("vae", {"hidden": 128, "latent": 2}, {**common, "batch_size": 50}),
                "gan": mgr.submit("gan", {"preset": "fast"}, {**common, "batch_size": 32, "lr": 2e-4})}

    def command(port: int) -> list[str]:
        cmd = streamlit_command(port)
        if args.trace_memory:  # [python, -m, streamlit, run, app.py, options...] -> the traced launcher
            cmd = [sys.executable, str(ROOT / "scripts" / "traced_server.py"), "serve", args.trace_memory,
                   str(args.trace_every), *cmd[4:]]
        return cmd

    runs = {"explore": explore, **extra}
    jobs = "not started"
    servers, nginx = [], None
    try:
        # N app servers on the one runs folder (logs base/streamlit-<k>.log); with N > 1, nginx in front of them
        servers = start_app_servers(args.servers, env, base, ROOT, command=command)
        ports = [port for _, _, port in servers]
        if args.servers == 1:
            seats = [Seat(f"http://127.0.0.1:{ports[0]}")]
        else:
            nginx, url, nginx_log = start_nginx(base, ports)
            seats = [Seat(url, f"{STICKY_COOKIE}={sticky_key(url, port)}", k) for k, port in enumerate(ports)]
        out = asyncio.run(drive(seats, [(proc.pid, port) for proc, _, port in servers], runs, args, start_jobs,
                                lambda: {k: mgr.status(runs[k]).step for k in ("vae", "gan") if k in runs}))
        metrics = {k: Path(mgr.store.get(runs[k]).metrics_path) for k in ("explore", "vae", "gan")}
        # (a job that has not logged a step yet, in a very short run, has no metrics file)
        rows = {k: sum(1 for _ in open(m)) if m.exists() else 0 for k, m in metrics.items()}
        jobs = ", ".join(f"{k} {runs[k]} at step {mgr.status(runs[k]).step:,} ({rows[k]:,} metric rows)"
                         for k in ("explore", "vae", "gan"))
    finally:
        mgr.close(stop_jobs=True, timeout=30)
        if nginx is not None:
            stop_server(nginx, nginx_log)
        for proc, log, _ in servers:
            stop_server(proc, log)
    logs = sorted(base.glob("streamlit-*.log"))
    text = report(out, args, jobs, "".join(p.read_text(errors="replace") for p in logs)) \
        + f"server log{'s' if len(logs) > 1 else ''}: {', '.join(map(str, logs))}\n"
    if args.trace_memory:
        from traced_server import compare

        snaps = sorted(Path(args.trace_memory).glob("*.snap"))
        if len(snaps) >= 3:
            text += "\n==== tracemalloc: what grew ====\n" + compare(snaps[len(snaps) // 3], snaps[-1]) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    series = Path(args.out).with_suffix(".server.csv")  # the samples behind the memory trend, for a plot
    series.write_text("seconds,rss_mb,connections,threads\n" + "".join(
        f"{t:.1f},{m:.1f},{c},{n}\n" for (t, m), c, n in zip(out["rss"], out["connections"], out["threads"])))
    bad = any(out[m]["exceptions"] or out[m]["session_errors"] for m in ("ws", "browser")) or out["page_errors"] \
        or out["hostile"]["exceptions"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
