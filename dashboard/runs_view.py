"""Data for the runs page: the table of every run, the metrics runs can be compared on, and the comparison chart;
and the handlers of its Import, Resume and Delete buttons (each guarded by the teacher token: dashboard.auth)."""

from __future__ import annotations

from typing import Any, Sequence

import streamlit as st

from dashboard import auth, state
from dashboard.charts import PROBABILITY_METRICS, comparison_figure, short_label


def _metric_names(model: str) -> tuple[tuple[str, ...], dict[str, str]]:
    from genlib.models import model_class

    try:
        cls = model_class(model)
    except ValueError:
        return ("loss",), {}
    return tuple(cls.metric_names), dict(getattr(cls, "metric_labels", {}))


def _origin(run_id: str) -> str:
    """'pretrained' for a shipped run, 'fork of <id>' for a fork, 'uploaded' for an uploaded checkpoint, '' for a run
    started from a form (an Ising sweep's runs show their sweep on the RBM page)."""
    try:
        record = state.get_store().get(run_id).record()
    except (ValueError, FileNotFoundError, OSError):
        return ""
    if record.pretrained:
        return "pretrained"
    if record.forked_from is not None:
        return f"fork of {record.forked_from.run_id}"
    if record.uploaded_from is not None:
        return "uploaded"
    return ""


