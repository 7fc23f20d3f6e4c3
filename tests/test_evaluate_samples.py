"""Tests of genlib.quality.frechet and genlib.quality.classifier: the Fréchet distance against closed forms, the classifier's
training, cache file and class histogram, and `python -m genlib evaluate` end to end on a GAN run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genlib.runs.checkpoints import save_checkpoint
from genlib.quality.classifier import (Classifier, ClassifierTrainConfig, cached_classifier, classifier_path,
                               ensure_classifier, load_classifier, train_classifier)
from genlib.data import load_dataset, to_unit
from genlib.quality.frechet import (class_histogram, classifier_outputs, frechet_distance,
                                     frechet_distance_from_stats, gaussian_stats, histogram_summary, sample_quality)

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ClassifierTrainConfig(epochs=8, batch_size=16, max_shift=1)  # 95% in ~3-8 s on one shared core


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread while these tests run: small ops on 2 shared cores run slower with 2 threads, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    """n draws (n, d) of a correlated Gaussian: a random linear map of standard normals."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)


# ---- Fréchet distance ----

def test_frechet_distance_of_a_set_with_itself_is_zero():
    a = _gaussian(500, 16, 0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    b = _gaussian(300, 16, 1)  # a rank-deficient covariance (d = 16 > rank of 10 points) is still handled
    assert frechet_distance(b[:10], b[:10]) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_shifted_sets_is_the_squared_shift():
    a = _gaussian(400, 8, 2)
    shift = torch.linspace(-1, 2, 8, dtype=torch.float64)
    # equal covariances: the trace terms cancel exactly, leaving ||mu1 - mu2||^2
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-9)
    assert frechet_distance(a + shift, a) == pytest.approx(float(shift.square().sum()), rel=1e-9)


def test_frechet_distance_matches_the_one_dimensional_closed_form():
    # in 1-D the distance is (mu1 - mu2)^2 + (sigma1 - sigma2)^2, with the sets' own (N - 1) statistics
    a = _gaussian(1_000, 1, 3)
    b = 0.3 * _gaussian(700, 1, 4) + 1.5
    expected = (a.mean() - b.mean()) ** 2 + (a.std() - b.std()) ** 2
    assert frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-10)


def test_frechet_distance_from_stats_matches_closed_forms():
    # commuting (diagonal) covariances: sum_i (sigma1_i - sigma2_i)^2 on top of the mean term
    s1, s2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    mu1, mu2 = torch.zeros(3), torch.tensor([1.0, 0.0, 0.0])
    expected = 1.0 + float((s1.sqrt() - s2.sqrt()).square().sum())
    assert frechet_distance_from_stats(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected, rel=1e-12)
    # non-commuting covariances: symmetric in its arguments, and tr((S1 S2)^½) from the eigenvalues of S1 S2
    c1, c2 = gaussian_stats(_gaussian(200, 5, 5))[1], gaussian_stats(_gaussian(200, 5, 6))[1]
    z = torch.zeros(5)
    d12, d21 = frechet_distance_from_stats(z, c1, z, c2), frechet_distance_from_stats(z, c2, z, c1)
    assert d12 == pytest.approx(d21, rel=1e-9)
    cross = torch.linalg.eigvals(c1.double() @ c2.double()).real.clamp(min=0).sqrt().sum()
    assert d12 == pytest.approx(float(torch.trace(c1) + torch.trace(c2) - 2 * cross), rel=1e-8)


# ---- the classifier ----

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def cache(tmp_path_factory, digits):
    """A cache folder holding a digits classifier trained once for this module (a tiny run, a few seconds)."""
    folder = tmp_path_factory.mktemp("cache")
    messages = []
    model, report = ensure_classifier(digits, cache_dir=folder, config=TINY_TRAIN,
                                      progress=lambda f, m: messages.append((f, m)))
    return folder, model, report, messages


def test_classifier_learns_digits_in_seconds(cache):
    _, model, report, messages = cache
    assert report["test_accuracy"] > 0.90, report
    assert report["seconds"] < 60 and report["dataset"] == "digits"
    assert messages[0][0] == 0.0 and "training" in messages[0][1] and messages[-1][0] == pytest.approx(1.0)
    assert not model.training


def test_classifier_is_cached_as_safetensors_and_reused(cache, digits, monkeypatch):
    folder, model, report, _ = cache
    path = classifier_path("digits", folder)
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + n])["__metadata__"]  # a safetensors header: JSON, no pickle anywhere
    assert meta["format"] == "genlib-classifier" and float(meta["test_accuracy"]) == pytest.approx(
        report["test_accuracy"], abs=1e-4)
    assert json.loads(meta["report"])["train_config"]["epochs"] == TINY_TRAIN.epochs
    # a second call loads the file instead of training again
    monkeypatch.setattr("genlib.quality.classifier.train_classifier", lambda *a, **k: pytest.fail("trained again"))
    again, again_report = ensure_classifier("digits", cache_dir=folder)
    assert again_report == report
    x = to_unit(digits.x_test[:20])
    torch.testing.assert_close(again(x), model(x))
    # the cache folder comes from $GENLIB_CACHE when not given
    monkeypatch.setenv("GENLIB_CACHE", str(folder))
    assert cached_classifier("digits") is not None and cached_classifier("mnist") is None


