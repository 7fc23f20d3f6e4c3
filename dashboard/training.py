"""The training panel of a model page: the new-run form (train_form), a run selector bound to `?run=`, the controls,
and a live view (progress, loss curves, fixed-noise samples) that refreshes itself while the run trains.

Layout only: every computation is one call into genlib (JobManager, Run) or dashboard.charts; nothing here waits
on a job, and no thread but the script's own touches Streamlit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from dashboard import auth, share, state
from dashboard.charts import loss_figure
from dashboard.model_text import CHART_CAPTIONS, SAMPLE_CAPTIONS, averaged_caption, continue_caveat, model_title
from dashboard.forks import forks_section
from dashboard.knobs import knob_controls
from dashboard.train_form import train_form
from dashboard.quality_view import quality_panel
from dashboard.run_images import IMAGE_WIDTH, grid_png
from genlib.images import gif_bytes, read_png
from genlib.runs.resume import epochs_added

LIVE_REFRESH_S = 1.0  # the live view's refresh while a run trains
EPOCHS_REFRESH_S = 5.0  # the epoch slider's refresh while a run trains (new grids come once per epoch)


# ---- cached helpers shared by every viewer ----

@st.cache_resource(max_entries=16, ttl=120, show_spinner=False)  # only each live run's newest entry is reused
def _loss_figure(run_path: str, offset: int, model_name: str, _log: Any):
    """The run's loss figure at metrics offset `offset`: built once, shared by every viewer of the run."""
    from genlib.models import model_class

    cls = model_class(model_name)
    names = cls.metric_names
    return loss_figure(_log.series(names), names, getattr(cls, "metric_labels", {}),
                       uirevision=Path(run_path).name, marks=list(_log.marks))


def _width() -> int:
    """A sample grid's width on screen: larger in presenter mode."""
    return share.PRESENT_IMAGE_WIDTH if share.presenting() else IMAGE_WIDTH


def _grid_gif(paths: list[str] | tuple[str, ...], width: int | None, duration_ms: int) -> tuple[bytes, str]:
    """The saved grids as a looping GIF through genlib.images.gif_bytes (its frame and pixel caps: only the PNGs shown
    are read), and the note when the caps left some out."""
    return gif_bytes(len(paths), lambda i: read_png(Path(paths[i]).read_bytes()), width=width, duration_ms=duration_ms)


@st.cache_data(max_entries=16, show_spinner=False)
def epoch_gif(paths: tuple[str, ...], mtimes: tuple[int, ...], width: int = IMAGE_WIDTH) -> tuple[bytes, str]:
    """The per-epoch grids as a looping animated GIF at about `width` px, for the Play toggle (the browser animates
    it: smooth in Chromium, no reruns while it plays), built once per new epoch for every viewer; and the cap's note."""
    return _grid_gif(paths, width, 500)


def _gif(paths: list[str]) -> bytes:
    """The per-epoch grids as an animated GIF (built only when the download is clicked; capped as the Play one)."""
    return _grid_gif(paths, None, 300)[0]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def progress_text(status: Any, epochs: int | None) -> str:
    """One line: where the run stands (epoch, step/total, images/s, time left)."""
    if status.state == "queued":
        place = f", number {status.queue_position} in line" if status.queue_position else ""
        return f"Queued{place}: it starts when a training slot frees up."
    total = f"/{status.total_steps:,}" if status.total_steps else ""
    of = f" of {epochs}" if epochs else ""
    if status.state == "finished":  # as trained: a run that ended at its step budget mid-epoch is not "4 of 5"
        ep = f"{status.epoch} epoch{'s' if status.epoch != 1 else ''} trained"
    elif status.live:
        ep = f"epoch {min(status.epoch + 1, epochs or status.epoch + 1)}{of}"
    else:
        ep = f"{status.epoch}{of} epochs done"
    parts = [status.state.capitalize(), ep, f"step {status.step:,}{total}"]
    if status.live and status.message and status.message != status.state:
        parts.append(status.message)  # "loading mnist onto cpu", "starting"...
    if status.live and status.images_per_second:
        parts.append(f"{status.images_per_second:,.0f} images/s")
    if status.state == "running" and status.eta_seconds is not None:
        parts.append(f"about {_duration(status.eta_seconds)} left")
    return " · ".join(parts)


