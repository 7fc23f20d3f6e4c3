"""The quality panel of a model page: the latest quality figures of the selected run with their uncertainties, their
trend over training seconds or steps, the class histogram of its samples, a button that runs the full evaluation in the
background, and what each figure means; plus the cached reads the runs page shares.

Layout only: the figures come from genlib.quality.evaluator's records in the run folder (quality.jsonl, quality.json,
quality-status.json); the evaluation itself runs in a worker process (or thread), never in the page's script.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import plotly.graph_objects as go
import streamlit as st

from dashboard import auth
from genlib.models import model_class
from genlib.quality.records import evaluation_running
from genlib.quality.settings import FIGURES, FIGURES_BY_KEY

BUSY_REFRESH_S = 1.0  # the panel's refresh while an evaluation runs (its progress bar)
LIVE_REFRESH_S = 5.0  # ...while the run trains (a cheap evaluation lands every 15 s or more)
KIND_LABELS = {"cheap": "cheap (during training)", "final": "final (end of training)", "full": "full (the papers')"}

# What each figure means, in plain words (the quality panel's explainer and the runs table's column help).
EXPLANATIONS: dict[str, str] = {
    "test_log_likelihood":
        "The average log-probability, in nats, that the RBM gives each binarised test image it never saw: "
        "log p(v) = -F(v) - log Z. The normaliser Z sums over all 2^784 images, so annealed importance sampling "
        "(AIS) estimates it, cooling chains from a simple model into the RBM (Salakhutdinov & Murray 2008). "
        "**Higher (closer to 0) is better.** The ± is one standard error (AIS and the finite test set together). "
        "A short AIS tends to overestimate the figure: trust the final or full value over the cheap trend. "
        "For scale: their 500-unit RBMs scored about -125 nats (CD-1) and -86 nats (CD-25).",
    "pseudo_log_likelihood":
        "How well the RBM predicts each pixel from all the others, summed over the 784 pixels (estimated from one "
        "random pixel per image). It needs no partition function, so it is cheap and follows learning, but it is "
        "not the likelihood and not comparable with it. **Higher is better.**",
    "neg_elbo":
        "The VAE's own loss measured on test images: reconstruction error plus the KL price of the code, in nats "
        "per binarised image. It is an upper bound on -log p(x). **Lower is better.**",
    "iwae_nll":
        "A tighter upper bound on -log p(x) from k importance samples per image (Burda et al. 2016): with "
        "k = 5,000 it is the figure papers quote (about 85-87 nats for a one-layer VAE on binarised MNIST). It is "
        "never above the negative ELBO; the gap shows how far the encoder's Gaussian is from the true posterior. "
        "**Lower is better.**",
    "frechet_distance":
        "Fit one Gaussian to the classifier's 128 features of generated images and another to those of real test "
        "images, and measure how far apart they are (the idea of FID, with genlib's own MNIST classifier in place "
        "of Inception). 0 means the same statistics. **Lower is better.** It grows when there are fewer samples, "
        "so compare it only at the same number of samples.",
    "frechet_floor":
        "The same distance between as many real *training* images and the test set: what a perfect model would "
        "score with this many samples. A model at the floor is as good as this figure can tell.",
    "class_entropy":
        "The classifier names the digit in each sample; a healthy model draws all ten about equally often, an "
        "entropy of log 10 = 2.30 nats. A GAN whose histogram piles onto a few classes is collapsing onto modes. "
        "**Higher is better**, up to 2.30.",
}


# ---- pure helpers (no Streamlit): what to show, from the records ----

def good_records(records: Sequence[dict]) -> list[dict]:
    """The records with figures (no error), in step order, a re-logged step (after a resume) replacing the old."""
    by_key: dict[tuple[str, int], dict] = {}
    for r in records:
        if r.get("error") is None and r.get("figures") and isinstance(r.get("step"), int):
            by_key[(r.get("kind", "cheap"), r["step"])] = r
    return sorted(by_key.values(), key=lambda r: (r["step"], r.get("t", 0)))


def latest(records: Sequence[dict]) -> dict | None:
    """The most recent record with figures, or None."""
    good = [r for r in records if r.get("error") is None and r.get("figures")]
    return max(good, key=lambda r: r.get("t", 0)) if good else None


def best_summary(records: Sequence[dict], summary: dict | None) -> dict | None:
    """What a table shows for a run: its last final/full evaluation, else its latest cheap one."""
    if summary and summary.get("figures"):
        return summary
    return latest(records)


def format_value(value: Any, se: Any = None) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    if isinstance(se, (int, float)) and math.isfinite(se):
        return f"{value:,.2f} ± {se:.2f}"
    return f"{value:,.2f}"


def describe(record: dict) -> str:
    """One line on how a record's figures were made."""
    f = record.get("figures", {})
    parts = [f"{KIND_LABELS.get(record.get('kind'), record.get('kind'))} evaluation at step {record.get('step', 0):,}"]
    if "test_log_likelihood" in f:
        parts.append(f"AIS {f.get('ais_steps', 0):,} steps x {f.get('ais_chains', 0)} chains on "
                     f"{f.get('n_test', 0):,} test images")
    if "iwae_nll" in f:
        parts.append(f"IWAE k = {f.get('iwae_k', 0):,} on {f.get('vae_n_test', 0):,} test images")
    if "frechet_distance" in f:
        acc = f.get("classifier_accuracy")
        parts.append(f"{f.get('n_samples', 0):,} samples" + (f" (classifier {acc:.1%} accurate)" if acc else ""))
    if record.get("seconds"):
        parts.append(f"took {record['seconds']:.1f} s")
    return "; ".join(parts) + "."


