"""The training panel of a model page: a form that starts a run, a run selector bound to `?run=`, the run's controls,
and a live view (progress, loss curves, fixed-noise samples) that refreshes itself while the run trains.

Layout only: every computation is one call into genlib (JobManager, Run) or dashboard.charts; nothing here waits
on a job, and no thread but the script's own touches Streamlit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard import state
from dashboard.charts import loss_figure

LIVE_REFRESH_S = 1.0  # the live view's refresh while a run trains
EPOCHS_REFRESH_S = 5.0  # the epoch slider's refresh while a run trains (new grids come once per epoch)
IMAGE_WIDTH = 480  # px on screen for a sample grid (nearest-neighbour upscaled, so pixels stay crisp)
MODEL_TITLES = {"rbm": "RBM", "vae": "VAE", "gan": "GAN"}


@dataclass(frozen=True)
class Field:
    """One form input: a config field, its widget and the help a student reads."""

    name: str
    label: str
    kind: str  # "int", "float", "bool" or "choice"
    help: str
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    fmt: str | None = None
    options: tuple = ()


MODEL_FIELDS: dict[str, tuple[Field, ...]] = {
    "rbm": (
        Field("n_hidden", "Hidden units", "int", "Number of binary hidden units h, the feature detectors. More units "
              "describe more detail but each step costs more. The seed uses 500.", 1, 4096, 50),
        Field("k", "Gibbs steps k (CD-k)", "int", "Gibbs steps v -> h -> v in the negative phase of contrastive "
              "divergence. k = 1 is the seed's CD-1; a larger k gives a less biased gradient at k times the cost.",
              1, 100, 1),
        Field("persistent", "Persistent CD (PCD)", "bool", "Keep the negative Gibbs chain running from batch to batch "
              "(Tieleman 2008) instead of restarting it at the data: the chain explores the model's own "
              "distribution, which usually gives better samples."),
        Field("momentum", "Momentum", "float", "SGD momentum: the share of the previous update added to the next. "
              "It smooths and speeds up learning; 0 is the seed's plain SGD.", 0.0, 0.99, 0.05, "%.2f"),
        Field("weight_decay", "Weight decay", "float", "L2 penalty that pulls the weights toward zero at every step; "
              "small values (1e-4) keep the filters smooth. 0 in the seed.", 0.0, 0.1, 1e-4, "%.4f"),
    ),
    "vae": (
        Field("latent", "Latent dimensions", "int", "Size of the code z. 2 lets you draw the whole latent space on "
              "a plane; more dimensions reconstruct better. The seed uses 8.", 2, 64, 1),
        Field("hidden", "Hidden width", "int", "Units in each hidden layer of the encoder and the decoder. The seed "
              "uses 512.", 8, 4096, 64),
        Field("decoder", "Decoder likelihood", "choice", "p(x|z): 'bernoulli' treats pixels as coin flips "
              "(cross-entropy, sharper digits); 'gaussian' is the seed's Normal(tanh(.), 1) on pixels in "
              "[-0.5, 0.5] (squared error).", options=("bernoulli", "gaussian")),
        Field("beta", "beta (KL weight)", "float", "Weight of the KL term in the loss. 1 is the true ELBO; beta > 1 "
              "(beta-VAE) pushes codes toward the prior for a smoother, more disentangled latent space at the cost "
              "of blurrier reconstructions.", 0.0, 10.0, 0.1, "%.2f"),
    ),
    "gan": (
        Field("preset", "Network size", "choice", "'seed' is the course's DCGAN (2.5M parameters). 'fast' divides "
              "every width by 4 (0.4M parameters, 16x fewer convolution operations): use it on laptops and CPUs.",
              options=("seed", "fast")),
    ),
}
CHART_CAPTIONS = {
    "rbm": "Averages over each logged window of steps. The reconstruction error should fall as the hidden units "
           "learn features; the free-energy gap is not a likelihood and may wander. Orange dotted lines: learning-rate "
           "changes.",
    "vae": "Negative ELBO = reconstruction + beta x KL, in nats per image, averaged over each logged window. "
           "Reconstruction falls fast; KL usually rises first, as the code starts to carry information.",
    "gan": "A two-player game: the losses need not fall. As the generator improves, D(real) and D(fake) approach "
           "the dashed 1/2 line, where the discriminator can only guess (the seed's stopping criterion).",
}
SAMPLE_CAPTIONS = {
    "rbm": "Samples from the same random start after a fixed number of Gibbs steps, refreshed every few seconds.",
    "vae": "Decoded from the same 64 fixed latent draws z ~ N(0, I), refreshed every few seconds.",
    "gan": "Generated from the same 64 fixed noise vectors (the seed's seed_images), refreshed every few seconds.",
}


# ---- cached helpers shared by every viewer ----

@st.cache_data(max_entries=64, show_spinner=False)
def grid_png(path: str, mtime_ns: int, width: int = IMAGE_WIDTH) -> bytes:
    """A saved sample grid, nearest-neighbour upscaled to about `width` px, as PNG bytes (keyed by file and mtime)."""
    from genlib.images import png_bytes, read_png, upscale

    img = read_png(Path(path).read_bytes())
    return png_bytes(upscale(img, max(1, width // img.shape[1])))


@st.cache_resource(max_entries=64, show_spinner=False)
def _loss_figure(run_path: str, offset: int, model_name: str, _log: Any):
    """The run's loss figure at metrics offset `offset`: built once, shared by every viewer of the run."""
    from genlib.models import model_class

    cls = model_class(model_name)
    names = cls.metric_names
    return loss_figure(_log.series(names), names, getattr(cls, "metric_labels", {}),
                       uirevision=Path(run_path).name, lr_changes=list(_log.lr_changes))


