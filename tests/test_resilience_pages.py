"""The dashboard under faults, hostile input and a classroom (Streamlit AppTest): after a restart the Runs page lists
every run and offers Resume on interrupted ones; a missing dataset, an unwritable runs folder and a full disk give a
message, never a traceback; uploaded checkpoints are imported or refused; ?run= cannot leave the runs folder; and in
teacher mode only the token holder starts, stops, deletes or uploads while everyone else watches."""

from __future__ import annotations

import errno
import os
import pickle
import re
import subprocess
import sys

import pytest

from conftest import APP, _clear_caches

TIMEOUT = 60
TEACHER = "correct horse battery staple"


def app(page: str | None = None, query: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if page:
        at.switch_page(page)
    return at.run()


def shown_text(at) -> str:
    return " ".join(str(getattr(el, "value", "")) for el in list(at.main) + list(at.sidebar))


def no_traceback(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert "Traceback" not in shown_text(at)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def tiny_run(manager, **train) -> str:
    """A finished tiny VAE run (digits, 30 steps) with its checkpoint."""
    run_id = manager.submit("vae", {"hidden": 16, "latent": 2},
                            {"dataset": "digits", "epochs": 1, "batch_size": 50, "log_every": 2, "device": "cpu",
                             "n_samples": 4, **train})
    assert manager.wait(run_id, timeout=120).state == "finished"
    return run_id


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---- restart ----

def test_after_a_restart_every_run_is_listed_and_an_interrupted_one_resumes(manager):
    done = tiny_run(manager)
    crashed = tiny_run(manager, max_steps=10)
    manager.close(stop_jobs=True)  # the old server goes away (its workers reaped, its monitor stopped)
    run = manager.store.get(crashed)
    # as a server crash leaves it: 'running', its worker gone, the last checkpoint at step 10 of 30
    run.write_info({**run.info(), "train_config": {**run.info()["train_config"], "max_steps": None}})
    run.write_state(state="running", pid=dead_pid(), total_steps=30)
    _clear_caches()  # a new server process: a new JobManager that owns no job
    at = app("app_pages/runs.py", {"run": crashed})
    no_traceback(at)
    table = at.dataframe[0].value
    assert set(table["run"]) == {done, crashed}
    assert dict(zip(table["run"], table["state"])) == {done: "finished", crashed: "interrupted"}
    assert any("was interrupted" in w.value for w in at.warning)
    at.button(key="resume-run").click().run()
    no_traceback(at)
    from dashboard import state

    status = state.get_manager().wait(crashed, timeout=120)
    assert status.state == "finished" and status.step == 30


# ---- faults ----

def test_a_dataset_that_cannot_be_found_gives_a_message(manager, monkeypatch):
    import genlib.data

    monkeypatch.setattr(genlib.data, "dataset_available", lambda name, root=None: True)  # offered, yet absent
    at = app("app_pages/vae.py")
    at.selectbox(key="vae-form-dataset").set_value("mnist")
    at.button(key="vae-form-submit").click().run()
    no_traceback(at)
    errors = " ".join(e.value for e in at.error)
    assert "Not started" in errors and "MNIST" in errors and "digits" in errors
    assert manager.statuses() == []


def test_an_unwritable_runs_folder_gives_a_message(dashboard_env, monkeypatch):
    blocker = dashboard_env / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("GENLIB_RUNS_DIR", str(blocker / "runs"))
    at = app()
    no_traceback(at)
    for page in ("app_pages/runs.py", "app_pages/vae.py"):
        at.switch_page(page).run()
        no_traceback(at)
    at.number_input(key="vae-form-batch").set_value(50)
    at.button(key="vae-form-submit").click().run()
    no_traceback(at)
    assert any("Runs cannot be saved" in e.value for e in at.error)


def test_a_full_disk_gives_a_message_and_keeps_what_was_saved(manager, monkeypatch):
    run_id = tiny_run(manager)
    run = manager.store.get(run_id)
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    manager.store.get(run_id).write_state(state="stopped")  # resumable from the runs page
    before[run.state_path] = run.state_path.read_bytes()
    at = app("app_pages/vae.py")
    monkeypatch.setattr(os, "fsync", enospc)
    at.number_input(key="vae-form-batch").set_value(50)
    at.button(key="vae-form-submit").click().run()
    no_traceback(at)
    assert any("No space left on device" in e.value and "Free some disk space" in e.value for e in at.error)
    runs = app("app_pages/runs.py", {"run": run_id})
    runs.button(key="resume-run").click().run()
    no_traceback(runs)
    assert any("Could not resume" in e.value and "No space left" in e.value for e in runs.error)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before
    assert [s.run_id for s in manager.statuses()] == [run_id]


def test_run_ids_in_the_address_cannot_leave_the_runs_folder(manager, monkeypatch):
    """Each id is refused with its message on the page, and no path is built from it: nothing outside the runs folder
    (and the data root the pages read) is listed, opened or even looked at (Path.stat, behind exists/is_dir)."""
    import pathlib

    tiny_run(manager)  # the runs page lists runs: a folder to list, and a run to show instead
    runs = os.path.normpath(manager.store.root.resolve())
    allowed = (runs, os.path.normpath(os.path.realpath(os.environ["GENLIB_DATA_ROOT"])))
    touched: list[str] = []
    for name in ("iterdir", "stat", "open", "glob", "rglob"):
        def spy(self, *args, _original=getattr(pathlib.Path, name), **kwargs):
            touched.append(str(self))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, name, spy)
    tmp_root = os.path.dirname(runs)
    for bad in ("../../etc", "..", "/etc/passwd", "vae-1/../../x", "%2e%2e%2f"):
        for page in ("app_pages/vae.py", "app_pages/runs.py", "app_pages/gan.py"):
            touched.clear()
            at = app(page, {"run": bad})
            no_traceback(at)
            assert any("was refused" in w.value and "not a valid run id" in w.value and repr(bad) in w.value
                       for w in at.warning), (bad, page, [w.value for w in at.warning])
            assert touched, "the spies saw no file access at all"
            for path in touched:
                normal = os.path.normpath(os.path.join(runs, path))
                assert not normal.startswith("/etc"), (bad, page, path)
                if normal.startswith(tmp_root):  # the test's folder: only the runs folder and the data root
                    assert any(normal == a or normal.startswith(a + os.sep) for a in allowed), (bad, page, path)
                if bad != "..":  # ".." is also a path component every resolve() may meet
                    assert bad not in path, (bad, page, path)


# ---- uploads ----

def checkpoint_for_upload(step: int = 7) -> bytes:
    import dataclasses

    from genlib.runs.checkpoints import checkpoint_bytes
    from genlib.models import build_model
    from genlib.training import TrainConfig

    model = build_model("vae", {"hidden": 16, "latent": 2})
    model.configure_training(lr=1e-3)
    tc = dataclasses.asdict(TrainConfig(dataset="digits", epochs=1, batch_size=50, log_every=2, n_samples=4))
    return checkpoint_bytes(model, train_config=tc, progress={"step": step, "epoch": 0, "images": 350})


class Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def upload(at, name: str, data: bytes):
    at.file_uploader(key="upload-ckpt").set_value((name, data, "application/octet-stream")).run()
    at.button(key="import-ckpt").click().run()
    no_traceback(at)
    return at


def test_upload_imports_a_checkpoint_that_can_be_explored_and_continued(manager):
    at = upload(app("app_pages/runs.py"), "mine.safetensors", checkpoint_for_upload(step=7))
    assert any("Imported mine.safetensors" in s.value for s in at.success), [e.value for e in at.error]
    [status] = manager.statuses()
    assert status.state == "stopped" and status.step == 7
    vae = app("app_pages/vae.py", {"run": status.run_id})  # explored on its model's page
    no_traceback(vae)
    assert not vae.error
    at.button(key="resume-run").click().run()  # and continued
    no_traceback(at)
    from dashboard import state

    done = state.get_manager().wait(status.run_id, timeout=120)
    assert done.state == "finished" and done.step == 30


def test_upload_refuses_hostile_and_broken_files_with_a_message(manager, tmp_path):
    marker = tmp_path / "pwned"
    good = checkpoint_for_upload()
    files = {"evil.safetensors": (pickle.dumps({"w": Evil(marker)}), "pickle"),
             "truncated.safetensors": (good[: len(good) // 2], "truncated"),
             "empty.safetensors": (b"", "too short|truncated"),
             "noise.safetensors": (os.urandom(3000), "not a safetensors|truncated")}
    from test_two_writers import DAMAGED_STATES, upload_bytes

    for name in ("deep", "not-pairs", "wrong-optimiser"):  # a hand-made training state: the upload's message
        files[f"{name}.safetensors"] = (upload_bytes(DAMAGED_STATES[name]),
                                        f"'{name}.safetensors'.*(training state|nested)")
    at = app("app_pages/runs.py")
    for name, (data, message) in files.items():
        upload(at, name, data)
        assert any(re.search(message, e.value) for e in at.error), (name, [e.value for e in at.error])
    assert not marker.exists()
    assert manager.statuses() == []


# ---- teacher mode ----

def test_without_a_token_everyone_may_act(manager, monkeypatch):
    monkeypatch.delenv("GENLIB_TEACHER_TOKEN", raising=False)
    at = app("app_pages/vae.py")
    no_traceback(at)
    assert not at.button(key="vae-form-submit").disabled
    assert not [t for t in at.sidebar.text_input]


def test_teacher_mode_lets_viewers_watch_and_the_token_holder_act(manager, monkeypatch):
    run_id = tiny_run(manager)
    monkeypatch.setenv("GENLIB_TEACHER_TOKEN", TEACHER)
    at = app("app_pages/vae.py", {"run": run_id})
    no_traceback(at)
    assert not at.error and at.get("plotly_chart")  # a viewer sees the run
    submit = at.button(key="vae-form-submit")
    assert submit.disabled and "teacher token" in submit.help
    from streamlit.testing.v1.errors import AppTestError

    with pytest.raises(AppTestError):  # a browser cannot press a disabled button, and neither can AppTest
        submit.click()
    assert at.button(key=f"continue-submit-{run_id}").disabled
    runs = app("app_pages/runs.py", {"run": run_id})
    no_traceback(runs)
    assert runs.button(key="delete-run").disabled and runs.checkbox(key=f"confirm-delete-{run_id}").disabled
    assert runs.file_uploader(key="upload-ckpt").disabled
    # a wrong token is refused, the right one unlocks this browser session only
    at.text_input(key="teacher-token-input").input("guess").run()
    no_traceback(at)
    assert any("not the teacher token" in w.value for w in at.sidebar.warning)
    assert at.button(key="vae-form-submit").disabled
    at.text_input(key="teacher-token-input").input(TEACHER).run()
    assert not at.button(key="vae-form-submit").disabled
    assert at.session_state["teacher-token-input"] == ""  # the token does not stay in the box
    at.number_input(key="vae-form-batch").set_value(50)
    at.number_input(key="vae-form-epochs").set_value(1)
    at.button(key="vae-form-submit").click().run()
    no_traceback(at)
    assert len(manager.statuses()) == 2  # the teacher started a run
    other = app("app_pages/vae.py")  # another browser is still only watching
    assert other.button(key="vae-form-submit").disabled
    at.button(key="teacher-lock").click().run()
    assert at.button(key="vae-form-submit").disabled


# ---- memory ----

def test_metric_history_on_the_server_stays_bounded_and_keeps_the_ends(tmp_path):
    from dashboard.charts import MAX_POINTS, loss_figure
    from dashboard.state import MAX_LOG_ROWS, MetricLog
    from genlib.runs.io import append_jsonl
    from genlib.runs.store import RunStore

    run = RunStore(tmp_path).create({"model": "vae"})
    log = MetricLog(run)
    for start in range(0, 100_000, 10_000):  # a long run, read as it grows
        append_jsonl(run.metrics_path, [{"step": s, "loss": 1.0 / s} for s in range(start + 1, start + 10_001)])
        log.refresh()
        assert len(log.steps) <= MAX_LOG_ROWS and all(len(c) == len(log.steps) for c in log.columns.values())
    steps, values = log.series(["loss"])["loss"]
    assert steps[0] == 1 and steps[-1] == 100_000 and steps == sorted(steps) and values[-1] == 1e-5
    assert steps[-MAX_LOG_ROWS // 4:] == list(range(100_001 - MAX_LOG_ROWS // 4, 100_001))  # the newest stay whole
    fig = loss_figure({"loss": (steps, values)}, ("loss",))
    assert len(fig.data[0].x) <= MAX_POINTS  # and what goes to each browser is capped
