"""A ten-minute lecture, walked in Chromium on a fresh install: the pretrained models on every page, a latent slider
dragged smoothly, a presenter link opened in a second browser, a learning rate changed mid-run, a fork, a drawn
digit, clicks on the latent map and the manifold, presenter mode (issue 8's "done means").

    .venv/bin/python scripts/lecture_walk.py                       # screenshots in artifacts/lecture/
    .venv/bin/python scripts/lecture_walk.py --out /tmp/lecture --data-root ../shared/data

Starts `streamlit run serve.py` on a free port with an empty runs folder (so the shipped pretrained runs are installed
as on a fresh install) and Debian's Chromium (the browser tests' flags), then runs the steps in order. Each step
saves a numbered screenshot into --out and prints one line: PASS or FAIL, its number and name, seconds, and what it
saw or why it failed. A failed step does not stop the walk (later steps may fail for its sake); the exit status is 1
if any step failed. The helpers are the browser tests' (scripts/st_harness.py, tests/browser/conftest.py and
test_flows.py) and scripts/measure_drag.py's (drag frame rates).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "scripts") not in sys.path:
    sys.path.append(str(ROOT / "scripts"))
from st_harness import free_port, launch_chromium, stop_server, streamlit_command, wait_healthy  # noqa: E402
TIMEOUT_MS = 90_000  # one page action on a busy 2-core machine
TRAIN_TIMEOUT_MS = 180_000  # a worker's start (torch import, data) to its first logged points


def _module(name: str, path: Path) -> Any:
    """A helper file as a module of its own name (the browser tests' conftest and flows, measure_drag)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def helpers() -> tuple[Any, Any, Any]:
    """(tests/browser/conftest.py, tests/browser/test_flows.py, scripts/measure_drag.py) as modules."""
    return (_module("genlib_browser_conftest", ROOT / "tests" / "browser" / "conftest.py"),
            _module("genlib_browser_flows", ROOT / "tests" / "browser" / "test_flows.py"),
            _module("genlib_measure_drag", ROOT / "scripts" / "measure_drag.py"))


@dataclass
class Walk:
    """What the steps share: the server's URL, the teacher's page, the runs they made, the results so far."""

    url: str
    browser: Any
    page: Any
    out: Path
    runs_dir: Path
    shared: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)


# ---- small page helpers ----

def run_param(page: Any) -> str | None:
    return (parse_qs(urlparse(page.url).query).get("run") or [None])[0]


def open_tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click(timeout=TIMEOUT_MS)


def main_image_loaded(page: Any, timeout: int = TIMEOUT_MS) -> None:
    """Some image of the main area has loaded (a sample grid, a decoded digit)."""
    page.wait_for_function("() => Array.from(document.querySelectorAll('[data-testid=stMain] img'))"
                           ".some(i => i.complete && i.naturalWidth > 0)", timeout=timeout)


def plot_xy_to_page(chart: Any, x: float, y: float) -> tuple[float, float]:
    """Data coordinates of a Plotly chart -> page pixels, through plotly's own axes."""
    return tuple(chart.evaluate("""(gd, [x, y]) => {
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
        return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(y)];
    }""", [x, y]))


def click_plot(page: Any, chart: Any, x: float, y: float) -> None:
    """Click a Plotly chart at data coordinates (x, y): hover first, as a hand does (plotly picks the point to
    select from its hover data, computed on mouse moves)."""
    px, py = plot_xy_to_page(chart, x, y)
    page.mouse.move(px - 5, py - 5)
    page.mouse.move(px, py, steps=3)
    page.wait_for_timeout(300)
    page.mouse.click(px, py)


def release_slider(page: Any, uid: str, index: int, value: float) -> None:
    """Move one in-browser slider as a hand does: input events, then the release's change event."""
    page.evaluate("""([uid, index, value]) => {
        const s = window.__genlibDecoders[uid].sliders[index];
        s.value = String(value);
        s.dispatchEvent(new Event('input', {bubbles: true}));
        s.dispatchEvent(new Event('change', {bubbles: true}));
    }""", [uid, index, value])


def decoder_state(page: Any, uid: str) -> dict[str, Any]:
    return page.evaluate("(uid) => { const h = window.__genlibDecoders[uid];"
                         " return {values: Array.from(h.values), pixels: Array.from(h.last || [])}; }", uid)


# ---- the steps (each returns what it saw, or raises) ----

def step_home(w: Walk) -> str:
    _, flows, _ = helpers()
    flows.open_page(w.page, w.url + "/")
    w.page.get_by_role("heading", name="Deep generative models you can watch learn").wait_for(timeout=TIMEOUT_MS)
    return "home page drawn"