def shown_figures(record: dict) -> list:
    """The FIGURES this record has, in their order."""
    return [fig for fig in FIGURES if isinstance(record.get("figures", {}).get(fig.key), (int, float))]


X_AXES = {"seconds": "training seconds", "step": "step"}  # the trend's x-axis choices (the panel's toggle)


def step_seconds(rows: Sequence[dict]) -> tuple[list[int], list[float]]:
    """(steps, training seconds) of a run's metrics rows, in step order: the clock that dates quality records made
    before records carried their own "train_seconds"."""
    pairs = sorted({int(r["step"]): float(r["seconds"]) for r in rows
                    if isinstance(r.get("step"), int) and isinstance(r.get("seconds"), (int, float))}.items())
    return [p[0] for p in pairs], [p[1] for p in pairs]


def record_seconds(record: dict, clock: tuple[Sequence[int], Sequence[float]] | None = None) -> float | None:
    """The training seconds at which a record was made: its own "train_seconds", else the metrics clock
    interpolated at its step (held at the ends), else None."""
    own = record.get("train_seconds")
    if isinstance(own, (int, float)):
        return float(own)
    if not clock or not clock[0]:
        return None
    import bisect

    steps, secs = clock
    step = record.get("step", 0)
    i = bisect.bisect_left(steps, step)
    if i <= 0:
        return secs[0] * step / steps[0] if steps[0] > 0 else secs[0]  # before the first log: linear from 0
    if i >= len(steps):
        return secs[-1]
    s0, s1, t0, t1 = steps[i - 1], steps[i], secs[i - 1], secs[i]
    return t0 + (t1 - t0) * (step - s0) / (s1 - s0)


