"""The quality panel of a model page: the latest quality figures of the selected run with their uncertainties, their
trend over training steps, the class histogram of its samples, a button that runs the full evaluation in the
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

from genlib.quality.records import evaluation_running, start_evaluation
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


def trend_figure(records: Sequence[dict], *, uirevision: str | None = None) -> go.Figure | None:
    """Each figure against the training step: cheap evaluations as lines with error bars, final/full as diamonds;
    the Fréchet floor dashed under the distance. None when there is nothing to draw."""
    good = good_records(records)
    keys = [fig.key for fig in FIGURES if fig.key != "frechet_floor"
            and any(isinstance(r["figures"].get(fig.key), (int, float)) for r in good)]
    if not keys:
        return None
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[FIGURES_BY_KEY[k].label for k in keys],
                        horizontal_spacing=0.08)
    colours = {"cheap": "#1f77b4", "final": "#d62728", "full": "#2ca02c"}
    for col, key in enumerate(keys, start=1):
        spec = FIGURES_BY_KEY[key]
        for kind in ("cheap", "final", "full"):
            rows = [r for r in good if r.get("kind") == kind and isinstance(r["figures"].get(key), (int, float))]
            if not rows:
                continue
            se = [r["figures"].get(spec.se_key) if spec.se_key else None for r in rows]
            fig.add_trace(go.Scatter(
                x=[r["step"] for r in rows], y=[r["figures"][key] for r in rows],
                error_y=dict(type="data", array=[v or 0.0 for v in se], visible=any(v for v in se)),
                mode="lines+markers" if kind == "cheap" else "markers", name=KIND_LABELS[kind],
                legendgroup=kind, showlegend=col == 1, marker=dict(color=colours[kind],
                                                                   symbol="circle" if kind == "cheap" else "diamond",
                                                                   size=6 if kind == "cheap" else 11),
                hovertemplate="step %{x:,}<br>%{y:.2f}<extra>" + kind + "</extra>"), row=1, col=col)
            if key == "frechet_distance":
                floors = [r["figures"].get("frechet_floor") for r in rows]
                fig.add_trace(go.Scatter(x=[r["step"] for r in rows], y=floors, mode="lines",
                                         line=dict(color=colours[kind], dash="dash", width=1),
                                         name=f"floor ({kind})", legendgroup=kind, showlegend=False,
                                         hovertemplate="floor %{y:.2f}<extra>" + kind + "</extra>"), row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
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


def start_full_evaluation(run: Any) -> None:
    """Start the full evaluation of a run in the background (the jobs' backend: worker process or thread)."""
    _reap()
    backend = "thread" if os.environ.get("GENLIB_JOB_BACKEND") == "thread" else "process"
    _evaluations()[run.id] = start_evaluation(run, "full", backend=backend)


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
                     help="Stops it at its next progress report; the figures recorded so far stay."):
            try:
                run.quality_cancel_path.touch()
            except OSError as e:
                st.error(f"Could not cancel: {e}")
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
        fig = trend_figure(records, uirevision=f"quality-{run.id}")
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
    has_weights = run.checkpoint_path.exists() or run.snapshot_path.exists()
    why = ("wait until it stops training" if live else "an evaluation is running" if busy
           else "it has no checkpoint yet" if not has_weights else None)
    if st.button("Run the full evaluation", key=f"quality-full-{run.id}", icon=":material/analytics:",
                 disabled=why is not None,
                 help=("The papers' settings on the last checkpoint, in the background: AIS with 14,500 steps x 100 "
                       "chains (RBM), IWAE with k = 5,000 on every test image (VAE: about ten CPU minutes for MNIST), "
                       "the Fréchet distance of 10,000 samples. The first one trains the digit classifier (about 80 s on 2 CPU "
                       "cores for MNIST, once).") + (f" Not now: {why}." if why else "")):
        try:
            start_full_evaluation(run)
        except (ValueError, OSError) as e:
            st.error(f"Could not start the evaluation: {e}")
        else:
            st.rerun()
    with st.expander("What these figures mean"):
        keys = [f.key for f in FIGURES if f.models is None or model_name in f.models]
        st.markdown("\n".join(f"- **{FIGURES_BY_KEY[k].label}**: {EXPLANATIONS[k]}" for k in keys))
        st.markdown("Cheap figures (every 15 s or more while training, at most a tenth of its time) use small "
                    "settings and trend well, but their values are rough; the final evaluation when a run "
                    "finishes and the full one (button) use the papers' settings.")
