"""Teacher mode on the pages, as a student's client would try it: with $GENLIB_TEACHER_TOKEN set and not entered, every
action that writes to the runs folder or starts a process is refused by its handler on the server: the runs folder is
left byte for byte as it was and the page says to enter the teacher token in the sidebar. With the token entered, the
same action works.

A disabled button is not what refuses: each test first checks that the student sees the control disabled, then draws
every control ENABLED (`enabled_controls`) and presses it, so only the handler's guard stands between the click and
the runs folder. (Streamlit 1.67 also drops a forged event of a widget drawn disabled, which `forged_click` shows;
older versions, a button enabled in the run that handles the event, or a control that is never disabled did not
have that protection: the Ising form and the quality buttons were such controls.)"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import APP

TIMEOUT = 90
TOKEN = "correct horse battery staple"
TINY_VAE = ({"hidden": 16, "latent": 2},
            {"dataset": "digits", "epochs": 1, "batch_size": 50, "log_every": 2, "device": "cpu", "n_samples": 4})

pytestmark = pytest.mark.usefixtures("no_quality_evaluation")  # see tests/conftest.py


# ---- helpers ----

def tree(root: Path) -> dict[str, str]:
    """Every file under the runs folder -> sha256 of its bytes."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def app(page: str, query: dict | None = None, *, teacher: bool = False):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if teacher:
        at.session_state["teacher-token-ok"] = TOKEN  # as the sidebar's box leaves it (tests/test_auth_rule.py)
    at.switch_page(page)
    return at.run()


def forged_click(widget, value=True):
    """Set a widget's value even when it is drawn disabled, as a client that skips the browser's checks could."""
    from streamlit.testing.v1.element_tree import Widget

    check = Widget._assert_can_interact
    Widget._assert_can_interact = lambda self: None
    try:
        widget.set_value(value)
    finally:
        Widget._assert_can_interact = check
    return widget


@pytest.fixture
def enable_controls(monkeypatch):
    """A function that from then on draws every button, form button, uploader and checkbox enabled, whatever the
    page asks: a student's click then reaches the server's handler, and only its guard may refuse."""
    import streamlit as st
    from streamlit.delta_generator import DeltaGenerator

    def enabled(draw):
        @functools.wraps(draw)
        def drawn_enabled(*args, **kwargs):
            kwargs["disabled"] = False
            return draw(*args, **kwargs)
        return drawn_enabled

    def enable() -> None:
        for name in ("button", "form_submit_button", "file_uploader", "checkbox"):
            monkeypatch.setattr(DeltaGenerator, name, enabled(getattr(DeltaGenerator, name)))
            monkeypatch.setattr(st, name, enabled(getattr(st, name)))

    return enable


def refused(at, action: str) -> bool:
    """The page said what was refused and what to do."""
    texts = [e.value for e in at.error] + [str(getattr(t, "value", "")) for t in at.toast]
    return any(f"needed to {action}" in t and "enter the teacher token in the sidebar" in t for t in texts)