def test_a_damaged_cache_file_is_refused_not_unpickled(tmp_path):
    from genlib.quality.classifier import ClassifierError

    bad = tmp_path / "classifier-digits-v1.safetensors"
    bad.write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(ClassifierError):
        load_classifier(bad)
    assert cached_classifier("digits", tmp_path) is None  # and ensure_classifier would retrain over it


def test_classifier_training_is_reproducible(digits):
    cfg = ClassifierTrainConfig(epochs=1, batch_size=100)
    a, ra = train_classifier(digits, cfg)
    b, rb = train_classifier(digits, cfg)
    assert ra["test_accuracy"] == rb["test_accuracy"]
    torch.testing.assert_close(a.fc2.weight, b.fc2.weight)


def test_class_histogram_counts_every_image(cache, digits):
    _, model, _, _ = cache
    counts = class_histogram(digits.x_test, model)
    assert len(counts) == 10 and sum(counts) == digits.x_test.shape[0]
    # the test set's classes are balanced and the classifier is good: no class is empty
    assert min(counts) > 10
    feats, preds = classifier_outputs(model, digits.x_test[:7])
    assert feats.shape == (7, Classifier().config.features) and feats.dtype == torch.float64 and preds.shape == (7,)
    summary = histogram_summary([5, 0, 5])
    assert summary["classes_seen"] == 2 and summary["entropy"] == pytest.approx(math.log(2))


def test_sample_quality_orders_models(cache, digits):
    """Real test images score near the train-vs-test floor; noise scores far above it and collapses to few classes."""
    _, model, _, _ = cache

    class Replay:  # a 'model' whose samples are real test images
        def sample(self, n, *, generator=None):
            idx = torch.randint(digits.x_test.shape[0], (n,), generator=generator)
            return to_unit(digits.x_test[idx])

    class Noise:
        def sample(self, n, *, generator=None):
            return torch.rand(n, 1, 28, 28, generator=generator)

    good = sample_quality(Replay(), model, digits.x_train, digits.x_test, n=300)
    bad = sample_quality(Noise(), model, digits.x_train, digits.x_test, n=300)
    json.dumps(good)
    assert sum(good["class_histogram"]) == 300 and good["n_floor"] == 300
    assert good["frechet_distance"] < 2 * good["frechet_floor"] + 1e-6
    assert bad["frechet_distance"] > 5 * good["frechet_distance"]
    assert bad["class_entropy"] < good["class_entropy"]


# ---- the command line ----

def test_cli_evaluates_a_gan_run(tmp_path, cache, capsys):
    from genlib.models.gan import GAN, GANConfig
    from genlib.runs.store import RunStore

    folder = cache[0]
    torch.manual_seed(0)
    gan = GAN(GANConfig(preset="fast"))
    run = RunStore(tmp_path / "runs").create({"model": "gan", "model_config": {"preset": "fast"},
                                              "train_config": {"dataset": "digits"}, "dataset": "digits"})
    save_checkpoint(run.checkpoint_path, gan, train_config={"dataset": "digits"}, progress={"step": 7})
    env = dict(os.environ, GENLIB_CACHE=str(folder), OMP_NUM_THREADS="1")  # see one_thread
    p = subprocess.run([sys.executable, "-m", "genlib", "evaluate", str(run.path), "--quick", "--device", "cpu",
                        "--n-samples", "200"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["model"] == "gan" and out["step"] == 7 and out["quick"] is True
    assert out["samples"]["n_samples"] == 200 and sum(out["samples"]["class_histogram"]) == 200
    assert out["samples"]["frechet_distance"] > out["samples"]["frechet_floor"]  # an untrained GAN
    assert out["classifier"]["dataset"] == "digits" and "rbm" not in out and "vae" not in out
    assert "samples:" in p.stderr  # progress went to stderr
    # the one evaluation path: the same record as the worker's and the dashboard's, in the run folder
    assert out["kind"] == "cheap" and out["error"] is None and out["figures"]["n_samples"] == 200
    records = run.quality_records()[0]
    assert len(records) == 1 and records[0]["kind"] == "cheap" and records[0]["step"] == 7
    assert records[0]["figures"] == out["figures"]

    from genlib.cli import main  # the error path in-process: a message, exit status 2, no traceback

    assert main(["evaluate", str(tmp_path / "nothing"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.startswith("error:")
