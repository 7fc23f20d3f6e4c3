"""The quality panel and the runs page's quality comparison through Streamlit's AppTest, on finished tiny runs
trained in the test (digits, a small cached classifier, the worker's final evaluation made cheap), and unit tests of
the panel's pure helpers."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from conftest import APP

TIMEOUT = 60


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory):
    from genlib.quality.classifier import ClassifierTrainConfig, ensure_classifier
    from genlib.data import load_dataset

    folder = tmp_path_factory.mktemp("classifier-cache")
    ensure_classifier(load_dataset("digits"), cache_dir=folder,
                      config=ClassifierTrainConfig(epochs=2, batch_size=16, max_shift=1))
    return folder


@pytest.fixture
def quality_env(dashboard_env, classifier_cache, monkeypatch):
    """The dashboard environment, plus a cached classifier and cheap final/full evaluations (same code paths)."""
    from genlib.quality import records
    from genlib.jobs import worker

    monkeypatch.setenv("GENLIB_CACHE", str(classifier_cache))
    small = dataclasses.replace(records.FINAL, ais_steps=200, ais_chains=16, iwae_k=20, n_samples=300)
    monkeypatch.setattr(records, "FINAL", small)
    monkeypatch.setattr(records, "FULL", dataclasses.replace(small, kind="full", iwae_k=30))
    monkeypatch.setattr(worker, "QUALITY_EVERY_S", 0.0)
    return dashboard_env


def finished_run(root, model, model_config, epochs=2, lr=1e-3):
    """A run trained to the end in this process (the worker writes its cheap and final quality records)."""
    from genlib.runs.store import RunStore
    from genlib.training import TrainConfig
    from genlib.jobs.worker import run_job

    tc = TrainConfig(dataset="digits", epochs=epochs, batch_size=50, lr=lr, log_every=5, device="cpu")
    run = RunStore(root / "runs").create({"model": model, "model_config": model_config,
                                          "train_config": dataclasses.asdict(tc), "dataset": "digits"})
    assert run_job(run)["state"] == "finished"
    return run


def app(page, run_id=None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if run_id:
        at.query_params["run"] = run_id
    at.switch_page(page)
    return at.run()


def test_gan_page_shows_figures_histogram_trend_and_runs_the_full_evaluation(quality_env):
    run = finished_run(quality_env, "gan", {"preset": "fast"}, epochs=2)
    at = app("app_pages/gan.py", run.id)
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert "Fréchet distance" in metrics and "Class entropy (nats)" in metrics
    assert metrics["Fréchet distance"] == f"{run.quality_summary()['figures']['frechet_distance']:,.2f}"
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    bars = [s for s in specs if any(t.get("type") == "bar" for t in s["data"])]
    assert bars and bars[0]["data"][0]["x"] == [str(d) for d in range(10)]
    assert sum(bars[0]["data"][0]["y"]) == 300  # the final evaluation's samples, classified
    trend = [s for s in specs if any(t.get("name", "").startswith("final") for t in s["data"])]
    assert trend, "no trend chart with the final evaluation"
    assert any("final (end of training) evaluation at step 60" in c.value for c in at.caption)
    text = " ".join(m.value for m in at.markdown)
    assert "mode" in text and "floor" in text.lower()  # the plain-language explanations are on the page
    button = at.button(key=f"quality-full-{run.id}")
    assert not button.disabled
    button.click().run()
    assert not at.exception, at.exception
    deadline = time.time() + 60
    while (run.quality_summary() or {}).get("kind") != "full" and time.time() < deadline:
        time.sleep(0.1)
    assert run.quality_summary()["kind"] == "full"
    at.run()
    assert not at.exception
    assert any("full (the papers') evaluation at step 60" in c.value for c in at.caption)


def test_a_failed_evaluation_is_a_message_never_a_traceback(quality_env):
    from genlib.quality.records import make_record, save_record

    run = finished_run(quality_env, "vae", {"hidden": 32, "latent": 2}, epochs=1)
    save_record(run, make_record("full", 30, error="OutOfMemoryError: out of memory"))
    at = app("app_pages/vae.py", run.id)
    assert not at.exception
    assert any("failed: OutOfMemoryError" in w.value for w in at.warning)
    labels = [m.label for m in at.metric]
    assert "Negative ELBO (nats)" in labels and "IWAE bound on -log p(x) (nats)" in labels
    assert all("±" in m.value for m in at.metric if m.label.startswith(("Negative", "IWAE")))


def test_runs_page_compares_quality_across_runs(quality_env):
    first = finished_run(quality_env, "vae", {"hidden": 32, "latent": 2}, epochs=1)
    second = finished_run(quality_env, "vae", {"hidden": 16, "latent": 2}, epochs=2)
    at = app("app_pages/runs.py")
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert {"quality", "-ELBO", "IWAE NLL", "Fréchet", "floor"} <= set(table.columns)
    by_run = table.set_index("run")
    for run in (first, second):
        assert by_run.loc[run.id, "-ELBO"] == pytest.approx(run.quality_summary()["figures"]["neg_elbo"], abs=0.01)
        assert by_run.loc[run.id, "quality"].startswith("final @ ")
    assert at.selectbox(key="compare-quality").value == "neg_elbo"
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    names = {t.get("name") for s in specs for t in s["data"]}
    assert f"{first.id} (final/full)" in names and f"{second.id} (final/full)" in names


def test_pure_helpers():
    from dashboard.quality_view import best_summary, format_value, good_records, histogram_figure, trend_figure

    recs = [{"kind": "cheap", "step": 10, "t": 1, "figures": {"neg_elbo": 200.0, "neg_elbo_se": 1.0}, "error": None},
            {"kind": "cheap", "step": 20, "t": 2, "figures": {}, "error": "RuntimeError: x"},
            {"kind": "cheap", "step": 10, "t": 3, "figures": {"neg_elbo": 190.0, "neg_elbo_se": 1.0}, "error": None},
            {"kind": "final", "step": 30, "t": 4, "figures": {"neg_elbo": 150.0}, "error": None}]
    good = good_records(recs)
    assert [(r["kind"], r["step"], r["figures"]["neg_elbo"]) for r in good] == [("cheap", 10, 190.0),
                                                                             ("final", 30, 150.0)]
    assert best_summary(recs[:3], None)["t"] == 3 and best_summary(recs, {"figures": {"x": 1}}) == {"figures": {"x": 1}}
    assert format_value(-101.234, 0.456) == "-101.23 ± 0.46" and format_value(float("nan")) == "n/a"
    fig = trend_figure(recs)
    assert fig is not None and [t.name for t in fig.data] == ["cheap (during training)", "final (end of training)"]
    assert list(fig.data[0].error_y.array) == [1.0]
    assert trend_figure([recs[1]]) is None and histogram_figure(recs[0]) is None


def test_trend_against_training_seconds_uses_each_records_clock():
    from dashboard.quality_view import record_seconds, step_seconds, trend_figure

    clock = step_seconds([{"step": 20, "seconds": 4.0}, {"step": 40, "seconds": 8.0}, {"step": 60, "seconds": 20.0},
                          {"step": 7, "epoch": 0}])  # a row without seconds is skipped
    assert clock == ([20, 40, 60], [4.0, 8.0, 20.0])
    recs = [{"kind": "cheap", "step": 50, "t": 1, "figures": {"neg_elbo": 200.0}, "error": None},  # older: no clock
            {"kind": "cheap", "step": 60, "t": 2, "train_seconds": 33.5, "figures": {"neg_elbo": 150.0},
             "error": None}]
    assert record_seconds(recs[0], clock) == 14.0  # halfway between steps 40 (8 s) and 60 (20 s)
    assert record_seconds(recs[1], clock) == 33.5  # its own clock wins
    assert record_seconds(recs[0], None) is None and record_seconds({"step": 10}, clock) == 2.0
    fig = trend_figure(recs, x="seconds", clock=clock)
    assert list(fig.data[0].x) == [14.0, 33.5] and fig.layout.xaxis.title.text == "training seconds"
    assert list(trend_figure(recs, x="seconds").data[0].x) == [33.5]  # no clock: the undated record is left out
    assert list(trend_figure(recs).data[0].x) == [50, 60]
    with pytest.raises(ValueError):
        trend_figure(recs, x="minutes")


def test_panel_plots_quality_against_training_seconds_by_default(quality_env):
    run = finished_run(quality_env, "vae", {"hidden": 32, "latent": 2}, epochs=1)
    records, _ = run.quality_records()
    assert records and all(isinstance(r.get("train_seconds"), float) and r["train_seconds"] > 0 for r in records)
    at = app("app_pages/vae.py", run.id)
    assert not at.exception, at.exception
    assert at.radio(key="quality-x-vae").value == "seconds"
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    trend = [s for s in specs if any(t.get("name", "").startswith("final") for t in s["data"])]
    assert trend and trend[0]["layout"]["xaxis"]["title"]["text"] == "training seconds"
    final = next(t for t in trend[0]["data"] if t.get("name", "").startswith("final"))
    assert final["x"][0] == pytest.approx(run.quality_summary()["train_seconds"])
    at.radio(key="quality-x-vae").set_value("step").run()
    assert not at.exception, at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    trend = [s for s in specs if any(t.get("name", "").startswith("final") for t in s["data"])]
    assert trend[0]["layout"]["xaxis"]["title"]["text"] == "step"
    final = next(t for t in trend[0]["data"] if t.get("name", "").startswith("final"))
    assert final["x"] == [run.quality_summary()["step"]]