def no_traceback(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture
def runs_dir(dashboard_env, monkeypatch) -> Path:
    monkeypatch.setenv("GENLIB_TEACHER_TOKEN", TOKEN)
    return dashboard_env / "runs"


@pytest.fixture
def finished(manager, runs_dir) -> str:
    """A finished tiny VAE run with its checkpoint (trained before the token matters: the test's own manager)."""
    run_id = manager.submit("vae", *TINY_VAE)
    assert manager.wait(run_id, timeout=120).state == "finished"
    time.sleep(1.1)  # the shared statuses scan lives one second
    return run_id


@pytest.fixture
def worker():
    """A live process standing in for a training worker (its pid is what makes a run folder look live)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc.pid
    proc.kill()
    proc.wait(10)


def make_live(manager, run_id: str, pid: int, state: str) -> None:
    """Rewrite a finished run's state as a live one whose worker is `pid` (no CPU spent training it)."""
    manager.store.get(run_id).write_state(state=state, pid=pid, total_steps=1000, message=state)
    time.sleep(1.1)


# ---- the training panel: Pause, Resume, Stop, live knobs, Continue, fork, Start ----

def test_stop_pause_and_knobs_of_a_running_run_are_refused_on_the_server(manager, runs_dir, finished, worker,
                                                                          enable_controls):
    make_live(manager, finished, worker, "running")
    before = tree(runs_dir)
    at = app("app_pages/vae.py", {"run": finished})
    no_traceback(at)
    stop, pause = at.button(key=f"stop-{finished}"), at.button(key=f"pause-{finished}")
    assert stop.disabled and pause.disabled and "teacher token" in stop.help
    forged_click(stop).run()  # a forged event of a button drawn disabled: Streamlit drops it
    assert tree(runs_dir) == before
    enable_controls()
    at = app("app_pages/vae.py", {"run": finished})
    at.button(key=f"stop-{finished}").click().run()
    assert refused(at, "stop a run") and tree(runs_dir) == before
    at.button(key=f"pause-{finished}").click().run()
    assert refused(at, "pause a run") and tree(runs_dir) == before
    at.number_input(key=f"knob-lr-{finished}").set_value(5e-4)
    at.button(key=f"knobs-apply-{finished}").click().run()
    assert refused(at, "change a running job's settings") and tree(runs_dir) == before
    # the teacher's session acts
    teacher = app("app_pages/vae.py", {"run": finished}, teacher=True)
    teacher.number_input(key=f"knob-lr-{finished}").set_value(5e-4)
    teacher.button(key=f"knobs-apply-{finished}").click().run()
    no_traceback(teacher)
    assert manager.store.get(finished).control().get("lr") == 5e-4
    teacher.button(key=f"pause-{finished}").click().run()
    assert manager.store.get(finished).control().get("command") == "pause"
    teacher.button(key=f"stop-{finished}").click().run()
    assert manager.store.get(finished).control().get("command") == "stop"


def test_resume_of_a_paused_run_is_refused_on_the_server(manager, runs_dir, finished, worker, enable_controls):
    make_live(manager, finished, worker, "paused")
    manager.store.get(finished).send(command="pause")
    before = tree(runs_dir)
    at = app("app_pages/vae.py", {"run": finished})
    no_traceback(at)
    assert at.button(key=f"unpause-{finished}").disabled
    enable_controls()
    at = app("app_pages/vae.py", {"run": finished})
    at.button(key=f"unpause-{finished}").click().run()
    assert refused(at, "resume a paused run") and tree(runs_dir) == before
    teacher = app("app_pages/vae.py", {"run": finished}, teacher=True)
    teacher.button(key=f"unpause-{finished}").click().run()
    assert manager.store.get(finished).control().get("command") == "run"


def test_continue_fork_and_start_are_refused_on_the_server(manager, runs_dir, finished, monkeypatch,
                                                           enable_controls):
    before = tree(runs_dir)
    at = app("app_pages/vae.py", {"run": finished})
    no_traceback(at)
    for key in (f"continue-submit-{finished}", f"fork-start-{finished}", "vae-form-submit"):
        assert at.button(key=key).disabled, key
    enable_controls()
    at = app("app_pages/vae.py", {"run": finished})
    at.button(key=f"continue-submit-{finished}").click().run()
    assert refused(at, "continue training a run") and tree(runs_dir) == before
    at.button(key=f"fork-start-{finished}").click().run()
    assert refused(at, "start a fork") and tree(runs_dir) == before
    at.number_input(key="vae-form-batch").set_value(50)
    at.button(key="vae-form-submit").click().run()
    assert refused(at, "start training") and tree(runs_dir) == before
    assert len(manager.statuses()) == 1
    # with the token: each handler reaches the manager (recorded here instead of training more runs)
    calls = []
    monkeypatch.setattr(manager, "resume", lambda run_id, **kw: calls.append(("resume", run_id)))
    monkeypatch.setattr(manager, "fork", lambda run_id, changes, **kw: calls.append(("fork", run_id)) or run_id)
    train_configs = []
    monkeypatch.setattr(manager, "submit", lambda model, model_cfg, train_cfg, **kw:
                        calls.append(("submit", model)) or train_configs.append(train_cfg) or finished)
    teacher = app("app_pages/vae.py", {"run": finished}, teacher=True)
    teacher.button(key=f"continue-submit-{finished}").click().run()
    teacher.button(key=f"fork-start-{finished}").click().run()
    teacher.number_input(key="vae-form-batch").set_value(50)
    teacher.number_input(key="vae-form-ema").set_value(0.995)
    teacher.button(key="vae-form-submit").click().run()
    no_traceback(teacher)
    assert calls == [("resume", finished), ("fork", finished), ("submit", "vae")]
    assert (train_configs[0]["batch_size"], train_configs[0]["ema"]) == (50, 0.995)  # every field reaches the job


# ---- the quality panel ----

def test_the_full_evaluation_and_its_cancel_need_the_token(manager, runs_dir, finished, monkeypatch,
                                                           enable_controls):
    started = []  # the evaluations the page asked the manager for (recorded: a real one takes minutes)
    monkeypatch.setattr(manager, "evaluate", lambda run_id, kind="full", **kw: started.append((run_id, kind)))
    before = tree(runs_dir)
    at = app("app_pages/vae.py", {"run": finished})
    no_traceback(at)
    full = at.button(key=f"quality-full-{finished}")
    assert full.disabled and "teacher token" in full.help
    # an evaluation under way (its status fresh, its process this one): Cancel appears, disabled for a student
    run = manager.store.get(finished)
    status = {"state": "running", "kind": "full", "fraction": 0.3, "message": "AIS", "pid": os.getpid()}
    run.quality_status_path.write_text(json.dumps({**status, "updated": time.time()}))
    busy = app("app_pages/vae.py", {"run": finished})
    assert busy.button(key=f"quality-cancel-{finished}").disabled
    run.quality_status_path.unlink()
    enable_controls()
    at = app("app_pages/vae.py", {"run": finished})
    at.button(key=f"quality-full-{finished}").click().run()
    assert refused(at, "run the full evaluation") and not started and tree(runs_dir) == before
    run.quality_status_path.write_text(json.dumps({**status, "updated": time.time()}))
    before = tree(runs_dir)
    busy = app("app_pages/vae.py", {"run": finished})
    busy.button(key=f"quality-cancel-{finished}").click().run()
    assert refused(busy, "cancel an evaluation") and not run.quality_cancel_path.exists()
    assert tree(runs_dir) == before
    teacher = app("app_pages/vae.py", {"run": finished}, teacher=True)
    teacher.button(key=f"quality-cancel-{finished}").click().run()
    no_traceback(teacher)
    assert run.quality_cancel_path.exists()
    run.quality_status_path.unlink()
    teacher = app("app_pages/vae.py", {"run": finished}, teacher=True)
    teacher.button(key=f"quality-full-{finished}").click().run()
    no_traceback(teacher)
    assert started == [(finished, "full")]


# ---- the Ising form ----

def test_train_on_ising_data_needs_the_token(manager, runs_dir, monkeypatch, enable_controls):
    runs_dir.mkdir(parents=True, exist_ok=True)
    before = tree(runs_dir)
    at = app("app_pages/rbm.py")
    no_traceback(at)
    go = at.button(key="ising-form-submit")
    assert go.disabled and "teacher token" in go.help
    enable_controls()
    at = app("app_pages/rbm.py")
    at.button(key="ising-form-submit").click().run()
    no_traceback(at)
    assert refused(at, "train on Ising data") and tree(runs_dir) == before and not manager.statuses()
    submitted = []
    monkeypatch.setattr(manager, "submit", lambda *a, **kw: submitted.append(kw or a) or "x")
    teacher = app("app_pages/rbm.py", teacher=True)
    teacher.button(key="ising-form-submit").click().run()
    no_traceback(teacher)
    assert len(submitted) == 9  # the default sweep: nine temperatures


# ---- the runs page: upload, Resume, Delete ----

def test_upload_resume_and_delete_on_the_runs_page_need_the_token(manager, runs_dir, finished, monkeypatch,
                                                                   enable_controls):
    ckpt = manager.store.get(finished).checkpoint_path.read_bytes()
    manager.store.get(finished).write_state(state="stopped")  # resumable
    time.sleep(1.1)
    before = tree(runs_dir)
    at = app("app_pages/runs.py", {"run": finished})
    no_traceback(at)
    assert at.file_uploader(key="upload-ckpt").disabled and at.button(key="resume-run").disabled
    assert at.button(key="delete-run").disabled and at.checkbox(key=f"confirm-delete-{finished}").disabled
    enable_controls()
    at = app("app_pages/runs.py", {"run": finished})
    at.file_uploader(key="upload-ckpt").set_value(("vae.safetensors", ckpt, "application/octet-stream")).run()
    at.button(key="import-ckpt").click().run()
    assert refused(at, "import a checkpoint") and tree(runs_dir) == before
    at.button(key="resume-run").click().run()
    assert refused(at, "resume a run") and tree(runs_dir) == before
    at.checkbox(key=f"confirm-delete-{finished}").check().run()
    at.button(key="delete-run").click().run()
    assert refused(at, "delete a run") and tree(runs_dir) == before
    # the teacher: Resume reaches the manager, Delete needs its confirmation (on the server too), then deletes
    resumed = []
    monkeypatch.setattr(manager, "resume", lambda run_id, **kw: resumed.append(run_id))
    teacher = app("app_pages/runs.py", {"run": finished}, teacher=True)
    teacher.button(key="resume-run").click().run()
    assert resumed == [finished]
    teacher.button(key="delete-run").click().run()  # drawn enabled here, but the box is not ticked
    assert manager.store.get(finished).path.exists()
    teacher.checkbox(key=f"confirm-delete-{finished}").check().run()
    teacher.button(key="delete-run").click().run()
    no_traceback(teacher)
    assert not (runs_dir / finished).exists()
    teacher.file_uploader(key="upload-ckpt").set_value(("vae.safetensors", ckpt, "application/octet-stream")).run()
    teacher.button(key="import-ckpt").click().run()
    no_traceback(teacher)
    assert len([p for p in runs_dir.iterdir() if p.is_dir()]) == 1  # the imported run