def _gif(paths: list[str]) -> bytes:
    """The per-epoch grids as an animated GIF (built only when the download is clicked)."""
    from genlib.images import gif_bytes, read_png, upscale

    return gif_bytes([upscale(read_png(Path(p).read_bytes()), 2) for p in paths])


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
    ep = f"epoch {min(status.epoch + 1, epochs or status.epoch + 1)}{of}" if status.live \
        else f"{status.epoch}{of} epochs done"
    parts = [status.state.capitalize(), ep, f"step {status.step:,}{total}"]
    if status.live and status.message and status.message != status.state:
        parts.append(status.message)  # "loading mnist onto cpu", "starting"...
    if status.live and status.images_per_second:
        parts.append(f"{status.images_per_second:,.0f} images/s")
    if status.state == "running" and status.eta_seconds is not None:
        parts.append(f"about {_duration(status.eta_seconds)} left")
    return " · ".join(parts)


# ---- the form ----

def _defaults(model_name: str) -> dict[str, Any]:
    from genlib.models import model_class
    from genlib.training import SEED_DEFAULTS

    cfg = model_class(model_name).config_class
    out = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    out.update(SEED_DEFAULTS.get(model_name, {}))
    return out


def _widget(f: Field, value: Any, key: str) -> Any:
    if f.kind == "bool":
        return st.checkbox(f.label, value=bool(value), help=f.help, key=key)
    if f.kind == "choice":
        return st.selectbox(f.label, f.options, index=list(f.options).index(value), help=f.help, key=key)
    cast = int if f.kind == "int" else float
    return st.number_input(f.label, min_value=cast(f.lo), max_value=cast(f.hi), value=cast(value),
                           step=cast(f.step), format=f.fmt, help=f.help, key=key)


def dataset_choices() -> tuple[list[str], str | None]:
    """Datasets a run can train on here (on disk, or needing no files), and a note on the ones that are missing."""
    from genlib.data import DATASETS, OFFLINE_DATASET, dataset_available, default_data_root

    names = [n for n, spec in DATASETS.items() if spec.offline or dataset_available(n)]
    missing = [DATASETS[n].title for n in DATASETS if n not in names]
    note = None
    if missing:
        note = (f"{', '.join(missing)} not found in {default_data_root().resolve()}, so not offered here; "
                f"'{OFFLINE_DATASET}' (scikit-learn's 1,797 digits, no files needed) always is. "
                "The Home page says how to add datasets.")
    names.sort(key=lambda n: (n != "mnist", DATASETS[n].offline, n))
    return names, note


