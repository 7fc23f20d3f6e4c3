"""Quality-against-seconds charts of scripts/time_to_quality.py's JSON as one PNG per model, drawn with Pillow (the
project has no matplotlib): the Fréchet distance over its floor (log scale), the smallest digit's share, and the
model's likelihood figure where it has one, one line per recipe, the targets' thresholds dashed.
"""

from __future__ import annotations

import io
import math
from typing import Any

PANEL_W, PANEL_H, MARGIN = 420, 300, 56
COLOURS = {"seed": (200, 60, 40), "lecture": (30, 100, 200)}
OTHERS = ((90, 150, 60), (150, 80, 170), (220, 140, 20), (40, 160, 160))  # variants, in the order they are drawn


def _panels(model: str) -> list[tuple[str, str, bool]]:
    """(curve key, title, log scale) per panel."""
    out = [("ratio", "Frechet distance / floor", True), ("min_share", "smallest digit's share", False)]
    if model == "vae":
        out.append(("iwae_nll", "IWAE -log p(x), nats", False))
    if model == "rbm":
        out.append(("ais_ll", "AIS log-likelihood, nats", False))
    return out


def _thresholds(doc: dict[str, Any], model: str, key: str) -> list[float]:
    refs = doc.get("references", {})
    out = []
    for run in doc["runs"]:
        if run["model"] != model:
            continue
        for t in run.get("targets", []):
            for metric, g in t["at_deadline"].items():
                thr = g.get("threshold")
                if thr is None:
                    continue
                if metric == key:
                    out.append(thr)
                elif metric == "frechet" and key == "ratio" and refs.get(f"{model}.frechet"):
                    floor = next((p["floor"] for r in doc["runs"] for p in r["curve"] if "floor" in p), None)
                    if floor:
                        out.append(thr / floor)
    return sorted(set(round(v, 6) for v in out))


def write_plots(doc: dict[str, Any], model: str) -> bytes:
    """A PNG (bytes) of `model`'s curves in `doc` (the time_to_quality JSON)."""
    from PIL import Image, ImageDraw

    panels = _panels(model)
    img = Image.new("RGB", (PANEL_W * len(panels), PANEL_H + 40), "white")
    draw = ImageDraw.Draw(img)
    runs = [r for r in doc["runs"] if r["model"] == model]
    draw.text((8, 6), f"{model.upper()}: quality against seconds since Start "
                      f"({doc['settings'].get('worker_threads') or 'default'} torch thread(s), "
                      f"{doc['settings'].get('cpus', '?')} CPUs)",
              fill="black")
    for i, (key, title, log) in enumerate(panels):
        x0, y0 = i * PANEL_W + MARGIN, 40
        w, h = PANEL_W - MARGIN - 12, PANEL_H - 40
        pts = [(p["elapsed_s"], p[key]) for r in runs for p in r["curve"] if p.get(key) is not None]
        thr = _thresholds(doc, model, key)
        ys = [y for _, y in pts] + thr
        if log:
            ys = [y for y in ys if y > 0]
        draw.text((x0, y0 - 16), title, fill="black")
        draw.rectangle([x0, y0, x0 + w, y0 + h], outline=(120, 120, 120))
        if not ys:
            draw.text((x0 + 10, y0 + h // 2), "not measured", fill=(120, 120, 120))
            continue
        tmax = max([doc["settings"].get("seconds", 1.0)] + [t for t, _ in pts])
        f = (lambda v: math.log10(v)) if log else (lambda v: v)
        lo, hi = f(min(ys)), f(max(ys))
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad

        def xy(t: float, v: float) -> tuple[float, float]:
            return x0 + w * t / tmax, y0 + h * (1 - (f(v) - lo) / (hi - lo))

        for k in range(5):  # axis labels: 5 ticks each way
            v = lo + (hi - lo) * k / 4
            label = 10 ** v if log else v
            draw.text((x0 - MARGIN + 4, y0 + h * (1 - k / 4) - 6), f"{label:.3g}", fill=(80, 80, 80))
            draw.text((x0 + w * k / 4 - 8, y0 + h + 4), f"{tmax * k / 4:.0f}", fill=(80, 80, 80))
        draw.text((x0 + w - 70, y0 + h + 16), "seconds", fill=(80, 80, 80))
        for v in thr:
            if log and v <= 0:
                continue
            _, yy = xy(0, v)
            for xx in range(int(x0), int(x0 + w), 8):
                draw.line([(xx, yy), (xx + 4, yy)], fill=(60, 60, 60))
        for j, r in enumerate(runs):
            colour = COLOURS.get(r["recipe"]) or OTHERS[j % len(OTHERS)]
            line = [xy(p["elapsed_s"], p[key]) for p in r["curve"] if p.get(key) is not None and (not log or p[key] > 0)]
            if len(line) > 1:
                draw.line(line, fill=colour, width=2)
            for (px, py) in line:
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
            draw.text((x0 + 6, y0 + 4 + 12 * j), r["recipe"], fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
