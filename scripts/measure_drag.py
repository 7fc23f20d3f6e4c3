"""Smooth dragging, measured in Chromium: how many decoded images per second the VAE's in-browser decoder paints
while a latent slider is dragged, and how far its images are from genlib's VAE.decode for the same codes.

    .venv/bin/python scripts/measure_drag.py                 # the seed's VAE shape (784-512-8), random weights
    .venv/bin/python scripts/measure_drag.py --checkpoint runs/vae-.../checkpoints/last.safetensors

Starts `streamlit run` on a tiny app that shows one VAE run's explorer (a temporary runs folder, the offline digits,
a free local port), opens Debian's Chromium headless, and measures on the "Latent sliders" tab (in-browser decoder):
- input-event fps: one slider input event per animation frame for --seconds, images painted per second;
- mouse-drag fps: Playwright drags the slider thumb across its track (--moves pointer moves), images per second;
- key-to-image latency: ArrowRight on a focused slider -> the first frame after the new image was painted;
- max |browser - genlib|: the page's decoded means for --codes random codes against VAE.decode in this process.
Prints one line per figure, then one JSON object as the last line. tests/browser/test_browser_decoder.py uses the
same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: genlib and dashboard live beside scripts/
    sys.path.insert(0, str(ROOT))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

APP_SOURCE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import streamlit as st
from dashboard.explore.panel import render
from genlib.runs.store import RunStore

st.set_page_config(layout="wide")
store = RunStore()
run_id = st.query_params.get("run")
run = store.get(run_id) if run_id else None
render(run.info()["model"] if run else "vae", run)
"""


# ---- the server ----

def browser_helpers() -> Any:
    """tests/browser/conftest.py as a module (under its own name: pytest already knows another `conftest`)."""
    import importlib.util

    name = "genlib_browser_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "browser" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def save_vae_run(runs_dir: Path, *, latent: int = 8, hidden: int = 512, seed: int = 0,
                 checkpoint: Path | None = None) -> tuple[Any, Path]:
    """A finished VAE run in runs_dir (random weights from `seed`, or a checkpoint's); returns (run, weights file)."""
    import torch

    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
    from genlib.models import build_model
    from genlib.runs.store import RunStore

    if checkpoint is not None:
        model = model_from_checkpoint(load_checkpoint(checkpoint), expect="vae")
    else:
        torch.manual_seed(seed)
        model = build_model("vae", {"latent": latent, "hidden": hidden})
    run = RunStore(runs_dir).create({"model": "vae", "model_config": model.config_dict(), "dataset": "digits",
                                     "train_config": {"dataset": "digits"}})
    save_checkpoint(run.checkpoint_path, model, train_config={"dataset": "digits"}, progress={"step": 0})
    run.write_state(state="finished")
    return run, run.checkpoint_path


def genlib_model(weights: Path) -> Any:
    """The model exactly as the app loads it (CPU, eval)."""
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(weights, device="cpu"), device="cpu").eval()


