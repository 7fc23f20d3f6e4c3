"""Crash-safe files and run folders: torn metric lines are skipped, ids cannot escape the runs directory."""

import json

import pytest

from genlib.runs.io import append_jsonl, atomic_write_json, read_json, read_jsonl
from genlib.runs.store import RunStore, check_run_id


def test_jsonl_reader_skips_a_torn_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, [{"step": 1}, {"step": 2}])
    with open(p, "ab") as f:
        f.write(b'{"step": 3, "lo')  # a crash in the middle of an append
    rows, offset = read_jsonl(p)
    assert [r["step"] for r in rows] == [1, 2]
    with open(p, "ab") as f:
        f.write(b'ss": 1}\n')
    more, _ = read_jsonl(p, offset)
    assert more == [{"step": 3, "loss": 1}]


def test_atomic_json_replaces_whole_file(tmp_path):
    p = tmp_path / "s.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert read_json(p) == {"a": 2}
    assert read_json(tmp_path / "absent.json", {"x": 0}) == {"x": 0}
    (tmp_path / "bad.json").write_text("{not json")
    assert read_json(tmp_path / "bad.json") is None


@pytest.mark.parametrize("bad", ["../etc", "..", "a/b", "/abs", "", "UPPER", "x" * 200, "a\x00b", "./x"])
def test_run_ids_cannot_escape(tmp_path, bad):
    with pytest.raises(ValueError):
        check_run_id(bad)
    with pytest.raises(ValueError):
        RunStore(tmp_path).get(bad)


def test_store_create_list_control_delete(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.create({"model": "vae", "train_config": {}})
    assert run.id.startswith("vae-") and store.get(run.id).path == run.path
    assert run.state()["state"] == "queued"
    run.send(command="pause")
    run.send(lr=0.5)
    assert run.control()["command"] == "pause" and run.control()["lr"] == 0.5 and run.control()["seq"] == 2
    assert [r.id for r in store.list()] == [run.id]
    store.delete(run.id)
    assert store.list() == []


def test_dead_worker_reads_as_interrupted(tmp_path):
    store = RunStore(tmp_path)
    run = store.create({"model": "vae"})
    run.write_state(state="running", pid=2**22 + 12345)
    state = json.loads(run.state_path.read_text())
    state["updated"] -= 3600
    run.state_path.write_text(json.dumps(state))
    assert run.effective_state() == "interrupted"


def test_unwritable_runs_dir_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="Runs cannot be saved"):
        RunStore(blocker / "runs").ensure_writable()