def trend_figure(records: Sequence[dict], *, uirevision: str | None = None, x: str = "step",
                 clock: tuple[Sequence[int], Sequence[float]] | None = None) -> go.Figure | None:
    """Each figure against the training step, or (x="seconds") against the run's training seconds (records without
    a time are left out): cheap evaluations as lines with error bars, final/full as diamonds; the Fréchet floor
    dashed under the distance. None when there is nothing to draw."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {sorted(X_AXES)}, not {x!r}")
    good = good_records(records)
    if x == "seconds":
        timed = [(record_seconds(r, clock), r) for r in good]
        good = [{**r, "_x": t} for t, r in timed if t is not None]
    else:
        good = [{**r, "_x": r["step"]} for r in good]
    keys = [fig.key for fig in FIGURES if fig.key != "frechet_floor"
            and any(isinstance(r["figures"].get(fig.key), (int, float)) for r in good)]
    if not keys:
        return None
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[FIGURES_BY_KEY[k].label for k in keys],
                        horizontal_spacing=0.08)
    colours = {"cheap": "#1f77b4", "final": "#d62728", "full": "#2ca02c"}
    hover = "%{x:.0f} s of training" if x == "seconds" else "step %{x:,}"
    for col, key in enumerate(keys, start=1):
        spec = FIGURES_BY_KEY[key]
        for kind in ("cheap", "final", "full"):
            rows = [r for r in good if r.get("kind") == kind and isinstance(r["figures"].get(key), (int, float))]
            if not rows:
                continue
            se = [r["figures"].get(spec.se_key) if spec.se_key else None for r in rows]
            fig.add_trace(go.Scatter(
                x=[r["_x"] for r in rows], y=[r["figures"][key] for r in rows],
                error_y=dict(type="data", array=[v or 0.0 for v in se], visible=any(v for v in se)),
                mode="lines+markers" if kind == "cheap" else "markers", name=KIND_LABELS[kind],
                legendgroup=kind, showlegend=col == 1, marker=dict(color=colours[kind],
                                                                   symbol="circle" if kind == "cheap" else "diamond",
                                                                   size=6 if kind == "cheap" else 11),
                hovertemplate=hover + "<br>%{y:.2f}<extra>" + kind + "</extra>"), row=1, col=col)
            if key == "frechet_distance":
                floors = [r["figures"].get("frechet_floor") for r in rows]
                fig.add_trace(go.Scatter(x=[r["_x"] for r in rows], y=floors, mode="lines",
                                         line=dict(color=colours[kind], dash="dash", width=1),
                                         name=f"floor ({kind})", legendgroup=kind, showlegend=False,
                                         hovertemplate="floor %{y:.2f}<extra>" + kind + "</extra>"), row=1, col=col)
        fig.update_xaxes(title_text=X_AXES[x], row=1, col=col)
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10), uirevision=uirevision,
                      legend=dict(orientation="h", y=-0.3))
    return fig


def histogram_figure(record: dict) -> go.Figure | None:
    """The class histogram of a record's samples as bars, with the uniform share dashed; None without one."""
    f = record.get("figures", {})
    counts = f.get("class_histogram")
    if not counts:
        return None
    names = f.get("class_names") or [str(i) for i in range(len(counts))]
    fig = go.Figure(go.Bar(x=[str(n) for n in names], y=counts, marker_color="#1f77b4",
                           hovertemplate="%{x}: %{y:,} samples<extra></extra>"))
    fig.add_hline(y=sum(counts) / len(counts), line_dash="dash", line_color="gray",
                  annotation_text="every class equally often", annotation_position="top left")
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="class the classifier sees",
                      yaxis_title="samples")
    return fig


# ---- cached reads, shared by every viewer ----

def _stamp(path: Any) -> tuple[int, int]:
    try:
        st_ = os.stat(path)
        return st_.st_mtime_ns, st_.st_size
    except OSError:
        return 0, 0


@st.cache_data(max_entries=256, show_spinner=False)
def _read(run_path: str, stamps: tuple) -> tuple[list[dict], dict | None]:
    from pathlib import Path

    from genlib.runs.store import Run

    run = Run(Path(run_path))
    records, _ = run.quality_records()
    return records, run.quality_summary()


@st.cache_data(max_entries=64, show_spinner=False)
def _clock(run_path: str, stamp: tuple) -> tuple[list[int], list[float]]:
    """step_seconds of a run's metrics.jsonl, re-read only when it changes."""
    from pathlib import Path

    from genlib.runs.store import Run

    rows, _ = Run(Path(run_path)).metrics()
    return step_seconds(rows)