@contextlib.contextmanager
def serve(base: Path, timeout: float = 120.0) -> Iterator[str]:
    """`streamlit run` of APP_SOURCE with runs in base/runs and an empty data root; yields its URL."""
    helpers = browser_helpers()  # the browser tests' free_port and wait_healthy (/_stcore/health)

    app = base / "drag_app.py"
    app.write_text(APP_SOURCE)
    (base / "data").mkdir(exist_ok=True)
    env = dict(os.environ, GENLIB_RUNS_DIR=str(base / "runs"), GENLIB_DATA_ROOT=str(base / "data"),
               PYTHONUNBUFFERED="1")
    port = helpers.free_port()
    log = open(base / "streamlit.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
                             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
                             "--server.port", str(port), "--server.address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        helpers.wait_healthy(url, proc, timeout)
        yield url
    finally:
        helpers.stop_server(proc, log)


# ---- the page ----

def open_tab(page: Any, url: str, run_id: str, tab: str, timeout_ms: int = 90_000) -> None:
    """Open the run's explorer and click one of its tabs."""
    page.goto(f"{url}/?run={run_id}", wait_until="domcontentloaded")
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(state="attached",
                                                                                         timeout=timeout_ms)
    page.get_by_role("tab", name=tab).click(timeout=timeout_ms)


def wait_decoder(page: Any, uid: str, timeout_ms: int = 90_000) -> None:
    """Until the page holds the weights and has painted a first image."""
    page.wait_for_function("(uid) => { const h = (window.__genlibDecoders || {})[uid]; "
                           "return h && h.ready && h.frames > 0; }", arg=uid, timeout=timeout_ms)


def browser_decode(page: Any, uid: str, z: list[float]) -> tuple[list[float], list[float]]:
    """Set every slider to z through input events (as a hand would), wait for the next painted frame; returns
    (the inputs the page used, its decoded means)."""
    return page.evaluate("""async ([uid, z]) => {
        const h = window.__genlibDecoders[uid];
        const before = h.frames;
        for (const s of h.sliders) {
            s.value = String(z[Number(s.dataset.index)]);
            s.dispatchEvent(new Event('input', {bubbles: true}));
        }
        while (h.frames === before) await new Promise(requestAnimationFrame);
        return [Array.from(h.values), Array.from(h.last)];
    }""", [uid, z])


def decode_agreement(page: Any, uid: str, model: Any, n_codes: int = 16, seed: int = 0) -> float:
    """max |browser - genlib| over n_codes codes from N(0, I) (clipped to the sliders' range, 2 decimals)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(n_codes):
        z = torch.randn(model.latent_dim, generator=g).clamp(-3, 3).mul(100).round().div(100).tolist()
        used, pixels = browser_decode(page, uid, z)
        with torch.inference_mode():
            ref = model.decode(torch.tensor([used], dtype=torch.float32))[0].flatten()
        worst = max(worst, float((torch.tensor(pixels, dtype=torch.float64) - ref.double()).abs().max()))
    return worst


def input_event_fps(page: Any, uid: str, seconds: float = 3.0) -> dict[str, float]:
    """One input event on slider 0 per animation frame, sweeping its range, for `seconds`: images per second."""
    return page.evaluate("""async ([uid, seconds]) => {
        const h = window.__genlibDecoders[uid];
        const s = h.sliders[0];
        const lo = Number(s.min), hi = Number(s.max);
        const f0 = h.frames, t0 = performance.now(), d0 = h.decodeMsTotal;
        let i = 0, events = 0;
        while (performance.now() - t0 < seconds * 1000) {
            await new Promise(requestAnimationFrame);
            const t = (i++ % 120) / 119;
            s.value = String(lo + (hi - lo) * (t < 0.5 ? 2 * t : 2 - 2 * t));
            s.dispatchEvent(new Event('input', {bubbles: true}));
            events++;
        }
        await new Promise(requestAnimationFrame);
        const dt = (performance.now() - t0) / 1000;
        return {fps: (h.frames - f0) / dt, events_per_s: events / dt, frames: h.frames - f0, events,
                decode_ms: (h.decodeMsTotal - d0) / Math.max(1, h.frames - f0)};
    }""", [uid, seconds])


def mouse_drag_fps(page: Any, uid: str, moves: int = 200) -> dict[str, float]:
    """Drag slider 0's thumb across its track with the mouse in `moves` steps: images painted per second."""
    slider = page.evaluate_handle("(uid) => window.__genlibDecoders[uid].sliders[0]", uid).as_element()
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    x0, x1 = box["x"] + 4, box["x"] + box["width"] - 4
    f0 = page.evaluate("(uid) => window.__genlibDecoders[uid].frames", uid)
    page.mouse.move(x0, y)
    page.mouse.down()
    t0 = time.perf_counter()
    for i in range(1, moves + 1):  # there and back
        t = i / moves
        page.mouse.move(x0 + (x1 - x0) * (2 * t if t < 0.5 else 2 - 2 * t), y)
    page.evaluate("() => new Promise(requestAnimationFrame)")
    dt = time.perf_counter() - t0
    # let go at 3/4 of the track, not where the drag began: the browser fires 'change' (the component's one message
    # to the server) only when the value at release differs from the value at the press
    page.mouse.move(x0 + 0.75 * (x1 - x0), y)
    page.mouse.up()
    frames = page.evaluate("(uid) => window.__genlibDecoders[uid].frames", uid) - f0
    return {"fps": frames / dt, "moves_per_s": moves / dt, "frames": frames}


KEY_RECORDER_JS = """(uid) => {
    // key press -> the first animation frame after the decoder painted: the image is on screen by then (the frame
    // that painted it has been composited). The keydown listener's frame loop runs only until that frame.
    const h = window.__genlibDecoders[uid];
    if (window.__keyLatency) { window.__keyLatency.ms = []; return; }  // installed already: a new series
    const R = window.__keyLatency = {ms: []};
    document.addEventListener('keydown', () => {
        const t0 = performance.now(), before = h.frames;
        const tick = () => {
            if (h.frames !== before) R.ms.push(performance.now() - t0); else requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);
    }, true);
}"""


def key_latencies(page: Any, uid: str, slider_indices: list[int], moves: int, step_steps: int = 60,
                  timeout_ms: int = 10_000) -> dict[str, Any]:
    """Press ArrowRight `moves` times on the decoder's sliders (each slider `step_steps` presses from where it is,
    then the next), each time waiting until the page has painted the new image; returns the latencies in ms, key
    press to the first frame after the paint, both timed in the page, and the presses that painted nothing."""
    page.evaluate(KEY_RECORDER_JS, uid)
    out, missed = [], 0
    for i in range(moves):
        index = slider_indices[(i // step_steps) % len(slider_indices)]
        slider = page.evaluate_handle("([uid, i]) => window.__genlibDecoders[uid].sliders.find("
                                      "(s) => Number(s.dataset.index) === i)", [uid, index]).as_element()
        slider.focus()  # a no-op when it has the focus already
        n = page.evaluate("() => window.__keyLatency.ms.length")
        page.keyboard.press("ArrowRight")
        try:
            page.wait_for_function("(n) => window.__keyLatency.ms.length > n", arg=n, timeout=timeout_ms)
        except Exception:  # noqa: BLE001 - the slider was at its maximum: no input event, no paint
            missed += 1
            continue
        out.append(page.evaluate("() => window.__keyLatency.ms[window.__keyLatency.ms.length - 1]"))
    return {"ms": out, "missed": missed}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, help="a VAE checkpoint (.safetensors); default: random weights")
    p.add_argument("--seconds", type=float, default=3.0, help="length of the input-event measurement")
    p.add_argument("--moves", type=int, default=200, help="pointer moves of the mouse drag")
    p.add_argument("--codes", type=int, default=16, help="random codes compared with genlib's decode")
    p.add_argument("--key-moves", type=int, default=30, help="ArrowRight presses of the key-to-image latency")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    chromium_path = browser_helpers().chromium_path

    with tempfile.TemporaryDirectory(prefix="measure-drag-") as tmp:
        base = Path(tmp)
        run, weights = save_vae_run(base / "runs", checkpoint=args.checkpoint)
        model = genlib_model(weights)
        uid = f"vae-smooth-{run.id}"
        with serve(base) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            open_tab(page, url, run.id, "Latent sliders")
            wait_decoder(page, uid)
            diff = decode_agreement(page, uid, model, args.codes)
            events = input_event_fps(page, uid, args.seconds)
            drag = mouse_drag_fps(page, uid, args.moves)
            keys = key_latencies(page, uid, list(range(model.latent_dim)), args.key_moves)
            browser.close()
    result = {"decoder": f"{model.latent_dim}-{model.config.hidden}-784 ({model.config.decoder})",
              "max_abs_diff": diff, "input_event_fps": round(events["fps"], 1),
              "input_events_per_s": round(events["events_per_s"], 1), "decode_ms": round(events["decode_ms"], 3),
              "mouse_drag_fps": round(drag["fps"], 1), "mouse_moves_per_s": round(drag["moves_per_s"], 1),
              "key_to_image_ms": sorted(round(x, 1) for x in keys["ms"]), "key_presses_missed": keys["missed"]}
    print(f"decoder {result['decoder']}: max |browser - genlib| = {diff:.2e} over {args.codes} codes")
    print(f"input events: {result['input_event_fps']} images/s ({result['input_events_per_s']} events/s, "
          f"{result['decode_ms']} ms per decode on average)")
    print(f"mouse drag: {result['mouse_drag_fps']} images/s ({result['mouse_moves_per_s']} pointer moves/s)")
    ms = result["key_to_image_ms"]
    if ms:
        print(f"key press -> new image on screen: median {ms[len(ms) // 2]:.0f} ms, max {ms[-1]:.0f} ms over "
              f"{len(ms)} presses ({keys['missed']} painted nothing)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