def _form(model_name: str) -> None:
    from genlib.data import DATASETS, DatasetUnavailable
    from genlib.training import TrainConfig

    d = _defaults(model_name)
    k = f"{model_name}-form"
    datasets, note = dataset_choices()
    bf16 = state.get_device_info().bf16
    with st.form(key=k, border=True):
        cols = st.columns(3)
        values: dict[str, Any] = {}
        for i, f in enumerate(MODEL_FIELDS[model_name]):
            with cols[i % 3]:
                values[f.name] = _widget(f, d[f.name], f"{k}-{f.name}")
        c1, c2, c3 = st.columns(3)
        with c1:
            dataset = st.selectbox("Dataset", datasets, format_func=lambda n: DATASETS[n].title, key=f"{k}-dataset",
                                   help="Images to learn from. " + "; ".join(
                                       f"{DATASETS[n].title}: {DATASETS[n].description}" for n in datasets)
                                   + (f". {note}" if note else ""))
            lr = st.number_input("Learning rate", min_value=1e-6, max_value=1.0, value=float(d["lr"]),
                                 step=float(d["lr"]) / 10, format="%.1e", key=f"{k}-lr",
                                 help="Step size of the optimiser. Too large and training diverges (NaN), too small "
                                      f"and it crawls. The seed uses {d['lr']:g}.")
        with c2:
            batch = st.number_input("Batch size", min_value=1, max_value=8192, value=int(d["batch_size"]), step=16,
                                    key=f"{k}-batch", help="Images per gradient step. Larger batches run faster "
                                    f"per image but take fewer steps per epoch. The seed uses {d['batch_size']}.")
            epochs = st.number_input("Epochs", min_value=1, max_value=1000, value=int(d["epochs"]), step=1,
                                     key=f"{k}-epochs", help="Passes over the training set. The seed trains "
                                     f"{d['epochs']}; one or two already show the model learning.")
        with c3:
            max_steps = st.number_input("Max steps (optional)", min_value=1, max_value=10**7, value=None, step=100,
                                        key=f"{k}-max-steps", placeholder="all epochs",
                                        help="Stop after this many steps even if the epochs are not done: a quick "
                                             "try. Leave empty to train every epoch.")
            precision = st.selectbox("Precision", ("fp32", "bf16"), key=f"{k}-precision",
                                     help="fp32 is exact and safe. bf16 runs matrix products in 16-bit brain floats: "
                                          "faster on GPUs and on CPUs with AMX, at a small cost in accuracy. "
                                          + ("This device supports it." if bf16 else
                                             "This device has no fast bf16, so it would be slower here."))
        if note:
            st.caption(note)
        submitted = st.form_submit_button("Start training", type="primary", key=f"{k}-submit")
    if not submitted:
        return
    model_cfg = {name: v for name, v in values.items()}
    train_cfg = dict(dataset=dataset, lr=float(lr), batch_size=int(batch), epochs=int(epochs),
                     max_steps=int(max_steps) if max_steps else None, precision=precision)
    try:
        TrainConfig(**train_cfg)  # refuse bad values before loading any data
        n = int(state.get_dataset(dataset).x_train.shape[0])
        if batch > n:
            raise ValueError(f"Batch size {batch:,} is larger than the {n:,} training images of "
                             f"{DATASETS[dataset].title}: choose at most {n:,}.")
        run_id = state.get_manager().submit(model_name, model_cfg, train_cfg)
    except ValueError as e:
        st.error(f"Not started: {e}")
        return
    except (DatasetUnavailable, OSError) as e:
        st.error(f"Not started: {e}")
        return
    state.job_statuses.clear()
    state.select_run(run_id)
    st.rerun()


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
        go = c3.form_submit_button("Continue training", type="primary", key=f"continue-submit-{run.id}")
    if not go:
        return
    max_steps = tc.get("max_steps")
    try:
        mgr = state.get_manager()
        if lr != lr_now:
            mgr.set_knobs(run.id, lr=float(lr))
        new_epochs = new_max = None
        if more:  # steps count from the run's start: the new end is the old one plus `more` epochs
            new_epochs = max(epochs, status.epoch) + more
            if max_steps is not None and spe:
                new_max = status.step + more * spe
        mgr.resume(run.id, epochs=new_epochs, max_steps=new_max)
    except (ValueError, FileNotFoundError) as e:
        st.error(f"Could not continue: {e}")
        return
    state.job_statuses.clear()
    st.rerun()