# ---- run selection and controls ----

def _selector(model_name: str, run_id: str | None, statuses: list, current: Any = None) -> str | None:
    """The run selectbox (newest first), bound to ?run=; `current` is the fresh status of the selected run."""
    ids = [s.run_id for s in statuses]
    if run_id and run_id not in ids:
        ids.insert(0, run_id)
    if not ids:
        return None
    by_id = {s.run_id: s for s in statuses}
    if current is not None:
        by_id[current.run_id] = current
    key = f"{model_name}-run-select"
    st.session_state[key] = run_id if run_id in ids else ids[0]

    def label(i: str) -> str:
        s = by_id.get(i)
        return f"{i} · {s.state} · {s.dataset}" if s else i

    st.selectbox("Run", ids, format_func=label, key=key, on_change=lambda: state.select_run(st.session_state[key]),
                 help="Runs of this model, newest first. The choice is kept in the page address (?run=), so a "
                      "reload or a shared link opens the same run.")
    return st.session_state[key]


def _continue_form(run: Any, status: Any, info: dict) -> None:
    tc = info.get("train_config") or {}
    epochs = int(tc.get("epochs", 1))
    spe = int(run.state().get("steps_per_epoch") or 0)
    unfinished = bool(status.total_steps) and status.step < status.total_steps
    caveat = continue_caveat(info.get("model", ""), info.get("model_config") or {})
    if caveat:
        st.caption(caveat)
    with st.form(key=f"continue-{run.id}", border=False):
        c1, c2, c3 = st.columns([1, 1, 1], vertical_alignment="bottom")
        more = c1.number_input("Epochs to add", min_value=0 if unfinished else 1, max_value=1000,
                               value=0 if unfinished else 1, key=f"continue-epochs-{run.id}",
                               help="Train this many epochs beyond the planned ones, from the last checkpoint. "
                                    + ("0 just finishes the planned training." if unfinished else ""))
        lr_now = float(run.control().get("lr") or tc.get("lr", 1e-3))
        lr = c2.number_input("Learning rate", min_value=min(1e-6, lr_now), max_value=max(1.0, lr_now), format="%.1e",
                             value=lr_now,
                             step=float(tc.get("lr", 1e-3)) / 10, key=f"continue-lr-{run.id}",
                             help="Kept from the run; lower it to continue a run that diverged.")
        go = c3.form_submit_button("Continue training", type="primary", key=f"continue-submit-{run.id}",
                                   disabled=not auth.allowed(), help=auth.why(None))
    if go:
        _continue(run, status, lr_now, float(lr), int(more), epochs, spe, tc.get("max_steps"))


@auth.guarded("continue training a run")
def _continue(run: Any, status: Any, lr_now: float, lr: float, more: int, epochs: int, spe: int,
              max_steps: int | None) -> None:
    """The 'Continue training' handler: a changed learning rate, the new end, and the run resumed."""
    try:
        mgr = state.get_manager()
        if lr != lr_now:
            mgr.set_knobs(run.id, lr=lr)
        # the new end is the planned one plus `more` epochs, as totals for the one resume rule (genlib.runs.resume)
        new_epochs, new_max = epochs_added({"epochs": epochs, "max_steps": max_steps}, more, step=status.step,
                                           epoch=status.epoch, steps_per_epoch=spe)
        mgr.resume(run.id, epochs=new_epochs, max_steps=new_max)
    except (ValueError, OSError) as e:  # OSError: a full disk or an unwritable runs folder
        st.error(f"Could not continue: {e}")
        return
    state.job_statuses.clear()
    st.rerun()


@auth.guarded("resume a paused run")
def _unpause(run_id: str) -> None:
    state.get_manager().unpause(run_id)


@auth.guarded("pause a run")
def _pause(run_id: str) -> None:
    state.get_manager().pause(run_id)


