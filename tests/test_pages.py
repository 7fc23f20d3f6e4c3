"""The dashboard through Streamlit's AppTest (every page, the training form, a real tiny training, a second viewer,
the runs page), and unit tests of the pure chart builders and the incremental metric reader.

AppTest never fires `run_every` timers, so fragments run inline on each `run()`; tests poll the JobManager with a
deadline, never the page.
"""

from __future__ import annotations

import functools
import json
import math
import time

import pytest

from conftest import APP, ROOT
import waiting

TIMEOUT = 60  # AppTest's per-run limit: the first run imports torch
PAGES = {"app_pages/home.py": "Deep generative models", "app_pages/rbm.py": "Restricted Boltzmann machine",
         "app_pages/vae.py": "Variational autoencoder", "app_pages/gan.py": "Generative adversarial network",
         "app_pages/runs.py": "All runs"}
TINY_VAE = {"latent": 2, "hidden": 32, "batch": 50, "epochs": 2}  # digits: 1,500 images -> 30 steps per epoch


def app(page: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if page:
        at.switch_page(page)
    return at.run()


wait_for = functools.partial(waiting.wait_for, timeout=120.0)  # pages and jobs here can take a while on 2 cores


def start_vae(at, **values):
    """Fill the VAE form and press Start training; returns the new run's id (from ?run=)."""
    for name, value in {**TINY_VAE, **values}.items():
        at.number_input(key=f"vae-form-{name}").set_value(value)
    at.button(key="vae-form-submit").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    run_id = at.query_params["run"]
    return run_id[0] if isinstance(run_id, list) else run_id


def sidebar_text(at) -> str:
    sb = at.sidebar
    parts = [c.value for c in sb.caption] + [m.value for m in sb.markdown]
    parts += [p.proto.label for p in sb.get("page_link")] + [p.proto.text for p in sb.get("progress")]
    return "\n".join(parts)


# ---- pages ----

@pytest.mark.usefixtures("dashboard_env")
def test_every_page_renders_without_exception():
    at = app()
    assert not at.exception
    assert "CPU" in sidebar_text(at) or "CUDA" in sidebar_text(at)  # the device is always shown
    for page, title in PAGES.items():
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert any(title in t.value for t in at.title), (page, [t.value for t in at.title])


@pytest.mark.usefixtures("dashboard_env")
def test_home_says_mnist_is_missing_and_digits_is_used():
    at = app()
    text = " ".join(w.value for w in at.warning)
    assert "MNIST is not on this server" in text and "digits" in text


@pytest.mark.usefixtures("dashboard_env")
def test_model_forms_offer_only_available_datasets_with_seed_defaults():
    from genlib.training import SEED_DEFAULTS

    for model in ("rbm", "vae", "gan"):
        at = app(f"app_pages/{model}.py")
        assert at.selectbox(key=f"{model}-form-dataset").options == ["Digits (offline)"]  # labels
        assert at.number_input(key=f"{model}-form-lr").value == pytest.approx(SEED_DEFAULTS[model]["lr"])
        assert at.number_input(key=f"{model}-form-batch").value == SEED_DEFAULTS[model]["batch_size"]


def test_form_refuses_a_batch_larger_than_the_dataset(manager):
    at = app("app_pages/vae.py")
    at.number_input(key="vae-form-batch").set_value(5000)
    at.button(key="vae-form-submit").click().run()
    assert not at.exception
    assert any("larger than the 1,500 training images" in e.value for e in at.error)
    assert manager.statuses() == []  # nothing was started


def test_tiny_training_from_the_vae_page_finishes_and_shows_chart_and_samples(manager):
    t0 = time.time()
    at = app("app_pages/vae.py")
    run_id = start_vae(at)
    status = manager.wait(run_id, timeout=120)
    assert status.state == "finished" and status.step == 60
    at.run()
    assert not at.exception and not at.error
    charts = at.get("plotly_chart")
    assert charts, "no loss chart"
    spec = json.loads(charts[0].proto.spec)
    names = [trace["name"] for trace in spec["data"]]
    assert len(names) == 3 and all(len(trace["x"]) >= 2 for trace in spec["data"])
    assert spec["layout"]["uirevision"] == run_id
    assert len(at.image) >= 2  # the latest fixed-noise grid and the per-epoch grid
    assert at.select_slider(key=f"epoch-slider-{run_id}").options == ["1", "2"]
    assert any(d.label.startswith("Download the progression") for d in at.get("download_button"))
    assert any("Finished" in p.proto.text for p in at.get("progress"))
    assert time.time() - t0 < 120


def test_second_viewer_sees_the_running_job_and_the_first_stops_it(manager):
    at = app("app_pages/vae.py")
    run_id = start_vae(at, epochs=1000)
    wait_for(lambda: manager.status(run_id).state == "running" and manager.status(run_id).step > 0)
    time.sleep(1.1)  # the sidebar's shared scan of the runs folder lives one second
    other = app()  # another browser, on the home page
    text = sidebar_text(other)
    assert run_id in text and "running" in text and "1 training" in text
    at.run()
    at.button(key=f"stop-{run_id}").click().run()
    assert not at.exception
    assert manager.wait(run_id, timeout=60).state == "stopped"
    at.run()
    assert at.button(key=f"continue-submit-{run_id}")  # a stopped run can be continued


def test_runs_page_lists_the_run_and_guards_deletion(manager):
    at = app("app_pages/vae.py")
    run_id = start_vae(at, epochs=1)
    manager.wait(run_id, timeout=120)
    time.sleep(1.1)
    runs = app("app_pages/runs.py")
    assert not runs.exception
    table = runs.dataframe[0].value
    assert list(table["run"]) == [run_id] and list(table["state"]) == ["finished"]
    assert runs.get("plotly_chart")  # the comparison chart of the default selection
    delete = runs.button(key="delete-run")
    assert delete.disabled  # nothing is deleted without the confirmation
    runs.checkbox(key=f"confirm-delete-{run_id}").check().run()
    runs.button(key="delete-run").click().run()
    assert not runs.exception
    assert manager.statuses() == []
    assert any("deleted" in s.value for s in runs.success)


def test_a_failed_run_shows_its_message_and_hint_never_a_traceback(manager):
    run = manager.store.create({"model": "vae", "dataset": "digits", "model_config": {}, "train_config": {"epochs": 1}})
    run.write_state(state="failed", error="out of memory: CUDA out of memory",
                    message="Out of memory: use a smaller batch size or model, or another device.",
                    traceback="Traceback (most recent call last):\n  File ...")
    at = app("app_pages/vae.py")
    assert not at.exception
    assert [e.value for e in at.error] == ["out of memory: CUDA out of memory"]
    assert any("smaller batch size" in i.value for i in at.info)
    shown = " ".join(str(getattr(el, "value", "")) for el in at.main)
    assert "Traceback" not in shown
    assert at.button(key=f"continue-submit-{run.id}")


def test_runs_page_opens_a_run_on_its_model_page(manager):
    at = app("app_pages/vae.py")
    run_id = start_vae(at, epochs=1)
    manager.wait(run_id, timeout=120)
    time.sleep(1.1)
    runs = app("app_pages/runs.py")
    runs.button(key="open-run").click().run()
    assert not runs.exception
    assert any("Variational autoencoder" in t.value for t in runs.title)
    assert runs.selectbox(key="vae-run-select").value == run_id


def test_no_legacy_pages_folder_next_to_the_app():
    """A `pages/` folder beside app.py switches Streamlit into its legacy multipage mode for every session that
    starts on a sub-page before any session has run st.navigation (e.g. students reloading /vae after a server
    restart): that page then runs without app.py, so without the sidebar and page settings."""
    assert not (ROOT / "pages").exists()


# ---- pure helpers ----

def test_downsampling_keeps_the_ends_and_bounds_the_count():
    from dashboard.charts import downsample, downsample_indices

    for n in (0, 1, 2, 5, 1999, 2000, 2001, 12345):
        idx = downsample_indices(n, 2000)
        assert len(idx) == min(n, 2000) and idx == sorted(set(idx))
        if n:
            assert idx[0] == 0 and idx[-1] == n - 1
    xs = list(range(100_000))
    ys = [1.0 / (x + 1) for x in xs]
    dx, dy = downsample(xs, ys, 500)
    assert len(dx) <= 500 and (dx[0], dy[0]) == (0, 1.0) and (dx[-1], dy[-1]) == (xs[-1], ys[-1])


def test_series_skip_knob_events_and_missing_values():
    from dashboard.charts import series_from_rows

    rows = [{"step": 20, "loss": 2.0}, {"event": "knob", "step": 25, "lr": 0.01},
            {"step": 40, "loss": 1.0, "kl": float("nan")}]
    s = series_from_rows(rows, ("loss", "kl"))
    assert s["loss"] == ([20, 40], [2.0, 1.0]) and s["kl"] == ([], [])


def test_gan_figure_has_the_half_line_and_one_panel_per_loss():
    from dashboard.charts import HALF_LABEL, loss_figure, metric_panels
    from genlib.models.gan import GAN

    names = GAN.metric_names
    assert metric_panels(names) == [["loss"], ["d_loss"], ["g_loss"], ["d_real", "d_fake"]]
    series = {n: (list(range(0, 5000, 20)), [0.5 + 0.1 * math.sin(i) for i in range(250)]) for n in names}
    fig = loss_figure(series, names, GAN.metric_labels, uirevision="gan-x").to_plotly_json()
    assert len(fig["data"]) == 5 and fig["layout"]["uirevision"] == "gan-x"
    half = [s for s in fig["layout"]["shapes"] if s["y0"] == 0.5 == s["y1"]]
    assert len(half) == 1 and half[0]["line"]["dash"] == "dash"
    assert any(a["text"] == HALF_LABEL for a in fig["layout"]["annotations"])
    d_traces = [t for t in fig["data"] if t["yaxis"] == half[0]["yref"]]
    assert len(d_traces) == 2  # D(real) and D(fake) share the panel of the 1/2 line


def test_vae_figure_bounds_points_and_marks_lr_changes():
    from dashboard.charts import MAX_POINTS, loss_figure
    from genlib.models.vae import VAE

    steps = list(range(0, 200_000, 20))
    series = {n: (steps, [1.0] * len(steps)) for n in VAE.metric_names}
    fig = loss_figure(series, VAE.metric_names, VAE.metric_labels, lr_changes=[(500, 1e-4)])
    assert len(fig.data) == 3 and all(len(t.x) <= MAX_POINTS for t in fig.data)
    assert all(t.x[-1] == steps[-1] for t in fig.data)
    assert sum(1 for s in fig.layout.shapes if s.x0 == 500) == 3  # one orange line per panel


def test_metric_log_reads_only_new_bytes_and_replaces_relogged_steps(tmp_path):
    from dashboard.state import MetricLog
    from genlib.runs.io import append_jsonl
    from genlib.runs.store import RunStore

    run = RunStore(tmp_path).create({"model": "vae"})
    log = MetricLog(run)
    append_jsonl(run.metrics_path, [{"step": s, "loss": 10.0 - s / 10, "t": 0} for s in (20, 40, 60)])
    v1 = log.refresh()
    offset = log.offset
    assert log.series(["loss"])["loss"] == ([20, 40, 60], [8.0, 6.0, 4.0])
    assert log.refresh() == v1 and log.offset == offset  # nothing new: nothing read
    # a resume from the checkpoint at step 40 logs step 60 again: the old 60 is replaced, not doubled
    append_jsonl(run.metrics_path, [{"event": "knob", "step": 40, "lr": 1e-4, "t": 0},
                                    {"step": 60, "loss": 3.0, "t": 0}, {"step": 80, "loss": 2.0, "t": 0}])
    assert log.refresh() > v1 and log.offset > offset
    assert log.series(["loss"])["loss"] == ([20, 40, 60, 80], [8.0, 6.0, 3.0, 2.0])
    assert log.lr_changes == [(40, 1e-4)] and log.last()["loss"] == 2.0


def test_progress_text_says_epoch_step_speed_and_time_left():
    from dashboard.training import progress_text
    from genlib.jobs.manager import JobStatus

    s = JobStatus(run_id="r", model="vae", dataset="digits", state="running", step=1234, total_steps=4690,
                  epoch=2, images_per_second=2300.4, eta_seconds=80, message=None, error=None, queue_position=None,
                  metrics={})
    assert progress_text(s, 10) == "Running · epoch 3 of 10 · step 1,234/4,690 · 2,300 images/s · about 1 min 20 s left"
    q = JobStatus(**{**s.__dict__, "state": "queued", "queue_position": 2})
    assert "number 2 in line" in progress_text(q, 10)


def test_progress_text_of_a_finished_run_says_what_it_trained_not_epochs_left():
    from dashboard.training import progress_text
    from genlib.jobs.manager import JobStatus

    s = JobStatus(run_id="r", model="vae", dataset="mnist", state="finished", step=2030, total_steps=2030,
                  epoch=4, images_per_second=None, eta_seconds=0, message=None, error=None, queue_position=None,
                  metrics={})
    assert progress_text(s, 5) == "Finished · 4 epochs trained · step 2,030/2,030"
    stopped = JobStatus(**{**s.__dict__, "state": "stopped", "step": 1000, "epoch": 2})
    assert progress_text(stopped, 5) == "Stopped · 2 of 5 epochs done · step 1,000/2,030"


@pytest.fixture
def shipped_copy(dashboard_env, monkeypatch):
    """The repository's pretrained/ runs, copied (the GAN without its saved grids, so the home page must sample it)."""
    import shutil

    src = dashboard_env / "pretrained"
    shutil.copytree(ROOT / "pretrained", src)
    shutil.rmtree(src / "pretrained-gan" / "samples")
    (src / "pretrained-gan" / "live.png").unlink()
    monkeypatch.setenv("GENLIB_PRETRAINED_DIR", str(src))
    return src


def test_home_shows_a_sample_grid_of_every_model_from_its_best_pretrained_run(shipped_copy):
    from genlib.images import read_png

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300).run()  # installs the runs and samples the GAN: slow when busy
    assert not at.exception, at.exception
    captions = [img.caption for el in at.image for img in el.proto.imgs]
    for run_id, what in [("pretrained-rbm", "Gibbs"), ("pretrained-vae", "decoder"),
                         ("pretrained-gan", "generator"), ("pretrained-ebm", "Langevin")]:
        assert any(run_id in c and what in c for c in captions), (run_id, captions)
    assert any("pretrained-gan" in c and "fresh samples" in c for c in captions)  # no saved grid: sampled once
    last_grid = max(f.name for f in (shipped_copy / "pretrained-ebm" / "samples").glob("epoch-*.png"))
    assert any("pretrained-ebm" in c and f"saved grid {last_grid}" in c for c in captions)  # the last epoch's
    assert not any("latent2" in c for c in captions)
    from dashboard import home_gallery
    from genlib.runs.store import Run

    run = Run(state_root(at) / "pretrained-gan")
    png, where = home_gallery.gallery_image(run)
    img = read_png(png)
    assert where == "36 fresh samples" and img.shape[0] == img.shape[1] and img.std() > 10  # a 6x6 grid, not blank


def state_root(at):
    from dashboard import state

    return state.get_store().root


def test_a_model_page_opens_on_its_best_pretrained_run_and_reads_finished(shipped_copy):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("app_pages/vae.py")
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="vae-run-select").value == "pretrained-vae"
    shipped = json.loads((ROOT / "pretrained" / "pretrained-vae" / "state.json").read_text())
    bars = [p.proto.text for p in at.get("progress")]
    assert any(t.startswith(f"Finished · {shipped['epoch']} epochs trained · step {shipped['step']:,}")
               for t in bars), bars
    assert not any("epochs done" in t for t in bars)
    # the shipped VAE shows its weights' moving average, and its sample grid says so
    ema = json.loads((ROOT / "pretrained" / "pretrained-vae" / "run.json").read_text())["train_config"]["ema"]
    assert ema == 0.999
    assert any("moving average of the weights (decay 0.999" in c.value for c in at.caption)
