"""The runs page: every run on disk in one table, their loss curves compared, and one run opened, downloaded,
resumed or deleted."""

import streamlit as st

from dashboard import auth, runs_view, state
from dashboard.model_text import model_page, model_title

RESUMABLE = ("interrupted", "stopped", "failed", "diverged")

st.title("All runs")
st.caption("Every training run saved on this server, newest first, whoever started it. Open one on its model's "
           "page, compare their curves, download a checkpoint, or delete what you no longer need.")

flash = st.session_state.pop("runs-flash", None)
if flash:
    st.success(flash)
refusal = state.run_param_refusal()
if refusal:
    st.warning(refusal, icon=":material/block:")

with st.expander("Upload a checkpoint", icon=":material/upload:"):
    uploaded = st.file_uploader("A genlib checkpoint (.safetensors, at most 50 MB)", type=["safetensors"],
                                key="upload-ckpt", disabled=not auth.allowed(),
                                help=auth.why("A checkpoint downloaded from this or another genlib server becomes a "
                                              "new run here: explore it on its model's page or continue training "
                                              "it. Only genlib's safetensors files are read; nothing in a file is "
                                              "ever run."))
    if uploaded is not None and st.button("Import as a new run", key="import-ckpt", icon=":material/add:",
                                          disabled=not auth.allowed()):
        runs_view.import_upload(uploaded)

statuses = state.job_statuses_now()
if not statuses:
    st.info("No runs yet: start one from the RBM, VAE or GAN page.")
    st.stop()

st.dataframe(runs_view.status_rows(statuses), hide_index=True, key="runs-table",
             column_config={"of": st.column_config.NumberColumn("of", help="total steps planned"),
                            "steps": st.column_config.NumberColumn("steps", help="steps trained so far"),
                            **runs_view.quality_column_config()})
by_id = {s.run_id: s for s in statuses}


def label(run_id: str) -> str:
    s = by_id[run_id]
    return f"{run_id} · {s.state} · {s.dataset}"


# ---- compare ----
st.subheader("Compare runs")
ids = list(by_id)
chosen = st.multiselect("Runs to compare", ids, default=runs_view.default_comparison(statuses), format_func=label, key="compare-runs",
                        help="Pick runs to draw on one chart; runs of different models share the metrics they "
                             "have in common (every model reports 'loss').")
picked = [by_id[i] for i in chosen]
metrics, labels = runs_view.metric_choices(picked)
if picked and metrics:
    metric = st.selectbox("Metric", metrics, format_func=lambda m: labels.get(m, m), key="compare-metric",
                          help="The quantity drawn against the training step for each chosen run.")
    st.plotly_chart(runs_view.comparison(picked, metric, labels.get(metric, metric)), key="compare-chart",
                    config={"displaylogo": False})
    st.caption(f"{labels.get(metric, metric)} of each chosen run against its training step (averaged over each "
               "logged window, at most 2,000 points per curve). Runs on different datasets are not directly "
               "comparable.")
else:
    st.caption("Choose one or more runs to draw their curves.")
quality_keys = runs_view.quality_choices(picked)
if quality_keys:
    from genlib.quality.settings import FIGURES_BY_KEY

    key = st.selectbox("Quality figure", quality_keys, format_func=lambda k: FIGURES_BY_KEY[k].label,
                       key="compare-quality", help="A quality figure (genlib.quality.evaluator) of each chosen run against "
                                                   "the step at which it was evaluated.")
    st.plotly_chart(runs_view.quality_comparison(picked, key), key="compare-quality-chart",
                    config={"displaylogo": False})
    st.caption("Lines: cheap evaluations during training (rough, but like with like); diamonds: the final and full "
               "evaluations (the papers' settings). Bars are one standard error. Compare runs on the same dataset.")

# ---- manage one run ----
st.subheader("Manage a run")
wanted = st.query_params.get("run")
target = st.selectbox("Run", ids, index=ids.index(wanted) if wanted in by_id else 0, format_func=label,
                      key="manage-run", help="The run the buttons below act on.")
s = by_id[target]
try:
    run = state.get_store().get(target)
except (ValueError, FileNotFoundError):
    st.warning(f"Run {target} no longer exists.")
    st.stop()

if s.state == "interrupted":
    st.warning(f"Run {target} was interrupted: its worker stopped without finishing (the server restarted, or the "
               "process was killed). Resume continues it from its last checkpoint.")
c1, c2, c3 = st.columns(3)
with c1:
    page = model_page(s.model)
    if st.button(f"Open on the {model_title(s.model)} page", key="open-run",
                 icon=":material/open_in_new:", help="Show this run's curves, samples and explorer.",
                 disabled=page is None):
        st.switch_page(page, query_params={"run": target})
with c2:
    ckpt = run.checkpoint_path
    st.download_button("Download checkpoint", data=lambda: ckpt.read_bytes(), file_name=f"{target}.safetensors",
                       mime="application/octet-stream", key="download-ckpt", icon=":material/download:",
                       disabled=not ckpt.exists(),
                       help="The run's last checkpoint (safetensors: weights and configs, no code). Load it with "
                            "`python -m genlib sample` or genlib.runs.checkpoints.load_checkpoint."
                       if ckpt.exists() else "This run has saved no checkpoint yet.")
with c3:
    if s.state in RESUMABLE:
        if st.button("Resume", key="resume-run", icon=":material/play_arrow:", disabled=not auth.allowed(),
                     help=auth.why("Continue training from the last checkpoint to the planned end.")):
            runs_view.resume_run(target)

with st.container(border=True):
    if s.live:
        st.caption(f"Run {target} is {s.state}: stop it on its page before deleting it.")
    elif run.info().get("pretrained"):
        st.caption(f"Run {target} is a pretrained model shipped with the app, kept read-only: it is never deleted "
                   "or overwritten. Fork it on its model's page to train a copy further.")
    else:
        sure = st.checkbox(f"Yes, delete run {target} and all its files (checkpoints, samples, metrics)",
                           key=f"confirm-delete-{target}", disabled=not auth.allowed())
        if st.button("Delete run", key="delete-run", type="primary", disabled=not sure or not auth.allowed(),
                     icon=":material/delete:",
                     help=auth.why("Removes the run folder from the server for everyone. There is no undo.")):
            runs_view.delete_run(target, confirmed=sure)