def status_rows(statuses: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per run for st.dataframe: id, model, dataset, state, progress and its last logged metrics."""
    rows = []
    for s in statuses:
        row = {"run": s.run_id, "model": s.model.upper(), "dataset": s.dataset, "state": s.state,
               "origin": _origin(s.run_id), "epoch": s.epoch, "steps": s.step, "of": s.total_steps,
               "images/s": round(s.images_per_second) if s.images_per_second else None}
        names, _ = _metric_names(s.model)
        for name in names:
            row[name] = s.metrics.get(name)
        row.update(quality_columns(s.run_id))
        rows.append(row)
    return rows


def metric_choices(statuses: Sequence[Any]) -> tuple[list[str], dict[str, str]]:
    """The metrics the given runs report (in their models' order, 'loss' first) and a short label for each."""
    out: list[str] = []
    labels: dict[str, str] = {}
    for model in dict.fromkeys(s.model for s in statuses):
        names, long = _metric_names(model)
        for n in names:
            label = short_label(n, long)
            if n not in out:
                out.append(n)
                labels[n] = label
            elif labels[n] != label:  # the same name means different things ('loss'): say only the name
                labels[n] = n
    return out, labels


def default_comparison(statuses: Sequence[Any], n: int = 3) -> list[str]:
    """The runs compared by default: the newest `n` runs of the newest run's model (comparable curves)."""
    if not statuses:
        return []
    model = statuses[0].model
    return [s.run_id for s in statuses if s.model == model][:n]


def comparison(statuses: Sequence[Any], metric: str, label: str):
    """One metric of several runs in one figure (curves read incrementally through state.metric_log)."""
    store = state.get_store()
    curves = {}
    for s in statuses:
        try:
            run = store.get(s.run_id)
        except (ValueError, FileNotFoundError):
            continue
        steps, values = state.metric_log(run).series([metric])[metric]
        if steps:
            curves[f"{s.run_id} ({s.model}, {s.dataset})"] = (steps, values)
    return comparison_figure(curves, label, uirevision="compare-" + metric, half_line=metric in PROBABILITY_METRICS)


# ---- quality figures (genlib.quality.evaluator) across runs ----

QUALITY_COLUMNS = (("test_log_likelihood", "log-lik (AIS)"), ("pseudo_log_likelihood", "PLL"),
                   ("neg_elbo", "-ELBO"), ("iwae_nll", "IWAE NLL"), ("frechet_distance", "Fréchet"),
                   ("frechet_floor", "floor"))


def _quality(run_id: str) -> tuple[list[dict], dict | None]:
    from dashboard.quality_view import quality_data

    try:
        return quality_data(state.get_store().get(run_id))
    except (ValueError, FileNotFoundError, OSError):
        return [], None


def quality_columns(run_id: str) -> dict[str, Any]:
    """A run's quality figures for the runs table: its last final/full evaluation, else its latest cheap one."""
    from dashboard.quality_view import best_summary

    record = best_summary(*_quality(run_id))
    figures = (record or {}).get("figures", {})
    row: dict[str, Any] = {"quality": f"{record['kind']} @ {record['step']:,}" if record else None}
    for key, title in QUALITY_COLUMNS:
        v = figures.get(key)
        row[title] = round(v, 2) if isinstance(v, (int, float)) else None
    return row


def quality_column_config() -> dict[str, Any]:
    """st.dataframe column settings for the quality columns: what each figure is and which way is better."""
    import streamlit as st

    from genlib.quality.settings import FIGURES_BY_KEY

    config: dict[str, Any] = {"quality": st.column_config.TextColumn(
        "quality", help="Which evaluation the figures come from (cheap during training, final at its end, full on "
                        "demand) and at which step; open the run's page for their uncertainties and trend.")}
    for key, title in QUALITY_COLUMNS:
        better = FIGURES_BY_KEY[key].better
        config[title] = st.column_config.NumberColumn(title, format="%.2f",
                                                      help=f"{FIGURES_BY_KEY[key].label}: {better} is better.")
    return config


def quality_choices(statuses: Sequence[Any]) -> list[str]:
    """The quality figures (genlib.quality.evaluator.FIGURES keys) that at least one of the runs has recorded."""
    from dashboard.quality_view import good_records
    from genlib.quality.settings import FIGURES

    have: set[str] = set()
    for s in statuses:
        for r in good_records(_quality(s.run_id)[0]):
            have.update(k for k, v in r["figures"].items() if isinstance(v, (int, float)))
    return [f.key for f in FIGURES if f.key in have]


def quality_comparison(statuses: Sequence[Any], key: str):
    """One quality figure of several runs against the step: cheap evaluations as lines with error bars, final and
    full ones as diamonds, one colour per run."""
    import plotly.graph_objects as go

    from dashboard.quality_view import good_records
    from genlib.quality.settings import FIGURES_BY_KEY

    spec = FIGURES_BY_KEY[key]
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
    fig = go.Figure()
    for i, s in enumerate(statuses):
        rows = [r for r in good_records(_quality(s.run_id)[0]) if isinstance(r["figures"].get(key), (int, float))]
        colour = palette[i % len(palette)]
        for cheap in (True, False):
            part = [r for r in rows if (r.get("kind") == "cheap") == cheap]
            if not part:
                continue
            se = [r["figures"].get(spec.se_key) or 0.0 if spec.se_key else 0.0 for r in part]
            fig.add_trace(go.Scatter(
                x=[r["step"] for r in part], y=[r["figures"][key] for r in part], name=f"{s.run_id} "
                + ("(cheap)" if cheap else "(final/full)"), mode="lines+markers" if cheap else "markers",
                error_y=dict(type="data", array=se, visible=any(se)), legendgroup=s.run_id,
                marker=dict(color=colour, symbol="circle" if cheap else "diamond", size=6 if cheap else 11),
                hovertemplate="step %{x:,}<br>%{y:.2f}<extra>" + s.run_id + "</extra>"))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="step",
                      yaxis_title=f"{spec.label} ({spec.better} is better)", uirevision="quality-" + key,
                      legend=dict(orientation="h", y=-0.2))
    return fig


# ---- the runs page's handlers (layout in app_pages/runs.py) ----

@auth.guarded("import a checkpoint")
def import_upload(uploaded: Any) -> None:
    """The 'Import as a new run' handler: the uploaded checkpoint becomes a new run, which the page then selects."""
    from genlib.runs.store import import_checkpoint

    try:
        new_run = import_checkpoint(state.get_store(), uploaded.getvalue(), filename=uploaded.name)
    except (ValueError, OSError) as e:  # CheckpointError is a ValueError; OSError: disk full, not writable
        st.error(f"Not imported: {e}")
        return
    state.job_statuses.clear()
    st.session_state["runs-flash"] = (f"Imported {uploaded.name} as run {new_run.id} "
                                      f"(step {new_run.state().get('step', 0):,}).")
    st.query_params["run"] = new_run.id
    st.rerun()


@auth.guarded("resume a run")
def resume_run(run_id: str) -> None:
    """The runs page's 'Resume' handler."""
    try:
        state.get_manager().resume(run_id)
    except (ValueError, OSError) as e:  # OSError: a full disk or an unwritable runs folder
        st.error(f"Could not resume: {e}")
        return
    state.job_statuses.clear()
    st.session_state["runs-flash"] = f"Run {run_id} resumed."
    st.rerun()


@auth.guarded("delete a run")
def delete_run(run_id: str, confirmed: bool) -> None:
    """The 'Delete run' handler: only once confirmed (checked here too, not only by the disabled button), never a
    run that trains again meanwhile, nor a pretrained one (the manager says)."""
    if not confirmed:
        st.warning("Tick the box that confirms the deletion first.")
        return
    try:
        if state.get_manager().status(run_id).live:
            raise ValueError(f"run {run_id} is training again; stop it first")
        state.get_manager().delete(run_id)
    except (ValueError, FileNotFoundError, OSError) as e:
        st.error(f"Not deleted: {e}")
        return
    state.forget_run(run_id)
    if st.query_params.get("run") == run_id:
        state.select_run(None)
    st.session_state["runs-flash"] = f"Run {run_id} deleted."
    st.rerun()