@st.cache_resource(max_entries=64, show_spinner=False)
def shared_trend(run_path: str, stamps: tuple, run_id: str, _records: Sequence[dict],
                 x: str = "step") -> go.Figure | None:
    """trend_figure of a run's records, built once per change of its quality files for every viewer (make_subplots
    per session and refresh cost more than the rest of the panel) and drawn from one dict (dashboard.charts).
    `stamps` includes the metrics file's when x is "seconds" (the clock that dates older records)."""
    from dashboard.charts import SharedFigure

    clock = _clock(run_path, stamps[-1]) if x == "seconds" else None
    fig = trend_figure(_records, uirevision=f"quality-{run_id}-{x}", x=x, clock=clock)
    return None if fig is None else SharedFigure(fig)


def quality_data(run: Any) -> tuple[list[dict], dict | None]:
    """(every quality record, the last final/full one) of a run, re-read only when the files change."""
    return _read(str(run.path), (_stamp(run.quality_path), _stamp(run.quality_summary_path)))


@st.cache_resource(show_spinner=False)
def _evaluations() -> dict[str, Any]:
    """Background evaluations this server started: run id -> Popen or Thread (kept to reap them)."""
    return {}


def _reap() -> None:
    jobs = _evaluations()
    for run_id, handle in list(jobs.items()):
        alive = handle.is_alive() if hasattr(handle, "is_alive") else handle.poll() is None
        if not alive:
            jobs.pop(run_id, None)


@auth.guarded("run the full evaluation")
def start_full_evaluation(run: Any) -> None:
    """The 'Run the full evaluation' handler: start it in the background (the jobs' backend: worker process or
    thread) and redraw the panel with its progress, or say why it could not start."""
    _reap()
    try:  # through the job manager: the same queue, caps and launcher as training (genlib.jobs.launchers)
        from dashboard.state import get_manager

        get_manager().evaluate(run.id, "full")
    except (ValueError, OSError) as e:
        st.error(f"Could not start the evaluation: {e}")
        return
    st.rerun()


@auth.guarded("cancel an evaluation")
def cancel_evaluation(run: Any) -> None:
    """Ask the running final or full evaluation of `run` to stop (none running: nothing is written, so no request
    is left behind for a later one)."""
    if not evaluation_running(run):
        st.info("That evaluation has already ended.")
        return
    try:
        run.quality_cancel_path.touch()
    except OSError as e:
        st.error(f"Could not cancel: {e}")


# ---- the panel ----

def _metrics(record: dict, previous: dict | None) -> None:
    figures = shown_figures(record)
    cols = st.columns(min(4, max(1, len(figures))))
    for i, spec in enumerate(figures):
        f = record["figures"]
        delta = None
        if previous is not None and isinstance(previous["figures"].get(spec.key), (int, float)):
            delta = f"{f[spec.key] - previous['figures'][spec.key]:+.2f} since step {previous['step']:,}"
        cols[i % len(cols)].metric(spec.label, format_value(f[spec.key], f.get(spec.se_key) if spec.se_key else None),
                                   delta=delta, delta_color="normal" if spec.better == "higher" else "inverse",
                                   help=EXPLANATIONS.get(spec.key))


