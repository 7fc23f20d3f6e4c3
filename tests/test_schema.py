"""The run folder's typed records (genlib.runs.schema): round trips, clear refusals of foreign or damaged files, old
folders (no version, one "parent" for three meanings) read as they were meant and never rewritten by reading, and the
two choices every reader used to make its own way: which weights are the latest, and which dataset a run uses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from genlib.runs.schema import (CONTROL_VERSION, QUALITY_VERSION, RUN_VERSION, STATE_VERSION, ControlRecord,
                                ForkOrigin, QualityRecord, QualityStatus, RunRecord, SchemaError, StateRecord,
                                SweepMember, UploadOrigin)
from genlib.runs.store import Run, RunStore

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"


def test_each_record_round_trips_with_its_version(tmp_path):
    fork = ForkOrigin(run_id="vae-a", checkpoint="epoch-0001", step=30, epoch=1, changed={"lr": [1, 2]})
    run = RunRecord(model="vae", model_config={"latent": 2}, train_config={"dataset": "digits", "epochs": 2},
                    dataset="digits", id="vae-x", created=12.5, title="t", forked_from=fork,
                    extra={"added_by_a_newer_writer": [1, 2]})
    state = StateRecord(state="running", step=5, pid=123, host="h", node="n1", metrics={"loss": 0.5},
                        extra={"admitted": 3.0})
    control = ControlRecord(command="stop", seq=4, knobs={"lr": 0.01, "beta": 2.0})
    quality = QualityRecord(kind="final", step=9, figures={"neg_elbo": 100.0},
                            extra={"checkpoint": "last.safetensors"})
    status = QualityStatus(state="running", kind="full", fraction=0.5, pid=1, host="h", updated=3.0)
    for record, name, version in ((run, "run.json", RUN_VERSION), (state, "state.json", STATE_VERSION),
                                  (control, "control.json", CONTROL_VERSION),
                                  (quality, "quality.json", QUALITY_VERSION),
                                  (status, "quality-status.json", QUALITY_VERSION)):
        record.save(tmp_path / name)
        assert json.loads((tmp_path / name).read_text())["version"] == version
        assert type(record).load(tmp_path / name) == record, name
    on_disk = json.loads((tmp_path / "control.json").read_text())
    assert on_disk["lr"] == 0.01 and on_disk["command"] == "stop"  # knobs stay flat keys: the worker reads them so
    assert json.loads((tmp_path / "run.json").read_text())["added_by_a_newer_writer"] == [1, 2]


@pytest.mark.parametrize("name,text,fault", [
    ("run.json", "{not json", "not valid JSON"),
    ("run.json", "[1, 2]", "not an object"),
    ("run.json", '{"hello": "world"}', "'model' must name a model"),
    ("run.json", '{"model": "vae", "version": 99}', "newer genlib"),
    ("run.json", '{"model": "vae", "parent": "someone"}', "'parent' must be an object"),
    ("run.json", '{"model": "vae", "train_config": 5}', "'train_config' must be a dict"),
    ("state.json", '{"state": "dancing"}', "'state' must be one of"),
    ("state.json", '{"state": "running", "pid": -4}', "'pid' must be a positive"),
    ("state.json", '{"state": "running", "step": "five"}', "'step' must be a non-negative int"),
    ("control.json", '{"command": "explode"}', "'command' must be one of"),
    ("control.json", '{"command": "run", "lr": {"nested": 1}}', "'lr' must be a scalar"),
])
def test_a_foreign_or_damaged_file_is_refused_naming_file_and_fault(tmp_path, name, text, fault):
    run = RunStore(tmp_path).create({"model": "vae"})
    path = run.path / name
    path.write_text(text)
    reader = {"run.json": run.record, "state.json": run.state, "control.json": run.control}[name]
    with pytest.raises(SchemaError) as e:
        reader()
    assert str(path) in str(e.value) and fault in str(e.value), str(e.value)


def _fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _reads_without_writing(copy: Path, raw: dict) -> None:
    """A shipped run's folder reads as a finished pretrained run, and reading it changes no file."""
    before = _fingerprint(copy)
    run = Run(copy)
    record = run.record()
    assert record.model == raw["model"] and record.pretrained and record.forked_from is None
    assert run.dataset() == "mnist" and run.info()["version"] == RUN_VERSION
    assert run.state()["state"] == "finished" and run.control()["command"] == "run"
    assert run.latest_weights() == run.checkpoint_path and run.effective_state() == "finished"
    assert run.owner() is None
    assert _fingerprint(copy) == before, f"reading {copy.name} changed its files"