@auth.guarded("stop a run")
def _stop(run_id: str) -> None:
    state.get_manager().stop(run_id)


def _live_controls(run_id: str, status: Any) -> None:
    c1, c2, _ = st.columns([1, 1, 4])
    locked = not auth.allowed()
    try:
        if status.state == "paused":
            if c1.button("Resume", key=f"unpause-{run_id}", icon=":material/play_arrow:", disabled=locked,
                         help=auth.why("Carry on training from where it paused.")):
                _unpause(run_id)
        elif c1.button("Pause", key=f"pause-{run_id}", icon=":material/pause:",
                       disabled=status.state == "queued" or locked,
                       help=auth.why("Hold training (the worker saves a checkpoint and waits); Resume carries on.")):
            _pause(run_id)
        if c2.button("Stop", key=f"stop-{run_id}", icon=":material/stop:", disabled=locked,
                     help=auth.why("End training now, keeping a checkpoint; 'Continue training' can pick it up "
                                   "later.")):
            _stop(run_id)
    except (ValueError, OSError) as e:  # OSError: a full disk or an unwritable runs folder
        st.error(str(e))


def _problem(status: Any) -> None:
    """A failed, diverged or interrupted run says what happened and what to do, never with a traceback."""
    if status.state in ("failed", "diverged"):
        st.error(status.error or status.message or f"The run {status.state}.")
        if status.message and status.message != status.error:
            st.info(status.message)
        elif status.state == "failed":
            st.info("Continue training resumes from the last checkpoint; if it fails again, change the settings "
                    "and start a new run.")
    elif status.state == "interrupted":
        st.warning("This run's worker stopped without finishing (the server restarted, or the process was killed). "
                   "Continue training resumes it from its last checkpoint.")


# ---- the live view ----

def _live_view(run: Any, model_name: str, shown_state: str, epochs: int | None, ema: float = 0.0) -> None:
    """Fragment body: refreshed every LIVE_REFRESH_S while the run is live, once otherwise. `shown_state` is the
    state the last full run drew the page for; `ema` the run's weight-average decay (its grid's caption says so)."""
    try:
        status = state.get_manager().status(run.id)
    except (ValueError, FileNotFoundError):
        st.warning(f"Run {run.id} no longer exists.")
        return
    if status.state != shown_state:
        # the whole page, once per change (queued -> running -> paused -> finished...): the selector's label and
        # the controls follow, and when training ends the refresh timers stop ('Continue training' appears)
        st.rerun()
    if status.live:
        _live_controls(run.id, status)
    st.progress(status.fraction, text=progress_text(status, epochs))
    left, right = st.columns([3, 2])
    with left:
        log = state.metric_log(run)
        fig = _loss_figure(str(run.path), log.offset, model_name, log)
        st.plotly_chart(fig, key=f"loss-{run.id}", config={"displaylogo": False})
        st.caption(CHART_CAPTIONS.get(model_name, ""))
    with right:
        try:
            png = grid_png(str(run.live_png), run.live_png.stat().st_mtime_ns)
        except OSError:
            png = None
        if png is not None:
            st.image(png, output_format="PNG", width=_width())
            st.caption(SAMPLE_CAPTIONS.get(model_name, "") + averaged_caption(ema))
        else:
            st.info("The first samples appear a few seconds after training starts.")