def _live_controls(run_id: str, status: Any) -> None:
    mgr = state.get_manager()
    c1, c2, _ = st.columns([1, 1, 4])
    try:
        if status.state == "paused":
            if c1.button("Resume", key=f"unpause-{run_id}", icon=":material/play_arrow:",
                         help="Carry on training from where it paused."):
                mgr.unpause(run_id)
        elif c1.button("Pause", key=f"pause-{run_id}", icon=":material/pause:", disabled=status.state == "queued",
                       help="Hold training (the worker saves a checkpoint and waits); Resume carries on."):
            mgr.pause(run_id)
        if c2.button("Stop", key=f"stop-{run_id}", icon=":material/stop:",
                     help="End training now, keeping a checkpoint; 'Continue training' can pick it up later."):
            mgr.stop(run_id)
    except (ValueError, FileNotFoundError) as e:
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

def _live_view(run: Any, model_name: str, shown_state: str, epochs: int | None) -> None:
    """Fragment body: refreshed every LIVE_REFRESH_S while the run is live, once otherwise. `shown_state` is the
    state the last full run drew the page for."""
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
            st.image(png, output_format="PNG", width=IMAGE_WIDTH)
            st.caption(SAMPLE_CAPTIONS.get(model_name, ""))
        else:
            st.info("The first samples appear a few seconds after training starts.")


def _epoch_view(run: Any) -> None:
    """Fragment body: the per-epoch sample grids on a slider, and the progression as a GIF."""
    grids = run.epoch_grids()
    if not grids:
        st.caption("A sample grid from the fixed noise is saved at the end of every epoch; the first appears here "
                   "after epoch 1.")
        return
    by_epoch = {int(p.stem.split("-")[-1]): p for p in grids}
    epochs = sorted(by_epoch)
    chosen = epochs[-1]
    if len(epochs) > 1:
        chosen = st.select_slider("Epoch", options=epochs, value=epochs[-1], key=f"epoch-slider-{run.id}",
                                  help="Slide through the samples saved after each epoch, from the same fixed noise: "
                                       "watch the same digits form.")
    path = by_epoch[chosen]
    try:
        st.image(grid_png(str(path), path.stat().st_mtime_ns), output_format="PNG", width=IMAGE_WIDTH,
                 caption=f"After epoch {chosen}" if chosen else "At the end (the run stopped before its first "
                                                                "epoch was complete)")
    except OSError:
        st.caption("This grid is being replaced; it reappears in a moment.")
    paths = [str(by_epoch[e]) for e in epochs]
    st.download_button("Download the progression (GIF)", data=lambda: _gif(paths), file_name=f"{run.id}.gif",
                       mime="image/gif", key=f"gif-{run.id}", icon=":material/movie:",
                       help="An animated GIF of the saved grids, one frame per epoch (the seed's generation movie).")


# ---- the panel ----

def training_panel(model_name: str):
    """The training section of a model page; returns the selected genlib.runs.Run (or None) for the explorer."""
    from genlib.models import model_class

    cls = model_class(model_name)
    statuses = [s for s in state.job_statuses() if s.model == model_name]
    run_id = state.selected_run_id(model_name)
    st.subheader("Training")
    with st.expander(f"Train a new {MODEL_TITLES.get(model_name, model_name)}", expanded=run_id is None,
                     icon=":material/model_training:"):
        _form(model_name)
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
    epochs = (info.get("train_config") or {}).get("epochs")
    _problem(status)
    if not status.live:
        _continue_form(run, status, info)
    live = status.live
    st.fragment(_live_view, run_every=LIVE_REFRESH_S if live else None)(run, model_name, status.state, epochs)
    with st.expander("What each curve means"):
        labels = getattr(cls, "metric_labels", {})
        st.markdown("\n".join(f"- **{n}**: {labels.get(n, n)}" for n in cls.metric_names))
    st.markdown("##### Samples after each epoch")
    st.fragment(_epoch_view, run_every=EPOCHS_REFRESH_S if live else None)(run)
    return run
