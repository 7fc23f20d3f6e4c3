"""genlib.runs.pretrained.best_pretrained: the one rule that picks the pretrained run a model page opens on."""

from __future__ import annotations

import json

from genlib.runs.pretrained import best_pretrained
from genlib.runs.store import RunStore


def _run(store, run_id, model, loss=None, step=100, pretrained=True):
    run = store.create({"model": model, "model_config": {}, "train_config": {}, "dataset": "mnist",
                        **({"pretrained": {"script": "x"}} if pretrained else {})}, run_id=run_id)
    run.write_state(state="finished", step=step, metrics={} if loss is None else {"loss": loss})
    return run


def test_the_repositorys_vae_page_opens_on_the_lecture_vae_not_latent_2(tmp_path):
    from conftest import ROOT

    runs = RunStore(ROOT / "pretrained").list()
    assert best_pretrained(runs, "vae", ROOT / "pretrained").id == "pretrained-vae"
    assert best_pretrained(runs, "gan", ROOT / "pretrained").id == "pretrained-gan"
    assert best_pretrained(runs, "nope", ROOT / "pretrained") is None


def test_quality_figures_from_the_manifest_decide_before_losses(tmp_path):
    store = RunStore(tmp_path / "runs")
    a = _run(store, "pretrained-vae-a", "vae", loss=100.0)
    b = _run(store, "pretrained-vae-b", "vae", loss=150.0)
    _run(store, "vae-mine", "vae", loss=1.0, pretrained=False)  # not pretrained: never the pick
    assert best_pretrained(store.list(), "vae", tmp_path / "none").id == a.id  # by the negative ELBO
    src = tmp_path / "pretrained"
    src.mkdir()
    (src / "MANIFEST.json").write_text(json.dumps({"runs": [
        {"run_id": a.id, "figures": {"frechet_distance": 30.0, "frechet_floor": 2.0}},
        {"run_id": b.id, "quality": {"figures": {"frechet_distance": 20.0, "frechet_floor": 2.0}}}]}))
    assert best_pretrained(store.list(), "vae", src).id == b.id  # the Fréchet ratio decides: 10 < 15


def test_without_figures_or_a_likelihood_loss_the_longest_trained_wins(tmp_path):
    store = RunStore(tmp_path / "runs")
    _run(store, "pretrained-gan-a", "gan", loss=0.1, step=100)
    b = _run(store, "pretrained-gan-b", "gan", loss=5.0, step=900)  # a GAN's loss says nothing of its samples
    assert best_pretrained(store.list(), "gan", tmp_path / "none").id == b.id
