"""Forks on a model page: start a branch of the shown run from one of its saved checkpoints with one setting changed
(genlib.runs.forks), and compare the branches of a run family: their curves on one chart, their samples side by side.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import auth, state
from dashboard.charts import comparison_figure, knob_label, short_label
from dashboard.run_images import grid_png

SETTING_LABELS = {"lr": "learning rate", "beta": "beta (KL weight)", "k": "Gibbs steps k", "epochs": "epochs (total)"}
MAX_SIDE_BY_SIDE = 4  # sample grids per row in the comparison


def describe(run: Any) -> str:
    """'vae-...-ab12', or for a fork 'vae-...-cd34 (lr 1e-04 from epoch-0003 of vae-...-ab12)'."""
    origin = run.record().forked_from
    if origin is None or not origin.changed:
        return run.id
    what = ", ".join(knob_label(k, v[1] if isinstance(v, list) else v) for k, v in origin.changed.items())
    return f"{run.id} ({what} from {origin.checkpoint} of {origin.run_id})"


def _value_input(setting: str, current: Any, point_epoch: int, key: str) -> Any:
    if setting == "epochs":
        return st.number_input("New value", min_value=point_epoch + 1, max_value=100_000,
                               value=max(int(current or 1), point_epoch + 1), step=1, key=key,
                               help="Total epochs from the run's start; the fork trains from its checkpoint to there.")
    if setting == "k":
        return st.number_input("New value", min_value=1, max_value=100, value=int(current or 1), step=1, key=key)
    if setting == "beta":
        return st.number_input("New value", min_value=0.0, max_value=10.0, value=float(current), step=0.25,
                               format="%.2f", key=key)
    return st.number_input("New value", min_value=1e-6, max_value=1.0, value=float(current), format="%.1e",
                           step=float(current) / 2, key=key)


def fork_form(run: Any, model_name: str) -> None:
    """Choose a checkpoint of `run`, one setting and its new value, and start the fork (it opens on this page)."""
    from genlib.runs.forks import branch_points, current_settings
    from genlib.models import model_class

    points = branch_points(run)
    if not points:
        st.caption("A fork starts from a saved checkpoint; this run has none yet (the first comes after an epoch "
                   "or a minute of training).")
        return
    by_name = {p.name: p for p in points}
    settings = [s for s in model_class(model_name).live_knobs if s in SETTING_LABELS] + ["epochs"]
    now = {**current_settings(run), "epochs": (run.info().get("train_config") or {}).get("epochs", 1)}
    c1, c2, c3 = st.columns(3, vertical_alignment="bottom")
    point = c1.selectbox("From checkpoint", list(by_name), key=f"fork-point-{run.id}",
                         format_func=lambda n: f"{n} (step {by_name[n].step:,}, epoch {by_name[n].epoch})",
                         help="'last' is the newest checkpoint; 'epoch-N' the weights saved after epoch N (these start "
                              "a fresh optimiser).")
    setting = c2.selectbox("Change", settings, format_func=lambda s: SETTING_LABELS.get(s, s),
                           key=f"fork-setting-{run.id}")
    with c3:
        value = _value_input(setting, now.get(setting), by_name[point].epoch, f"fork-value-{setting}-{run.id}")
    if st.button("Start the fork", key=f"fork-start-{run.id}", icon=":material/call_split:", type="primary",
                 disabled=not auth.allowed(),
                 help=auth.why("A new run continues from that checkpoint with the changed setting; this run is "
                               "left as is.")):
        _fork(run, setting, value, point)


@auth.guarded("start a fork")
def _fork(run: Any, setting: str, value: Any, point: str) -> None:
    """The 'Start the fork' handler: queues the branch and opens it on this page."""
    try:
        new_id = state.get_manager().fork(run.id, {setting: value}, checkpoint=point)
    except (ValueError, FileNotFoundError, OSError) as e:
        st.error(f"Not forked: {e}")
        return
    state.job_statuses.clear()
    state.select_run(new_id)
    st.rerun()


def branches_view(run: Any, model_name: str) -> None:
    """The family of `run` (its ancestors and every fork of them): one chart of a metric, samples side by side."""
    from genlib.runs.forks import family
    from genlib.models import model_class

    runs = family(state.get_store(), run)
    if len(runs) < 2:
        st.caption("No forks of this run yet: fork it above, and the branches are compared here.")
        return
    cls = model_class(model_name)
    labels = getattr(cls, "metric_labels", {})
    names = list(cls.metric_names)
    metric = st.selectbox("Metric", names, index=names.index(cls.monitor) if cls.monitor in names else 0,
                          format_func=lambda m: short_label(m, labels), key=f"branches-metric-{run.id}")
    curves = {describe(r): state.metric_log(r).series([metric])[metric] for r in runs}
    fig = comparison_figure(curves, short_label(metric, labels), uirevision=f"branches-{runs[0].id}-{metric}")
    st.plotly_chart(fig, key=f"branches-chart-{run.id}", config={"displaylogo": False})
    st.caption("Each branch shares its parent's curve up to the checkpoint it forked from, then goes its own way.")
    for start in range(0, len(runs), MAX_SIDE_BY_SIDE):
        row = runs[start:start + MAX_SIDE_BY_SIDE]
        cols = st.columns(MAX_SIDE_BY_SIDE)
        for col, r in zip(cols, row):
            with col, st.container(key=f"branch-samples-{r.id}"):
                try:
                    png = grid_png(str(r.live_png), r.live_png.stat().st_mtime_ns)
                except OSError:
                    st.caption(f"{r.id}: no samples yet")
                    continue
                st.image(png, output_format="PNG", width="stretch", caption=describe(r))


def forks_section(run: Any, model_name: str, presenting: bool) -> None:
    """The model page's fork form (hidden in presenter mode) and the comparison of the run's branches."""
    if not presenting:
        with st.expander("Fork this run: branch from a checkpoint with one setting changed",
                         icon=":material/call_split:"):
            fork_form(run, model_name)
    with st.expander("Branches of this run: curves and samples side by side", icon=":material/compare:",
                     expanded=run.record().forked_from is not None):
        branches_view(run, model_name)
