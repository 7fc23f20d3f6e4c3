"""The issue's time-to-quality targets per model (issue 20: each a deadline in seconds from Start and conditions on a
quality-vs-seconds curve) and the bookkeeping over a curve of scripts/time_to_quality.py: when a target was first
reached, where it held from, its gap at the deadline and its FLOPs against the core's peak (ttq_compute.py); the
JSON document and its Markdown table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttq_compute import run_compute, target_compute, why

FORMAT_VERSION = 1


# ---------------------------------------------------------------- targets (the issue's, per model)
@dataclass(frozen=True)
class Condition:
    """metric <= or >= a threshold: a number, or `factor` x a reference figure (today's shipped model's)."""

    metric: str  # a key of a curve point: "frechet", "min_share", "iwae_nll", "ais_ll"
    op: str  # "<=" or ">="
    value: float | None = None
    ref: str | None = None  # a key of the references: "<model>.frechet"
    factor: float = 1.0

    def threshold(self, refs: dict[str, float]) -> float | None:
        """The number to beat, or None when the reference it needs was not measured."""
        if self.ref is None:
            return self.value
        ref = refs.get(self.ref)
        return None if ref is None else self.factor * ref


@dataclass(frozen=True)
class Target:
    name: str
    deadline_s: float
    conditions: tuple[Condition, ...]


def _every_digit(share: float = 0.05) -> Condition:
    return Condition("min_share", ">=", share)


TARGETS: dict[str, tuple[Target, ...]] = {
    "gan": (Target("FD <= pretrained GAN's, every digit >= 5%", 120,
                   (Condition("frechet", "<=", ref="gan.frechet"), _every_digit())),
            Target("FD <= half the pretrained GAN's", 600, (Condition("frechet", "<=", ref="gan.frechet", factor=0.5),))),
    "vae": (Target("IWAE -log p(x) <= 100 nats", 120, (Condition("iwae_nll", "<=", 100.0),)),
            Target("IWAE -log p(x) <= 92 nats", 900, (Condition("iwae_nll", "<=", 92.0),)),
            Target("FD <= half the pretrained latent-8 VAE's", 900,
                   (Condition("frechet", "<=", ref="vae.frechet", factor=0.5),))),
    "rbm": (Target("every digit >= 5% (no collapse)", 120, (_every_digit(),)),
            Target("AIS log-likelihood >= -100 nats", 300, (Condition("ais_ll", ">=", -100.0),)),
            Target("AIS log-likelihood >= -88 nats", 1800, (Condition("ais_ll", ">=", -88.0),))),
    "ebm": (Target("every digit >= 5%, FD <= half the pretrained EBM's", 600,
                   (_every_digit(), Condition("frechet", "<=", ref="ebm.frechet", factor=0.5))),),
}
REFERENCE_RUNS = {"gan": "pretrained-gan", "vae": "pretrained-vae", "ebm": "pretrained-ebm", "rbm": "pretrained-rbm"}
# The targets are relative to the models shipped before the lecture recipes replaced them (pretrained/ at commit
# 14efb1d: the 'fast' GAN of batch 64, the latent-8 VAE, the 2-epoch EBM), judged by this script's classifier on
# 2,000 samples (scripts/time_to_quality.py at 14efb1d, which measured its own pretrained/). `--references shipped`
# judges whatever pretrained/ holds now instead.
BEFORE_LECTURE: dict[str, float] = {
    "gan.frechet": 115.18, "gan.ratio": 44.87, "gan.min_share": 0.059,
    "vae.frechet": 298.26, "vae.ratio": 116.18, "vae.min_share": 0.023,
    "ebm.frechet": 281.47, "ebm.ratio": 109.6, "ebm.min_share": 0.021,
}


def judged(point: dict[str, Any], cond: Condition, refs: dict[str, float]) -> bool:
    """Whether the point can be judged by the condition: it has the figure, and the threshold's reference is known."""
    return point.get(cond.metric) is not None and cond.threshold(refs) is not None


def holds(point: dict[str, Any], cond: Condition, refs: dict[str, float]) -> bool:
    if not judged(point, cond, refs):
        return False
    value, threshold = point[cond.metric], cond.threshold(refs)
    return value <= threshold if cond.op == "<=" else value >= threshold


def first_point(curve: list[dict[str, Any]], target: Target, refs: dict[str, float]) -> dict[str, Any] | None:
    """The first point (in time order) where every condition holds, or None if none does."""
    for point in sorted(curve, key=lambda p: p["elapsed_s"]):
        if all(holds(point, c, refs) for c in target.conditions):
            return point
    return None


def holds_from(curve: list[dict[str, Any]], target: Target, refs: dict[str, float]) -> dict[str, Any] | None:
    """The first point from which every later point holds too (a noisy figure, a share judged at 2,000 samples, can
    cross a threshold once long before it stays past it), or None when the last point does not hold."""
    found = None
    for point in sorted(curve, key=lambda p: p["elapsed_s"], reverse=True):
        if not all(holds(point, c, refs) for c in target.conditions):
            break
        found = point
    return found


def seconds_to_target(curve: list[dict[str, Any]], target: Target, refs: dict[str, float]) -> float | None:
    """The elapsed seconds of the first point where every condition holds, or None if none does."""
    point = first_point(curve, target, refs)
    return None if point is None else point["elapsed_s"]


