"""Data for the runs page: the table of every run, the metrics runs can be compared on, and the comparison chart."""

from __future__ import annotations

from typing import Any, Sequence

from dashboard import state
from dashboard.charts import PROBABILITY_METRICS, comparison_figure, short_label


def _metric_names(model: str) -> tuple[tuple[str, ...], dict[str, str]]:
    from genlib.models import model_class

    try:
        cls = model_class(model)
    except ValueError:
        return ("loss",), {}
    return tuple(cls.metric_names), dict(getattr(cls, "metric_labels", {}))


def status_rows(statuses: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per run for st.dataframe: id, model, dataset, state, progress and its last logged metrics."""
    rows = []
    for s in statuses:
        row = {"run": s.run_id, "model": s.model.upper(), "dataset": s.dataset, "state": s.state,
               "epoch": s.epoch, "steps": s.step, "of": s.total_steps,
               "images/s": round(s.images_per_second) if s.images_per_second else None}
        names, _ = _metric_names(s.model)
        for name in names:
            row[name] = s.metrics.get(name)
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