def _body(run: Any, model_name: str, live: bool, shown_busy: bool) -> None:
    busy = evaluation_running(run)
    if busy != shown_busy:
        st.rerun()  # an evaluation started or ended: the whole panel, once, with the right refresh
    records, summary = quality_data(run)
    if busy:
        status = run.quality_status()
        kind = KIND_LABELS.get(status.get("kind"), status.get("kind", ""))
        st.progress(float(status.get("fraction") or 0.0),
                    text=f"Running the {kind} evaluation: {status.get('message') or 'starting'}")
        if st.button("Cancel the evaluation", key=f"quality-cancel-{run.id}", icon=":material/cancel:",
                     disabled=not auth.allowed(),
                     help=auth.why("Stops it at its next progress report; the figures recorded so far stay.")):
            cancel_evaluation(run)
    last = records[-1] if records else None
    if last is not None and last.get("error"):
        when = f"The {last.get('kind', '')} evaluation at step {last.get('step', 0):,}"
        if last.get("cancelled"):
            st.info(f"{when} was cancelled.")
        else:
            st.warning(f"{when} failed: {last['error']}. Training is not affected; the next evaluation tries again.")
    record = latest(records) or (summary if summary and summary.get("figures") else None)
    if record is None:
        if not busy:
            st.caption("No quality figures yet: cheap ones arrive every few tens of seconds while a run trains "
                       "(not for runs shorter than that), the final ones when it finishes.")
        return
    same_kind = [r for r in good_records(records) if r.get("kind") == record.get("kind") and r is not record
                 and r["step"] < record["step"]]
    _metrics(record, same_kind[-1] if same_kind else None)
    st.caption(describe(record))
    if record["figures"].get("comparable") is False:
        st.caption("This VAE has a Gaussian decoder: its figures are densities of grey images, not comparable "
                   "with the binarised-MNIST figures of papers.")
    if record["figures"].get("samples_skipped"):
        st.caption(f"Sample figures: {record['figures']['samples_skipped']}.")
    left, right = st.columns([3, 2])
    with left:
        x = st.radio("Quality against", list(X_AXES), format_func=X_AXES.get, horizontal=True,
                     key=f"quality-x-{model_name}",
                     help="Training seconds (the clock a class watches: pauses and evaluations not counted) or "
                          "optimiser steps.")
        stamps = (_stamp(run.quality_path), _stamp(run.quality_summary_path))
        if x == "seconds":
            stamps += (_stamp(run.metrics_path),)
        fig = shared_trend(str(run.path), stamps, run.id, records, x)
        if fig is not None:
            st.plotly_chart(fig, key=f"quality-trend-{run.id}", config={"displaylogo": False})
    with right:
        with_hist = next((r for r in reversed(good_records(records)) if r["figures"].get("class_histogram")), None)
        hist = histogram_figure(with_hist) if with_hist else None
        if hist is not None:
            st.plotly_chart(hist, key=f"quality-hist-{run.id}", config={"displaylogo": False})
            f = with_hist["figures"]
            st.caption(f"Classes of {f.get('n_samples', 0):,} samples at step {with_hist['step']:,}: "
                       f"{f.get('classes_seen', 0)} of {len(f['class_histogram'])} seen, entropy "
                       f"{f.get('class_entropy', 0):.2f} of at most {f.get('class_max_entropy', 0):.2f} nats.")


def quality_panel(run: Any, model_name: str, live: bool) -> None:
    """The quality section of a model page for the selected run (refreshing itself while it trains or evaluates)."""
    st.markdown("##### Quality")
    busy = evaluation_running(run)
    st.fragment(_body, run_every=BUSY_REFRESH_S if busy else (LIVE_REFRESH_S if live else None))(
        run, model_name, live, busy)
    has_weights = run.latest_weights() is not None
    why = ("wait until it stops training" if live else "an evaluation is running" if busy
           else "it has no checkpoint yet" if not has_weights
           else "only the teacher can: enter the teacher token in the sidebar" if not auth.allowed() else None)
    if st.button("Run the full evaluation", key=f"quality-full-{run.id}", icon=":material/analytics:",
                 disabled=why is not None,
                 help=("The papers' settings on the last checkpoint, in the background: AIS with 14,500 steps x 100 "
                       "chains (RBM), IWAE with k = 5,000 on every test image (VAE: about ten CPU minutes for MNIST), "
                       "the Fréchet distance of 10,000 samples. The first one trains the digit classifier (about 80 s on 2 CPU "
                       "cores for MNIST, once).") + (f" Not now: {why}." if why else "")):
        start_full_evaluation(run)
    with st.expander("What these figures mean"):
        likelihood = model_class(model_name).likelihood
        keys = [f.key for f in FIGURES if f.applies_to(likelihood)]
        st.markdown("\n".join(f"- **{FIGURES_BY_KEY[k].label}**: {EXPLANATIONS[k]}" for k in keys))
        st.markdown("Cheap figures (every 15 s or more while training, at most a tenth of its time) use small "
                    "settings and trend well, but their values are rough; the final evaluation when a run "
                    "finishes and the full one (button) use the papers' settings.")