def pretrained_step(model: str, run_id: str) -> Callable[[Walk], str]:
    def step(w: Walk) -> str:
        _, flows, _ = helpers()
        flows.open_page(w.page, f"{w.url}/{model}")  # no ?run=: the page's default run
        chosen = flows.selected(w.page, f"{model}-run-select")
        flows.expect(chosen).to_have_value(re.compile(rf"^pretrained-{model}"), timeout=TIMEOUT_MS)
        opened = chosen.input_value().split(" · ")[0]
        flows.by_key(w.page, f"epoch-slider-{opened}").wait_for(timeout=TIMEOUT_MS)  # per-epoch sample grids
        main_image_loaded(w.page)
        if opened != run_id:  # the page's default is one pretrained run; the lecture looks at a chosen one
            flows.open_page(w.page, f"{w.url}/{model}?run={run_id}")
            main_image_loaded(w.page)
        return f"opened {opened} with its samples" + (f"; then {run_id}" if opened != run_id else "")
    return step


def step_vae_drag(w: Walk) -> str:
    _, flows, drag = helpers()
    run_id = "pretrained-vae-latent2"
    uid = f"vae-smooth-{run_id}"
    flows.open_page(w.page, f"{w.url}/vae?run={run_id}")
    open_tab(w.page, "Latent sliders")
    drag.wait_decoder(w.page, uid)
    events = drag.input_event_fps(w.page, uid, seconds=3.0)
    mouse = drag.mouse_drag_fps(w.page, uid, moves=200)
    release_slider(w.page, uid, 1, 1.2)  # z1 = 1.2, let go: the link keeps it
    w.page.wait_for_function("(k) => window.location.search.includes(k)", arg=f"vae-z1-{run_id}=1.2",
                             timeout=TIMEOUT_MS)
    w.shared["drag"] = {"input_event_fps": round(events["fps"], 1), "mouse_drag_fps": round(mouse["fps"], 1),
                        "decode_ms": round(events["decode_ms"], 3)}
    return (f"in-browser decoder: {events['fps']:.0f} images/s on input events, {mouse['fps']:.0f} images/s "
            f"dragging with the mouse ({events['decode_ms']:.2f} ms per decode); z1 = 1.2 is in the link")


def step_shared_link(w: Walk) -> str:
    _, flows, _ = helpers()
    run_id = "pretrained-vae-latent2"
    uid = f"vae-smooth-{run_id}"
    w.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=w.url)
    button = w.page.locator("#genlib-copy-link")
    button.click()
    w.page.wait_for_function("() => !!document.getElementById('genlib-copy-link').dataset.copied",
                             timeout=TIMEOUT_MS)
    link = button.get_attribute("data-copied")
    teacher = decoder_state(w.page, uid)
    student_ctx = w.browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        student = student_ctx.new_page()
        flows.open_page(student, link)
        helpers()[2].wait_decoder(student, uid)
        theirs = decoder_state(student, uid)
        student.screenshot(path=str(w.out / f"{len(w.results) + 1:02d}b-student-view.png"))
    finally:
        student_ctx.close()
    if run_param_of(link) != run_id:
        raise AssertionError(f"the link opens run {run_param_of(link)!r}")
    if [round(v, 2) for v in theirs["values"]] != [round(v, 2) for v in teacher["values"]]:
        raise AssertionError(f"the student's code {theirs['values']} is not the teacher's {teacher['values']}")
    worst = max(abs(a - b) for a, b in zip(theirs["pixels"], teacher["pixels"]))
    if worst > 1e-9:
        raise AssertionError(f"the student's image differs by {worst:.3g}")
    return f"second browser context: same run, code {[round(v, 2) for v in theirs['values']]}, same image"


def run_param_of(link: str) -> str | None:
    return (parse_qs(urlparse(link).query).get("run") or [None])[0]