def target_report(curve: list[dict[str, Any]], target: Target, refs: dict[str, float]) -> dict[str, Any]:
    """When the target was reached, whether by its deadline, and each condition's gap at the deadline: the measured
    value minus the threshold at the last point at or before the deadline (positive = worse for <=, and the
    reverse for >=; None where nothing was measured by then). `step`: the training step where it was first reached;
    `holds_from_s` and `holds_from_step`: where it held from to the curve's end; `measured_until_s`: how far the
    curve went; `last_step`: the step of the last point where the target could be judged (None where none could:
    a figure this recipe has not, a reference not measured)."""
    reached = first_point(curve, target, refs)
    seconds = None if reached is None else reached["elapsed_s"]
    before = [p for p in curve if p["elapsed_s"] <= target.deadline_s]
    last = max(before, key=lambda p: p["elapsed_s"]) if before else None
    gaps = {}
    for c in target.conditions:
        threshold = c.threshold(refs)
        value = None if last is None else last.get(c.metric)
        gaps[c.metric] = {"threshold": threshold, "value": value,
                          "gap": None if value is None or threshold is None else value - threshold}
    final = max(curve, key=lambda p: p["elapsed_s"]) if curve else None
    judgeable = [p for p in curve if all(judged(p, c, refs) for c in target.conditions)]
    last_judged = max(judgeable, key=lambda p: p["elapsed_s"]) if judgeable else None
    steady = holds_from(curve, target, refs)
    return {"target": target.name, "deadline_s": target.deadline_s, "seconds": seconds,
            "step": None if reached is None else reached.get("step"),
            "holds_from_s": None if steady is None else steady["elapsed_s"],
            "holds_from_step": None if steady is None else steady.get("step"),
            "met": seconds is not None and seconds <= target.deadline_s,
            "measured_until_s": None if final is None else final["elapsed_s"],
            "last_step": None if last_judged is None else last_judged.get("step"), "at_deadline": gaps}


# ---------------------------------------------------------------- the report
def report(runs: list[dict[str, Any]], refs: dict[str, float], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: settings, references, and per run its curve and its targets."""
    for r in runs:
        r["targets"] = [target_report(r["curve"], t, refs) for t in TARGETS[r["model"]]]
        r["compute"] = run_compute(r)  # the steps' FLOPs against the core's peak (scripts/ttq_compute.py)
        for t in r["targets"]:
            t["compute"] = target_compute(r, t)
    return {"format": "genlib-time-to-quality", "version": FORMAT_VERSION, "settings": settings,
            "references": refs, "runs": runs}


def table(doc: dict[str, Any]) -> str:
    """Markdown: per model and recipe, the seconds to each target and the last point's figures."""
    lines = ["| model | recipe | target | deadline s | reached at s | holds from s | met | gap at deadline | "
             "FLOPs to it (at this core's peak) |", "|---|---|---|---:|---:|---:|---|---|---|"]
    for r in doc["runs"]:
        for t in r["targets"]:
            gaps = "; ".join(f"{m} {g['value']:.3g} vs {g['threshold']:.3g}" for m, g in t["at_deadline"].items()
                             if g["value"] is not None and g["threshold"] is not None) or "not measured"
            until = t.get("measured_until_s")
            if until is not None and until < t["deadline_s"]:
                gaps += f" (the run ended at {until:.0f} s)"
            reached = "-" if t["seconds"] is None else f"{t['seconds']:.0f}"
            steady = "-" if t.get("holds_from_s") is None else f"{t['holds_from_s']:.0f}"
            lines.append(f"| {r['model']} | {r['recipe']} | {t['target']} | {t['deadline_s']:.0f} | {reached} | "
                         f"{steady} | "
                         f"{'yes' if t['met'] else 'no'} | {gaps} | {why(r, t)} |")
    lines += ["", "| model | recipe | steps | last point s | FD (x floor) | smallest digit share | likelihood | "
                  "host: one-thread mm GFLOP/s | GFLOP a step | the steps' GFLOP/s | the peak's share over the run |",
              "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        p = r["curve"][-1] if r["curve"] else None
        host = "-" if r.get("host_mm_gflops") is None else f"{r['host_mm_gflops']:.0f}"  # runs from before it was kept
        c = r.get("compute") or {}
        cost = " | ".join([f"{r['step_flops'] / 1e9:.3g}" if r.get("step_flops") else "-",
                           f"{c['steps_gflops']:.0f}" if c.get("steps_gflops") is not None else "-",
                           f"{c['share_of_peak']:.0%}" if c.get("share_of_peak") is not None else "-"])
        if p is None:
            lines.append(f"| {r['model']} | {r['recipe']} | {r.get('steps')} | - | - | - | - | {host} | {cost} |")
            continue
        lik = ", ".join(f"{k} {p[k]:.1f}" for k in ("iwae_nll", "iwae_nll_raw", "ais_ll") if p.get(k) is not None)
        lines.append(f"| {r['model']} | {r['recipe']} | {p['step']} | {p['elapsed_s']:.0f} | {p['frechet']:.2f} "
                     f"({p['ratio']:.1f}x) | {p['min_share']:.3f} | {lik or '-'} | {host} | {cost} |")
    return "\n".join(lines)
