"""The sidebar of every page: the training device, and every job on this server with its progress, refreshed live.

The job list reads `state.job_statuses()`, one scan of the runs folder per second shared by all viewers, so a
classroom of open sidebars costs the same as one.
"""

from __future__ import annotations

import streamlit as st

from dashboard import state
from dashboard.model_text import model_page, model_title

REFRESH_S = 2.0  # seconds between sidebar refreshes (the browser's timer; each open tab has its own)
RECENT = 3  # finished runs listed under the live ones


def _job(s) -> None:
    """One job: its model, id (a link to it), state, progress bar and speed."""
    title, page = model_title(s.model), model_page(s.model)
    if page is not None:
        st.page_link(page, label=f"{title} · {s.run_id}", query_params={"run": s.run_id},
                     icon=":material/open_in_new:", help=f"Open this run on the {title} page")
    else:
        st.markdown(f"{title} · `{s.run_id}`")
    if s.state == "queued":
        place = f" (number {s.queue_position} in line)" if s.queue_position else ""
        st.caption(f"queued{place} on {s.dataset}")
        return
    speed = f" · {s.images_per_second:,.0f} images/s" if s.images_per_second and s.state == "running" else ""
    total = f"/{s.total_steps:,}" if s.total_steps else ""
    st.progress(s.fraction, text=f"{s.state} · step {s.step:,}{total}{speed}")


def _jobs() -> None:
    """Fragment body: the live jobs, then the most recent finished runs."""
    try:
        statuses = state.job_statuses()
    except OSError as e:
        st.warning(f"The runs folder cannot be read: {e}")
        return
    live = [s for s in statuses if s.live]
    st.markdown(f"**Jobs on this server** ({len(live)} training)")
    if not live:
        st.caption("No training right now. Start one from a model's page.")
    for s in live:
        _job(s)
    done = [s for s in statuses if not s.live]
    if done:
        st.caption("Recent runs: " + ", ".join(f"{s.run_id} ({s.state})" for s in done[:RECENT])
                   + (f", and {len(done) - RECENT} more" if len(done) > RECENT else ""))
        st.page_link("app_pages/runs.py", label="All runs", icon=":material/list:")


def render() -> None:
    """Draw the sidebar; call once per script run, from the app's frame."""
    with st.sidebar:
        try:
            device = state.get_device_info().summary()
        except Exception as e:  # noqa: BLE001 - a broken driver must not take the page down
            device = f"device unknown ({type(e).__name__})"
        st.caption(f"Training device: **{device}**")
        st.fragment(_jobs, run_every=REFRESH_S)()