def step_train_and_knob(w: Walk) -> str:
    _, flows, _ = helpers()
    page = w.page
    flows.open_page(page, f"{w.url}/vae")
    form = flows.by_key(page, "vae-form-submit")
    if not form.is_visible():  # a pretrained run is open: the new-run form is a collapsed expander
        page.get_by_text(re.compile(r"^Train a new VAE")).first.click()
    for name, value in (("hidden", "64"), ("latent", "2"), ("epochs", "400")):
        box = flows.by_key(page, f"vae-form-{name}").locator("input")
        box.fill(value)
        box.press("Tab")
    dataset = flows.by_key(page, "vae-form-dataset").get_by_role("combobox")
    option = page.get_by_role("option", name=re.compile("Digits")).first  # small: an epoch is seconds
    for attempt in range(3):  # a fragment's refresh can close the list just opened: open it again
        dataset.click()
        try:
            option.click(timeout=10_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError; the last attempt re-raises below
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
    flows.by_key(page, "vae-form-submit").get_by_role("button").click()
    page.wait_for_url(re.compile(r"[?&]run=vae-"), timeout=TIMEOUT_MS)
    run_id = run_param(page)
    w.shared["train"] = run_id
    flows.wait_for_app_run(page)
    chart = f".st-key-loss-{run_id} .js-plotly-plot"
    page.wait_for_function("(sel) => { const el = document.querySelector(sel);"
                           " return el && el.data && el.data.length && el.data[0].x.length >= 2; }",
                           arg=chart, timeout=TRAIN_TIMEOUT_MS, polling=250)
    lr = flows.by_key(page, f"knob-lr-{run_id}").locator("input")
    lr.fill("3.0e-04")
    lr.press("Tab")
    flows.by_key(page, f"knobs-apply-{run_id}").get_by_role("button").click()
    t0 = time.monotonic()
    page.wait_for_function(
        "(sel) => { const el = document.querySelector(sel); return el && el.layout && (el.layout.shapes || [])"
        ".some(s => s.label && /^lr /.test(s.label.text || '')); }", arg=chart, timeout=TRAIN_TIMEOUT_MS, polling=250)
    label = page.evaluate("(sel) => document.querySelector(sel).layout.shapes.map(s => s.label && s.label.text)"
                          ".filter(Boolean)", chart)
    return f"run {run_id} trains; lr 1e-3 -> 3e-4 applied, marked on the loss chart after " \
           f"{time.monotonic() - t0:.1f} s ({', '.join(label)})"


def step_fork(w: Walk) -> str:
    _, flows, _ = helpers()
    page = w.page
    run_id = w.shared.get("train")
    if not run_id:
        raise AssertionError("needs the run of the training step")
    flows.open_page(page, f"{w.url}/vae?run={run_id}")
    page.get_by_text("Fork this run: branch from a checkpoint with one setting changed").click()
    point = flows.by_key(page, f"fork-point-{run_id}")
    deadline = time.monotonic() + TRAIN_TIMEOUT_MS / 1000
    while not point.count() and time.monotonic() < deadline:  # the first checkpoint comes after an epoch
        time.sleep(2)
        flows.open_page(page, f"{w.url}/vae?run={run_id}")
        page.get_by_text("Fork this run: branch from a checkpoint with one setting changed").click()
    point.get_by_role("combobox").click()
    options = page.get_by_role("option")
    names = options.all_inner_texts()
    epoch_option = next((i for i, n in enumerate(names) if n.startswith("epoch-")), 0)
    options.nth(epoch_option).click()
    setting = flows.by_key(page, f"fork-setting-{run_id}")
    setting.get_by_role("combobox").click()
    page.get_by_role("option", name=re.compile("KL|beta", re.I)).first.click()
    value = flows.by_key(page, f"fork-value-beta-{run_id}").locator("input")
    value.fill("4.00")
    value.press("Tab")
    flows.by_key(page, f"fork-start-{run_id}").get_by_role("button").click()
    page.wait_for_url(lambda u: (run_param_of(u) or run_id) != run_id, timeout=TIMEOUT_MS)
    fork_id = run_param(page)
    w.shared["fork"] = fork_id
    chart = f".st-key-branches-chart-{fork_id} .js-plotly-plot"
    page.wait_for_function("(sel) => { const el = document.querySelector(sel); return el && el.data"
                           " && el.data.filter(t => (t.x || []).length).length >= 2; }", arg=chart,
                           timeout=TRAIN_TIMEOUT_MS, polling=500)
    traces = page.evaluate("(sel) => document.querySelector(sel).data.map(t => t.name)", chart)
    return f"forked {run_id} at {names[epoch_option]} with beta = 4 -> {fork_id}; branches chart: {traces}"


def step_stop_training(w: Walk) -> str:
    from genlib.runs.store import RunStore

    conftest, _, _ = helpers()
    conftest.stop_live_runs(w.runs_dir)
    states = {r.id: r.effective_state() for r in RunStore(w.runs_dir).list() if not r.id.startswith("pretrained")}
    return f"stopped the lecture's runs: {states}"


def step_draw_digit(w: Walk) -> str:
    _, flows, _ = helpers()
    page, run_id = w.page, "pretrained-vae-latent2"
    flows.open_page(page, f"{w.url}/vae?run={run_id}")
    open_tab(page, "Your digit")
    canvas = page.locator(f".st-key-vae-canvas-{run_id} canvas").last  # Fabric's upper (event) canvas
    canvas.wait_for(state="visible", timeout=TIMEOUT_MS)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    for stroke in ([(0.25, 0.2), (0.75, 0.2), (0.55, 0.5), (0.42, 0.85)], [(0.4, 0.5), (0.7, 0.5)]):  # a '7'
        page.mouse.move(box["x"] + stroke[0][0] * box["width"], box["y"] + stroke[0][1] * box["height"])
        page.mouse.down()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            for i in range(1, 11):
                t = i / 10
                page.mouse.move(box["x"] + (x0 + t * (x1 - x0)) * box["width"],
                                box["y"] + (y0 + t * (y1 - y0)) * box["height"])
        page.mouse.up()
    flows.wait_image_loaded(page, f"vae-draw-input-{run_id}")
    flows.wait_image_loaded(page, f"vae-draw-recon-{run_id}")
    star = page.locator(f".st-key-vae-draw-map-{run_id} .js-plotly-plot").first
    star.wait_for(state="visible", timeout=TIMEOUT_MS)
    names = star.evaluate("(gd) => gd.data.map((t) => t.name)")
    if "your digit" not in names:
        raise AssertionError(f"no 'your digit' point on the latent map: {names}")
    return "drew a 7 with two strokes: its 28x28 input, reconstruction and place on the latent map are shown"


def step_latent_map(w: Walk) -> str:
    _, flows, _ = helpers()
    page, run_id = w.page, "pretrained-vae-latent2"
    flows.open_page(page, f"{w.url}/vae?run={run_id}")
    open_tab(page, "Latent map")
    chart = page.locator(f".st-key-vae-map-{run_id} .js-plotly-plot").first
    chart.wait_for(state="visible", timeout=TIMEOUT_MS)
    chart.scroll_into_view_if_needed()
    xr = chart.evaluate("(gd) => gd._fullLayout.xaxis.range")
    yr = chart.evaluate("(gd) => gd._fullLayout.yaxis.range")
    click_plot(page, chart, xr[0] + 0.7 * (xr[1] - xr[0]), yr[0] + 0.3 * (yr[1] - yr[0]))
    flows.wait_image_loaded(page, f"vae-map-img-{run_id}")
    caption = flows.by_key(page, f"vae-map-img-{run_id}").inner_text()
    return "clicked the latent map: " + " ".join(caption.split())


def step_manifold(w: Walk) -> str:
    _, flows, _ = helpers()
    page, run_id = w.page, "pretrained-vae-latent2"
    flows.open_page(page, f"{w.url}/vae?run={run_id}")
    open_tab(page, "Manifold")
    chart = page.locator(f".st-key-vae-manifold-{run_id} .js-plotly-plot").first
    chart.wait_for(state="visible", timeout=TIMEOUT_MS)
    chart.scroll_into_view_if_needed()
    n = chart.evaluate("(gd) => gd.calcdata[0].length")  # one click target per tile (data may be typed arrays)
    side = round(n ** 0.5)
    for attempt in range(3):  # a click that lands while the chart is still being drawn can be lost: click again
        click_plot(page, chart, 2.5, side - 2.5)  # row 2, column 2 from the top left
        try:
            first = flows.wait_image_loaded(page, f"vae-manifold-img-{run_id}", timeout=20_000)
            break
        except Exception:  # noqa: BLE001
            if attempt == 2:
                raise
    click_plot(page, chart, side - 1.5, 1.5)  # near the bottom right
    page.wait_for_function("([sel, old]) => { const i = document.querySelector(sel + ' img');"
                           " return i && i.getAttribute('src') !== old && i.complete && i.naturalWidth > 0; }",
                           arg=[f".st-key-vae-manifold-img-{run_id}", first], timeout=TIMEOUT_MS)
    caption = flows.by_key(page, f"vae-manifold-img-{run_id}").inner_text()
    return f"clicked two tiles of the {side}x{side} manifold; the second decodes to: " + " ".join(caption.split())


def step_presenter(w: Walk) -> str:
    _, flows, _ = helpers()
    page = w.page
    flows.by_key(page, "present").locator("label").first.click()
    flows.wait_for_app_run(page)
    page.wait_for_function("() => window.location.search.includes('present=true')", timeout=TIMEOUT_MS)
    size = page.evaluate("() => getComputedStyle(document.documentElement).fontSize")
    if size != "19px" or flows.by_key(page, "vae-form-submit").count():
        forms = flows.by_key(page, "vae-form-submit").count()
        raise AssertionError(f"presenter mode: font {size}, forms shown: {forms}")
    return "presenter mode: forms hidden, text 19 px, ?present=true in the link"


def steps() -> list[tuple[str, Callable[[Walk], str]]]:
    return [
        ("home", step_home),
        ("rbm-pretrained", pretrained_step("rbm", "pretrained-rbm")),
        ("vae-pretrained", pretrained_step("vae", "pretrained-vae-latent2")),
        ("gan-pretrained", pretrained_step("gan", "pretrained-gan")),
        ("ebm-pretrained", pretrained_step("ebm", "pretrained-ebm")),
        ("vae-smooth-drag", step_vae_drag),
        ("shared-link", step_shared_link),
        ("train-and-change-lr", step_train_and_knob),
        ("fork", step_fork),
        ("stop-training", step_stop_training),
        ("draw-digit", step_draw_digit),
        ("latent-map-click", step_latent_map),
        ("manifold-click", step_manifold),
        ("presenter-mode", step_presenter),
    ]


def run_walk(url: str, out: Path, runs_dir: Path, only: list[str] | None = None) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    conftest, flows, _ = helpers()
    flows.expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        ctx.set_default_timeout(TIMEOUT_MS)
        w = Walk(url=url, browser=browser, page=ctx.new_page(), out=out, runs_dir=runs_dir)
        for number, (name, fn) in enumerate(steps(), start=1):
            if only and name not in only:
                continue
            t0 = time.perf_counter()
            try:
                detail, ok = fn(w), True
            except Exception as e:  # noqa: BLE001 - a failed step is reported, and the walk goes on
                detail, ok = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", False
                traceback.print_exc(file=sys.stderr)
                try:  # what the page itself said, if it shows an exception
                    shown = w.page.get_by_test_id("stException").all_inner_texts()
                    if shown:
                        detail += " | page exception: " + " ".join(shown[0].split())[:400]
                except Exception:  # noqa: BLE001
                    pass
            seconds = time.perf_counter() - t0
            try:
                w.page.screenshot(path=str(out / f"{number:02d}-{name}.png"))
            except Exception as e:  # noqa: BLE001
                detail += f" (no screenshot: {type(e).__name__})"
            w.results.append({"step": number, "name": name, "ok": ok, "seconds": round(seconds, 1),
                              "detail": detail})
            print(f"{'PASS' if ok else 'FAIL'} {number:02d} {name:22s} {seconds:6.1f} s  {detail}", flush=True)
        if "drag" in w.shared:
            w.results.append({"drag": w.shared["drag"]})
        browser.close()
    return w.results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "artifacts" / "lecture", help="where the screenshots go")
    p.add_argument("--data-root", default=os.environ.get("GENLIB_DATA_ROOT") or str(ROOT.parent / "shared" / "data"),
                   help="folder holding MNIST (the pretrained runs' data; the training step uses the digits)")
    p.add_argument("--only", nargs="*", help="step names to run (default: all; later steps may need earlier ones)")
    args = p.parse_args(argv)
    conftest, _, _ = helpers()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="lecture-walk-") as tmp:
        runs_dir = Path(tmp) / "runs"
        runs_dir.mkdir()
        env = dict(os.environ, GENLIB_RUNS_DIR=str(runs_dir), GENLIB_DATA_ROOT=args.data_root,
                   GENLIB_JOB_BACKEND="process", GENLIB_MAX_JOBS="2", PYTHONUNBUFFERED="1")
        env.pop("GENLIB_PRETRAINED_DIR", None)  # the shipped pretrained/ folder, as on a fresh install
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(Path(tmp) / "streamlit.log", "wb")
        t0 = time.perf_counter()
        proc = subprocess.Popen(streamlit_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            wait_healthy(url, proc)
            print(f"server up in {time.perf_counter() - t0:.1f} s at {url} (runs in {runs_dir})", flush=True)
            results = run_walk(url, args.out, runs_dir, args.only)
        finally:
            try:
                conftest.stop_live_runs(runs_dir)
            finally:
                stop_server(proc, log)
    failed = [r for r in results if "ok" in r and not r["ok"]]
    total = sum(r.get("seconds", 0.0) for r in results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"{'FAIL' if failed else 'PASS'}: {len([r for r in results if 'ok' in r]) - len(failed)} steps passed, "
          f"{len(failed)} failed, {total:.0f} s of steps; screenshots in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
