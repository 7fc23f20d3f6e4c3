"""The notebook API (genlib.api): the README's example runs as written, on the offline digits dataset, and leaves a
run folder that loads; `import genlib` stays cheap; bad settings are refused before anything is written."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genlib

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- api-example:start -->", "<!-- api-example:end -->"

# the end-of-run FINAL evaluation trains a classifier the first time: not what this module tests
pytestmark = pytest.mark.usefixtures("no_quality_evaluation")


def readme_example() -> str:
    """The Python block between the README's api-example markers, exactly as a reader sees it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, "README.md must hold one marked API example"
    block = text[text.index(START) + len(START):text.index(END)]
    m = re.fullmatch(r"\s*```python\n(.*?)```\s*", block, re.S)
    assert m, "the marked README block must be one ```python fence"
    return m.group(1)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """The example's relative runs folder lands in a fresh directory, with an empty classifier cache and data root."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENLIB_DATA_ROOT", str(tmp_path / "no-data"))
    monkeypatch.delenv("GENLIB_RUNS_DIR", raising=False)
    return tmp_path


def test_readme_example_runs_as_written(in_tmp):
    from genlib.runs.checkpoints import load_checkpoint, model_from_checkpoint
    from genlib.runs.store import open_run

    code = readme_example()
    assert 'dataset="digits"' in code  # the example must stay runnable offline
    scope: dict = {}
    exec(compile(code, "README.md (api example)", "exec"), scope)

    run, images, record = scope["run"], scope["images"], scope["record"]
    assert run.path.resolve().parent == (in_tmp / "runs").resolve() and run.path.is_dir()
    loaded = open_run(run.path)  # the folder is a run like any other: its info, state and checkpoint load
    assert loaded.info()["model"] == "vae" and loaded.info()["model_config"]["latent"] == 2
    assert loaded.state()["state"] == "finished" and loaded.state()["step"] == 60
    model = model_from_checkpoint(load_checkpoint(loaded.checkpoint_path))
    assert model.name == "vae"

    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert torch.equal(images, genlib.sample(run, 16, seed=0))  # the seed makes the draw reproducible
    assert not torch.equal(images, genlib.sample(run.path, 16, seed=1))  # a path works too

    assert record["kind"] == "cheap" and record["error"] is None and record["step"] == 60
    assert math.isfinite(record["figures"]["neg_elbo"]) and record["figures"]["iwae_nll"] > 0
    recorded = [json.loads(line) for line in (run.path / "quality.jsonl").read_text().splitlines()]
    assert record["figures"] in [r["figures"] for r in recorded]  # recorded in the run, like the worker's ones

    resumed = genlib.train(resume=run, steps=70, quiet=True, evaluate="none")  # continues the same folder
    assert resumed.path == run.path and open_run(run.path).state()["step"] == 70


def test_import_genlib_is_cheap_and_lazy():
    code = ("import sys, genlib; assert 'torch' not in sys.modules, 'import genlib imported torch'; "
            "assert 'genlib.api' not in sys.modules; f = genlib.train; assert 'genlib.api' in sys.modules; "
            "assert callable(f) and callable(genlib.sample) and callable(genlib.evaluate); "
            "assert {'train', 'sample', 'evaluate'} <= set(dir(genlib))")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        genlib.trian


def test_bad_settings_are_refused_before_a_run_exists(in_tmp):
    with pytest.raises(ValueError, match="unknown setting.*latnet"):
        genlib.train("vae", dataset="digits", steps=1, latnet=2, runs_dir="runs")
    with pytest.raises(ValueError, match="is a VAE option, not a RBM one"):
        genlib.train("rbm", dataset="digits", steps=1, latent=2, runs_dir="runs")
    with pytest.raises(ValueError, match="argument --evaluate: invalid choice: 'later'"):
        genlib.train("vae", dataset="digits", steps=1, evaluate="later", runs_dir="runs")
    with pytest.raises(ValueError, match="argument --latent: invalid int value"):
        genlib.train("vae", dataset="digits", steps=1, latent="two", runs_dir="runs")
    with pytest.raises(ValueError, match="kind must be one of"):
        genlib.evaluate(in_tmp, kind="quick")
    assert not (in_tmp / "runs").exists() or not any((in_tmp / "runs").iterdir())