def _epoch_view(run: Any) -> None:
    """Fragment body: the per-epoch sample grids on a slider, and the progression as a GIF."""
    grids = run.epoch_grids()
    if not grids:
        st.caption("A sample grid from the fixed noise is saved at the end of each epoch (of every few, where epochs "
                   "take seconds: drawing grids stays within a tenth of the training time); the first appears here "
                   "after epoch 1.")
        return
    by_epoch = {int(p.stem.split("-")[-1]): p for p in grids}
    epochs = sorted(by_epoch)
    paths = [str(by_epoch[e]) for e in epochs]
    chosen = epochs[-1]
    playing = len(epochs) > 1 and st.toggle("Play", key=f"epoch-play-{run.id}", bind=share.BIND,
                                            help="Loop through the saved grids as an animation, one epoch every half "
                                                 "second; turn off to pick an epoch with the slider.")
    if playing:
        from genlib.runs.store import LIVE_STATES
        from genlib.work_budget import animated_epochs

        # while the run trains, rebuilt when 10% more epochs are saved, not at each (genlib.work_budget)
        shown = animated_epochs(epochs, live=run.effective_state() in LIVE_STATES)
        try:
            gif, capped = epoch_gif(tuple(str(by_epoch[e]) for e in shown),
                                    tuple(by_epoch[e].stat().st_mtime_ns for e in shown), _width())
        except OSError:
            st.caption("A grid is being replaced; the animation reappears in a moment.")
            return
        with st.container(key=f"epoch-play-img-{run.id}"):
            st.image(gif, width=_width(), caption=f"Playing epochs {shown[0]} to {shown[-1]} (looping)")
        if capped:
            st.caption(capped)
        return
    if len(epochs) > 1:
        chosen = st.select_slider("Epoch", options=epochs, value=epochs[-1], key=f"epoch-slider-{run.id}",
                                  bind=share.BIND,
                                  help="Slide through the samples saved after each epoch, from the same fixed noise: "
                                       "watch the same digits form.")
    path = by_epoch[chosen]
    try:
        st.image(grid_png(str(path), path.stat().st_mtime_ns, _width()), output_format="PNG", width=_width(),
                 caption=f"After epoch {chosen}" if chosen else "At the end (the run stopped before its first "
                                                                "epoch was complete)")
    except OSError:
        st.caption("This grid is being replaced; it reappears in a moment.")
    st.download_button("Download the progression (GIF)", data=lambda: _gif(paths), file_name=f"{run.id}.gif",
                       mime="image/gif", key=f"gif-{run.id}", icon=":material/movie:",
                       help="An animated GIF of the saved grids, one frame per epoch (the seed's generation movie).")


# ---- the panel ----

def training_panel(model_name: str):
    """The training section of a model page; returns the selected genlib.runs.store.Run (or None) for the explorer."""
    from genlib.models import model_class

    cls = model_class(model_name)
    statuses = [s for s in state.job_statuses() if s.model == model_name]
    run_id = state.selected_run_id(model_name)
    st.subheader("Training")
    presenting = share.presenting()
    if not presenting:
        with st.expander(f"Train a new {model_title(model_name)}", expanded=run_id is None,
                         icon=":material/model_training:"):
            train_form(model_name)
    status = None
    if run_id is not None:
        try:
            run = state.get_store().get(run_id)
            status = state.get_manager().status(run_id)
        except (ValueError, FileNotFoundError):
            st.warning(f"Run {run_id} no longer exists.")
            state.select_run(None)
            return None
    run_id = _selector(model_name, run_id, statuses, status)
    if run_id is None:
        st.info("No run of this model yet: set the options above and press **Start training**.")
        return None
    info = run.info()
    train_config = info.get("train_config") or {}
    epochs, ema = train_config.get("epochs"), float(train_config.get("ema") or 0.0)
    _problem(status)
    if info.get("pretrained"):
        st.caption("A pretrained model shipped with the app (scripts/pretrain.py), kept read-only: fork it below "
                   "to train a copy further.")
    elif not status.live and not presenting:
        _continue_form(run, status, info)
    live = status.live
    if live and not presenting:
        knob_controls(run, model_name)
    st.fragment(_live_view, run_every=LIVE_REFRESH_S if live else None)(run, model_name, status.state, epochs, ema)
    with st.expander("What each curve means"):
        labels = getattr(cls, "metric_labels", {})
        st.markdown("\n".join(f"- **{n}**: {labels.get(n, n)}" for n in cls.metric_names))
    st.markdown("##### Samples after each epoch")
    st.fragment(_epoch_view, run_every=EPOCHS_REFRESH_S if live else None)(run)
    quality_panel(run, model_name, live)
    forks_section(run, model_name, presenting)
    return run