def test_the_shipped_pretrained_runs_load_and_reading_never_rewrites_them(tmp_path):
    """Each shipped folder as it is, and each also as a run.json written before the schema (no "version"): older
    exports ship that way, and an install keeps a teacher's copies of them."""
    folders = sorted(p for p in PRETRAINED.iterdir() if (p / "run.json").is_file())
    assert folders, "the repository ships pretrained runs"
    for folder in folders:
        raw = json.loads((folder / "run.json").read_text())
        assert raw.get("version", RUN_VERSION) == RUN_VERSION, folder.name
        shutil.copytree(folder, tmp_path / folder.name)
        _reads_without_writing(tmp_path / folder.name, raw)
        legacy = tmp_path / f"{folder.name}-before-the-schema"
        shutil.copytree(folder, legacy)
        (legacy / "run.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "version"}, indent=1))
        _reads_without_writing(legacy, raw)


@pytest.mark.parametrize("parent,field,expected", [
    ({"run_id": "vae-a", "checkpoint": "epoch-0002", "step": 60, "epoch": 2, "changed": {"lr": [0.001, 0.0001]}},
     "forked_from", ForkOrigin(run_id="vae-a", checkpoint="epoch-0002", step=60, epoch=2,
                               changed={"lr": [0.001, 0.0001]})),
    ({"uploaded": "'mine.safetensors'", "run_id": "vae-a"}, "uploaded_from",
     UploadOrigin(file="'mine.safetensors'", claimed_run_id="vae-a")),
    ({"kind": "ising-sweep", "id": "sweep-1", "T": 2.25}, "sweep", SweepMember(id="sweep-1", T=2.25)),
    (None, None, None),
])
def test_the_old_parent_field_is_read_as_what_it_meant(tmp_path, parent, field, expected):
    folder = tmp_path / "vae-old"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"model": "vae", "dataset": "digits", "id": "vae-old",
                                                 "train_config": {"dataset": "digits"}, "parent": parent}))
    record = Run(folder).record()
    origins = {"forked_from": record.forked_from, "uploaded_from": record.uploaded_from, "sweep": record.sweep}
    assert origins == {k: (expected if k == field else None) for k in origins}
    assert "parent" not in Run(folder).info()


def test_latest_weights_are_chosen_by_the_step_they_were_saved_at_not_by_file_times(tmp_path):
    from genlib.models import build_model
    from genlib.runs.checkpoints import save_checkpoint

    run = RunStore(tmp_path).create({"model": "vae", "train_config": {"dataset": "digits"}})
    assert run.latest_weights() is None
    model = build_model("vae", {"hidden": 16, "latent": 2})
    save_checkpoint(run.snapshot_path, model, train_config={}, progress={"step": 40}, with_training_state=False)
    save_checkpoint(run.checkpoint_path, model, train_config={}, progress={"step": 30})
    # the checkpoint is newer on disk (a copy, a restore), but the snapshot holds later weights
    os.utime(run.snapshot_path, ns=(10**18, 10**18))
    os.utime(run.checkpoint_path, ns=(2 * 10**18, 2 * 10**18))
    assert run.latest_weights() == run.snapshot_path
    save_checkpoint(run.checkpoint_path, model, train_config={}, progress={"step": 40})
    assert run.latest_weights() == run.checkpoint_path  # a tie: the complete checkpoint
    run.checkpoint_path.write_bytes(b"damaged")
    assert run.latest_weights() == run.snapshot_path


def test_the_dashboard_and_the_evaluation_explore_the_same_weights(tmp_path):
    """Every reader asks Run.latest_weights: the explorer's file is the one state.load_run_model loads."""
    from dashboard.explore import widgets
    from genlib.models import build_model
    from genlib.runs.checkpoints import save_checkpoint

    run = RunStore(tmp_path).create({"model": "vae", "train_config": {"dataset": "digits"}})
    model = build_model("vae", {"hidden": 16, "latent": 2})
    save_checkpoint(run.checkpoint_path, model, train_config={}, progress={"step": 50})
    save_checkpoint(run.snapshot_path, model, train_config={}, progress={"step": 20}, with_training_state=False)
    os.utime(run.checkpoint_path, ns=(10**18, 10**18))  # the snapshot is newer on disk, from before a resume
    assert widgets.weights_file(run) == run.checkpoint_path == run.latest_weights()


def test_a_run_without_a_named_dataset_uses_the_training_default_not_the_offline_digits(tmp_path):
    folder = tmp_path / "vae-old"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"model": "vae", "train_config": {}}))
    assert Run(folder).dataset() == "mnist"  # TrainConfig's default: what such a run was trained on
    (folder / "run.json").write_text(json.dumps({"model": "vae", "train_config": {"dataset": "fashion-mnist"}}))
    assert Run(folder).dataset() == "fashion-mnist"
    (folder / "run.json").write_text(json.dumps({"model": "vae", "dataset": "digits", "train_config": {}}))
    assert Run(folder).dataset() == "digits"


def test_an_unreadable_run_folder_is_left_out_of_the_list_and_named_when_opened(tmp_path):
    store = RunStore(tmp_path)
    good = store.create({"model": "vae"})
    bad = tmp_path / "vae-foreign"
    bad.mkdir()
    (bad / "run.json").write_text('["not", "a", "run"]')
    assert [r.id for r in store.list()] == [good.id]
    with pytest.raises(SchemaError, match="vae-foreign"):
        store.get("vae-foreign").record()


def test_state_files_keep_fields_other_writers_add(tmp_path):
    run = RunStore(tmp_path).create({"model": "vae"})
    run.write_state(state="queued", admitted=12.0, queue_place=2)
    run.write_state(step=3)
    assert run.state()["admitted"] == 12.0 and run.state()["queue_place"] == 2 and run.state()["step"] == 3
    assert json.loads(run.state_path.read_text())["version"] == STATE_VERSION
