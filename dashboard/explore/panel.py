"""The "Exploring the latent space" section of a model page: picks a run's freshest weights and hands them to the
model's explorer (dashboard/explore/vae.py, gan.py, rbm.py, ebm.py), which draws its panels with the shared widgets."""

from __future__ import annotations

import streamlit as st

from dashboard.explore import draw_digit, ebm, gan, rbm, vae
from dashboard.explore.widgets import (REFRESH_S, is_live, key, load_snapshot, refresh_every, tabbed_panels,
                                       weights_file)
from genlib.models import LatentModel, model_class
from genlib.runs.store import LIVE_STATES, Run

EXPLORERS = {"vae": vae, "gan": gan, "rbm": rbm, "ebm": ebm}  # model name -> module with PANELS {tab: panel}
YOUR_DIGIT = "Your digit"  # the last tab of the models that can take in a drawing (draw_digit.PANELS)


def _status(run: Run, step: int, was_live: bool) -> None:
    """Which snapshot is shown; once a followed run stops, reruns the page so the panels' timers stop too."""
    snap_step = step
    try:
        snap = load_snapshot(run)
        snap_step = snap.step if snap is not None else step
    except Exception:  # noqa: BLE001 - keep the last known step
        pass
    run_state = run.effective_state()
    live = run_state in LIVE_STATES
    if was_live and not live:
        st.rerun(scope="app")
    with st.container(key=f"explore-status-{run.id}"):
        if live:
            st.caption(f"Exploring the snapshot saved at step {snap_step:,} of run {run.id} ({run_state}); "
                       "the panels pick up each newer snapshot when they rerun, and every "
                       f"{REFRESH_S:.0f} s while 'Follow training' is on.")
        else:
            st.caption(f"Exploring the weights of run {run.id} saved at step {snap_step:,} ({run_state}).")


@st.fragment(run_every=REFRESH_S)
def _wait_for_snapshot(run: Run) -> None:
    """While a run has no weights yet: look for the first snapshot every few seconds and open the panels then."""
    if weights_file(run) is not None:
        st.rerun(scope="app")


def render(model_name: str, run: Run | None) -> None:
    """The exploration section of a model's page for `run` (None: the model has no run yet)."""
    # a model without a latent space (the EBM) has its energy landscape explored instead
    latent = issubclass(model_class(model_name), LatentModel)
    st.subheader("Exploring the latent space" if latent else "Exploring the energy landscape")
    if run is None:
        st.info("No run of this model yet: start a training above, and exploration opens once its first "
                "snapshot is saved (a few seconds after it starts).")
        return
    try:
        snap = load_snapshot(run)
    except Exception as e:  # noqa: BLE001 - CheckpointError, or a file replaced while reading
        st.warning(f"The weights of run {run.id} could not be loaded: {e}")
        return
    if snap is None:
        st.info("Exploration opens once the first snapshot is saved: a training run writes its weights every few "
                "seconds, and this panel appears by itself then.")
        if is_live(run):
            _wait_for_snapshot(run)
        return
    live = is_live(run)
    if live:
        st.toggle("Follow training", value=True, key=key(model_name, "follow", run),
                  help=f"Refresh the panels every {REFRESH_S:.0f} s with the newest snapshot. Turn off to hold "
                       "still while you explore (a slider move always uses the newest weights).")
    st.fragment(_status, run_every=refresh_every(run, model_name))(run, snap.step, live)
    explorer = EXPLORERS.get(model_name)
    if explorer is None:
        st.info(f"No latent-space explorer for {model_name!r} models.")
        return
    panels = dict(explorer.PANELS)
    if model_name in draw_digit.PANELS:
        panels[YOUR_DIGIT] = draw_digit.PANELS[model_name]
    tabbed_panels(model_name, panels, snap.model, run, snap.step)
