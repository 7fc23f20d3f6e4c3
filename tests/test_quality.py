"""Tests of genlib.quality.evaluator and genlib.quality.records: the cheap/final/full settings, the flat figures against exact
answers (log Z by enumeration), the classifier policy (cheap evaluations never train it), the worker's quality records during and after
a tiny run within its time budget, an evaluation failure that leaves the job finished, cancellation, and the
background full evaluation of a saved run."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pytest
import torch

from genlib.quality import records
from genlib.quality.classifier import ClassifierTrainConfig, classifier_path, ensure_classifier
from genlib.data import load_dataset
from genlib.models import build_model
from genlib.quality.evaluator import QualityEvaluator
from genlib.quality.records import evaluation_running, run_evaluation
from genlib.quality.settings import CHEAP, FINAL, FULL, QualitySettings, settings_for
from genlib.runs.store import RunStore

TINY_CLASSIFIER = ClassifierTrainConfig(epochs=2, batch_size=16, max_shift=1)  # ~90% on digits in ~2 s: enough here
# what the worker's final evaluation does in these tests: the same code paths, a fraction of the cost
SMALL_FINAL = dataclasses.replace(FINAL, ais_steps=300, ais_chains=16, iwae_k=20, n_samples=300)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def cache(tmp_path_factory, digits):
    """A classifier cache holding a small digits classifier."""
    folder = tmp_path_factory.mktemp("classifier-cache")
    ensure_classifier(digits, cache_dir=folder, config=TINY_CLASSIFIER)
    return folder


def test_cheap_settings_are_cheaper_than_final_and_full():
    assert CHEAP.kind == "cheap" and FINAL.kind == "final" and FULL.kind == "full"
    assert CHEAP.ais_steps < FINAL.ais_steps == FULL.ais_steps == 14_500 and FULL.ais_chains == 100
    assert CHEAP.iwae_k < FINAL.iwae_k < FULL.iwae_k == 5_000
    assert CHEAP.n_test is not None and CHEAP.vae_n_test is not None and FULL.n_test is None
    assert 0 < CHEAP.n_samples < FINAL.n_samples <= FULL.n_samples
    assert FULL.vae_n_test is None and CHEAP.vae_n_test <= FINAL.vae_n_test
    # cheap evaluations never train the classifier and never sample the RBM (500 Gibbs steps per image)
    assert not CHEAP.train_classifier and FINAL.train_classifier and FULL.train_classifier
    assert not CHEAP.scores_samples("rbm") and CHEAP.scores_samples("gan") and CHEAP.scores_samples("vae")
    assert FINAL.scores_samples("rbm") and not FINAL.scores_samples("ebm") and FULL.scores_samples("ebm")


def test_settings_refuse_bad_values_with_a_message():
    assert settings_for("cheap", ais_steps=10, n_test=None).ais_steps == 10
    assert settings_for("full", iwae_k=None) == FULL  # None leaves a field alone
    with pytest.raises(ValueError, match="kind must be one of"):
        settings_for("medium")
    with pytest.raises(ValueError, match="n_samples must be 0"):
        dataclasses.replace(CHEAP, n_samples=1)
    with pytest.raises(ValueError, match="ais_chains"):
        dataclasses.replace(CHEAP, ais_chains=1)
    with pytest.raises(ValueError, match="kind must be one of"):
        QualitySettings(kind="x", n_test=None, ais_steps=1, ais_chains=2, iwae_k=1, vae_n_test=None, n_samples=0,
                        sample_models=None, train_classifier=False)


def test_cheap_rbm_figures_match_the_exact_log_likelihood(digits, tmp_path):
    torch.manual_seed(0)
    from genlib.quality.ais import base_rate_biases

    rbm = build_model("rbm", {"n_hidden": 12})
    with torch.no_grad():  # like a briefly trained RBM: visible biases at the data's base rates, small weights
        rbm.v_bias.copy_(base_rate_biases(digits.x_train).float())
        rbm.W.normal_(0, 0.05)
    f = QualityEvaluator(digits, cache_dir=tmp_path).evaluate(rbm, CHEAP)
    assert f["n_test"] == digits.x_test.shape[0] and f["ais_steps"] == CHEAP.ais_steps
    # 12 hidden units: log Z enumerated exactly over 2^12 states; AIS must agree within its own spread
    assert abs(f["log_z"] - f["log_z_exact"]) < max(4 * f["log_z_std"], 0.05)
    assert f["test_log_likelihood"] == pytest.approx(f["test_log_likelihood_exact"], abs=max(4 * f["log_z_std"], 0.05))
    assert f["ais_ess"] > CHEAP.ais_chains / 2  # AIS from the base rates into this RBM: nearly equal weights
    assert f["test_log_likelihood_lo"] <= f["test_log_likelihood"] <= f["test_log_likelihood_hi"]
    assert f["test_log_likelihood_se"] > 0 and f["pseudo_log_likelihood_se"] > 0
    assert f["pseudo_log_likelihood"] < 0 and math.isfinite(f["pseudo_log_likelihood"])
    assert "samples_skipped" in f and "frechet_distance" not in f  # the RBM's samples wait for the final evaluation
    assert all(not isinstance(v, dict) for v in f.values())  # a flat dict


def test_vae_figures_bound_each_other(digits, tmp_path):
    torch.manual_seed(0)
    vae = build_model("vae", {"hidden": 32, "latent": 2})
    f = QualityEvaluator(digits, cache_dir=tmp_path).evaluate(vae, CHEAP)
    assert f["iwae_k"] == CHEAP.iwae_k and f["vae_n_test"] == digits.x_test.shape[0] and f["comparable"] is True
    # the IWAE bound is tighter than the ELBO: -log p(x) <= IWAE <= -ELBO, up to the estimates' noise
    assert f["iwae_nll"] <= f["neg_elbo"] + 2 * f["neg_elbo_se"]
    assert f["neg_elbo_se"] > 0 and f["iwae_nll_se"] > 0
    # no classifier cached in tmp_path: the sample figures are skipped, and a cheap evaluation did not train one
    assert "no digits classifier is cached" in f["samples_skipped"]
    assert not classifier_path("digits", tmp_path).exists()


def test_sample_figures_with_a_cached_classifier(digits, cache):
    torch.manual_seed(0)
    gan = build_model("gan", {"preset": "fast"})  # untrained: noise, far from the data
    evaluator = QualityEvaluator(digits, cache_dir=cache)
    f = evaluator.evaluate(gan, CHEAP)
    assert f["n_samples"] == CHEAP.n_samples and sum(f["class_histogram"]) == CHEAP.n_samples
    assert len(f["class_histogram"]) == 10 and f["class_names"] == list(digits.classes)
    assert 1 <= f["classes_seen"] <= 10 and 0 <= f["class_entropy"] <= math.log(10) + 1e-9
    assert f["n_floor"] == CHEAP.n_samples  # 1,000 of the 1,500 training images
    assert f["frechet_distance"] > 3 * f["frechet_floor"] > 0  # noise is much farther from the test set than data
    again = evaluator.evaluate(gan, CHEAP)  # the reference statistics are cached; the same seed, the same samples
    assert again["frechet_distance"] == pytest.approx(f["frechet_distance"])


def test_a_final_evaluation_trains_the_missing_classifier_once(digits, tmp_path, monkeypatch):
    import genlib.quality.classifier

    monkeypatch.setattr(genlib.quality.classifier, "default_train_config", lambda name: TINY_CLASSIFIER)
    torch.manual_seed(0)
    gan = build_model("gan", {"preset": "fast"})
    messages = []
    evaluator = QualityEvaluator(digits, cache_dir=tmp_path, progress=lambda f, m: messages.append(m))
    f = evaluator.evaluate(gan, SMALL_FINAL)
    assert classifier_path("digits", tmp_path).exists() and f["classifier_accuracy"] > 0.5
    assert f["n_samples"] == SMALL_FINAL.n_samples and "frechet_distance" in f
    assert any(m.startswith("classifier: ") for m in messages)  # its training shows in the progress


def _tiny_run(tmp_path, model="vae", model_config=None, epochs=3, **train):
    store = RunStore(tmp_path / "runs")
    cfg = {"dataset": "digits", "epochs": epochs, "batch_size": 50, "lr": 1e-3, "log_every": 5, "device": "cpu",
           "snapshot_every_s": 1000.0, "live_every_s": 1000.0, **train}
    from genlib.training import TrainConfig

    return store.create({"model": model, "model_config": model_config or {"hidden": 32, "latent": 2},
                         "train_config": dataclasses.asdict(TrainConfig(**cfg)), "dataset": "digits"})


def test_the_worker_records_cheap_figures_within_budget_and_final_ones_at_the_end(tmp_path, monkeypatch, cache):
    from genlib.jobs import worker

    monkeypatch.setenv("GENLIB_CACHE", str(cache))
    monkeypatch.setattr(worker, "QUALITY_EVERY_S", 0.0)  # as often as the 10% budget allows
    monkeypatch.setattr(records, "FINAL", SMALL_FINAL)
    run = _tiny_run(tmp_path, epochs=6)
    summary = worker.run_job(run)
    assert summary["state"] == "finished" and run.state().get("message") is None
    saved, _ = run.quality_records()
    cheap = [r for r in saved if r["kind"] == "cheap"]
    assert cheap and all(r["error"] is None for r in saved)
    assert [r["step"] for r in cheap] == sorted(r["step"] for r in cheap)
    assert all("neg_elbo" in r["figures"] and "frechet_distance" in r["figures"] for r in cheap)
    # the cadence keeps cheap evaluations within 10% of the training time (plus the first one, at once)
    train_s = run.state()["seconds"]
    costs = [r["seconds"] for r in cheap]
    assert sum(costs) <= 0.1 * train_s + max(costs) + 0.05
    final = saved[-1]
    assert final["kind"] == "final" and final["step"] == summary["steps"] and final["settings"]["iwae_k"] == 20
    assert run.quality_summary() == json.loads(json.dumps(final))  # quality.json: the same record
    assert run.quality_status()["state"] == "done" and not evaluation_running(run)


def test_a_failing_evaluation_is_recorded_and_the_job_still_finishes(tmp_path, monkeypatch):
    from genlib.jobs import worker

    def boom(self, model, settings):
        raise RuntimeError("boom")

    monkeypatch.setattr(worker, "QUALITY_EVERY_S", 0.0)
    monkeypatch.setattr(QualityEvaluator, "evaluate", boom)
    run = _tiny_run(tmp_path, epochs=2)
    summary = worker.run_job(run)
    assert summary["state"] == "finished" and summary["error"] is None
    saved, _ = run.quality_records()
    assert saved and all(r["error"] == "RuntimeError: boom" and r["figures"] == {} for r in saved)
    assert saved[-1]["kind"] == "final" and "boom" in saved[-1]["traceback"]
    assert run.quality_summary() is None  # a failed evaluation never replaces the summary
    assert run.quality_status()["state"] == "failed"


def test_a_cancelled_evaluation_is_recorded_as_such(tmp_path, digits):
    run = _tiny_run(tmp_path)
    evaluator = QualityEvaluator(digits, cache_dir=tmp_path, cancelled=lambda: True)
    record = run_evaluation(run, evaluator, build_model("rbm", {"n_hidden": 8}), SMALL_FINAL, 7)
    assert record["cancelled"] is True and record["error"].startswith("cancelled")
    assert run.quality_status()["state"] == "cancelled" and run.quality_records()[0][-1]["step"] == 7


def test_full_evaluation_of_a_saved_run_in_the_background(tmp_path, monkeypatch, cache, capsys):
    from genlib.jobs import worker

    monkeypatch.setenv("GENLIB_CACHE", str(cache))
    monkeypatch.setattr(records, "FINAL", SMALL_FINAL)
    monkeypatch.setattr(records, "FULL", dataclasses.replace(SMALL_FINAL, kind="full", iwae_k=30))
    run = _tiny_run(tmp_path, model="rbm", model_config={"n_hidden": 16}, epochs=1, lr=0.1)
    assert worker.run_job(run)["state"] == "finished"
    thread = records.start_evaluation(run, "full", backend="thread")
    assert evaluation_running(run)
    with pytest.raises(ValueError, match="already running"):
        records.start_evaluation(run, "full", backend="thread")
    thread.join(120)
    summary = run.quality_summary()
    assert summary["kind"] == "full" and summary["checkpoint"] == "last.safetensors"
    assert summary["figures"]["test_log_likelihood_exact"] == pytest.approx(
        summary["figures"]["test_log_likelihood"], abs=max(4 * summary["figures"]["log_z_std"], 0.5))
    assert "frechet_distance" in summary["figures"]  # the final and full evaluations score the RBM's samples
    assert [r["kind"] for r in run.quality_records()[0]] == ["final", "full"]
    # the same from the command line (what the dashboard's process backend runs), in-process here
    assert records.main([str(run.path), "--kind", "full", "--nice", "0"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["kind"] == "full" and out["error"] is None and len(run.quality_records()[0]) == 3


def test_evaluating_a_run_without_a_checkpoint_records_the_error(tmp_path):
    run = _tiny_run(tmp_path)
    record = records.evaluate_saved_run(run, FULL)
    assert "no checkpoint yet" in record["error"] and run.quality_status()["state"] == "failed"


# ---- a saved run's evaluation (what `python -m genlib evaluate` runs; moved from the former genlib/quality/evaluate.py)

def _saved_run(tmp_path, model, name, model_config, step):
    from genlib.runs.checkpoints import save_checkpoint

    run = RunStore(tmp_path / "runs").create({"model": name, "model_config": model_config,
                                              "train_config": {"dataset": "digits"}, "dataset": "digits"})
    save_checkpoint(run.checkpoint_path, model, train_config={"dataset": "digits"}, progress={"step": step})
    return run


def test_evaluate_saved_run_on_an_rbm_run(tmp_path, digits):
    from genlib.quality.ais import base_rate_biases

    torch.manual_seed(0)
    rbm = build_model("rbm", {"n_hidden": 16})
    with torch.no_grad():
        rbm.v_bias.copy_(base_rate_biases(digits.x_train).float())
        rbm.W.normal_(0, 0.05)
    run = _saved_run(tmp_path, rbm, "rbm", {"n_hidden": 16}, 600)
    settings = settings_for("cheap", ais_steps=300, ais_chains=20, sample_models=("rbm",))
    record = records.evaluate_saved_run(run, settings, device="cpu", cache_dir=tmp_path / "cache")
    out = records.result_line(run, record, device="cpu")
    json.dumps(out)
    assert out["model"] == "rbm" and out["step"] == 600 and out["dataset"] == "digits" and out["error"] is None
    assert out["rbm"]["ais_steps"] == 300 and "test_log_likelihood" in out["rbm"]
    assert "samples" not in out and "classifier" in out["samples_skipped"]  # nothing cached, none trained
    assert run.quality_records()[0] == [json.loads(json.dumps(record))]  # recorded, as every evaluation is


def test_evaluate_saved_run_on_a_vae_run(tmp_path):
    torch.manual_seed(0)
    vae = build_model("vae", {"hidden": 32, "latent": 2})
    run = _saved_run(tmp_path, vae, "vae", {"hidden": 32, "latent": 2}, 3)
    messages = []
    record = records.evaluate_saved_run(run, settings_for("cheap", iwae_k=10), device="cpu",
                                        cache_dir=tmp_path / "cache", progress=lambda f, m: messages.append(m))
    out = records.result_line(run, record)
    json.dumps(out)
    assert out["model"] == "vae" and out["vae"]["iwae_k"] == 10 and out["vae"]["vae_n_test"] == 297
    assert any(m.startswith("IWAE: IWAE") for m in messages)


# ---- the expected time of an evaluation, and its overall progress ----

def test_the_estimate_covers_each_stage_and_is_near_the_actual_time(digits, tmp_path):
    from genlib.quality.estimate import StagedProgress, describe, estimate_stages

    torch.manual_seed(0)
    rbm = build_model("rbm", {"n_hidden": 64})
    settings = settings_for("cheap", ais_steps=2_000, ais_chains=32, n_test=300)
    evaluator = QualityEvaluator(digits, cache_dir=tmp_path)
    stages = estimate_stages(evaluator, rbm, settings)
    assert list(stages) == ["AIS"] and stages["AIS"] > 0  # cheap: the RBM's samples wait for the final evaluation
    assert describe(stages).startswith("AIS, ~")
    seen = []
    clock = StagedProgress(stages)
    evaluator.progress = lambda f, m: seen.append(clock.fraction(f, m))
    t0 = time.perf_counter()
    evaluator.evaluate(rbm, settings)
    actual = time.perf_counter() - t0
    # the probe is 50 of the 2,000 steps: on a busy machine its pace may differ, but not by a factor of four
    assert actual / 4 < stages["AIS"] < actual * 4 + 0.5, (stages, actual)
    assert seen == sorted(seen) and seen[-1] == 1.0

    vae = build_model("vae", {"hidden": 32, "latent": 2})
    vae_stages = estimate_stages(evaluator, vae, SMALL_FINAL)  # no classifier cached: a final one trains it first
    assert list(vae_stages) == ["IWAE", "classifier", "samples"] and all(v > 0 for v in vae_stages.values())
    clock = StagedProgress(vae_stages)
    assert clock.fraction(1.0, "IWAE: done") < clock.fraction(0.0, "classifier: epoch 1") + 1e-9
    assert clock.fraction(0.5, "classifier: epoch 1") < clock.fraction(0.1, "samples: sampling") < 1.0
    assert clock.fraction(1.0, "samples: sampling 300/300 images") == 1.0
