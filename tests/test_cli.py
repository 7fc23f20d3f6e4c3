"""The command line as a user runs it: train, resume and sample, each ending with one JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None):
    e = dict(os.environ, **(env or {}))
    p = subprocess.run([sys.executable, "-m", "genlib", *args], capture_output=True, text=True, cwd=ROOT, env=e,
                       timeout=300)
    return p


def last_json(p):
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_train_resume_sample(tmp_path):
    runs = tmp_path / "runs"
    p = cli("train", "vae", "--dataset", "digits", "--epochs", "1", "--batch-size", "100", "--latent", "2",
            "--hidden", "32", "--device", "cpu", "--runs-dir", str(runs))
    assert p.returncode == 0, p.stderr
    out = last_json(p)
    for key in ("run_dir", "steps", "images", "seconds", "images_per_second", "metrics"):
        assert key in out
    assert out["steps"] == 15 and out["images"] == 1500 and "loss" in out["metrics"]
    p = cli("train", "--resume", out["run_dir"], "--epochs", "2")
    assert p.returncode == 0, p.stderr
    assert last_json(p)["steps"] == 30
    npz = tmp_path / "s.npz"
    p = cli("sample", out["run_dir"], "--n", "5", "--out", str(npz))
    assert p.returncode == 0, p.stderr
    images = np.load(npz)["images"]
    assert images.shape == (5, 1, 28, 28) and images.min() >= 0 and images.max() <= 1


def test_missing_dataset_gives_advice_not_a_traceback(tmp_path):
    p = cli("train", "vae", "--dataset", "mnist", "--data-root", str(tmp_path / "nothing"), "--device", "cpu",
            "--runs-dir", str(tmp_path / "runs"))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "digits" in p.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_values_are_refused_with_a_message(tmp_path):
    for args in (["--latent", "0"], ["--lr", "-1"], ["--batch-size", "0"], ["--k", "3"], ["--device", "cuda:7"]):
        p = cli("train", "vae", "--dataset", "digits", "--runs-dir", str(tmp_path), *args)
        assert p.returncode == 2, args
        assert "Traceback" not in p.stderr and p.stderr.startswith("error:"), (args, p.stderr)



def test_rbm_options_reach_the_model_config():
    from genlib.cli import _model_config, build_parser
    from genlib.models import make_config

    args = build_parser().parse_args(["train", "rbm", "--centering", "--momentum", "0.5", "--k", "2", "--pcd"])
    config = make_config("rbm", _model_config(args, "rbm"))
    assert (config.centering, config.momentum, config.k, config.persistent) == (True, 0.5, 2, True)
    assert make_config("rbm", _model_config(build_parser().parse_args(["train", "rbm"]), "rbm")).centering is False
