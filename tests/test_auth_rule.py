"""Teacher mode's one rule and its token, without pages: every call in dashboard/ and app_pages/ that writes to the
runs folder or starts a process sits inside a handler wrapped in dashboard.auth.guarded; a token shorter than 16
characters is refused at start-up; each failed attempt makes that session wait longer (counted with an injected clock
and sleep, never wall time); and a quality.cancel left over from an earlier evaluation cancels nothing later."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

GOOD = "correct horse battery staple"  # 28 characters

# method and function names that write to the runs folder or start a process (JobManager, RunStore, Run, the
# quality records, pathlib, subprocess); a call to one of them outside a guarded handler breaks the rule
WRITERS = {"submit", "resume", "pause", "unpause", "stop", "delete", "fork", "set_knobs", "send", "write_state",
           "write_info", "import_checkpoint", "evaluate", "start_evaluation", "evaluate_saved_run", "create_fork", "touch",
           "unlink", "write_text", "write_bytes", "rmtree", "rename", "replace", "mkdir", "atomic_write_json",
           "append_jsonl", "Popen", "run", "call", "check_call", "check_output", "system", "create"}
NOT_WRITERS = {"st", "pg", "dataclasses"}  # st.stop(), pg.run(): Streamlit's own; dataclasses.replace() a copy
IN_MEMORY = ("pool", "executor")  # a thread pool's submit() runs a function of the server, it writes nothing
# the one exception, with its reason: the server copies the shipped pretrained runs in once, when its JobManager is
# made (dashboard.state.get_manager), not on any session's request
ALLOWED = {("dashboard/state.py", "install")}


def _guarded(fn: ast.AST) -> bool:
    for d in getattr(fn, "decorator_list", []):
        if isinstance(d, ast.Call) and ast.unparse(d.func) in ("auth.guarded", "guarded"):
            return True
    return False


def _unguarded_writes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found: list[str] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            guarded = guarded or _guarded(node)
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            base = ast.unparse(f.value) if isinstance(f, ast.Attribute) else ""
            rel = path.relative_to(ROOT).as_posix()
            in_memory = base.lower().endswith(IN_MEMORY)
            if name in WRITERS and base not in NOT_WRITERS and not in_memory and (rel, name) not in ALLOWED \
                    and not guarded:
                found.append(f"{rel}:{node.lineno} {ast.unparse(f)}()")
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return found


def test_every_write_and_process_start_of_the_pages_goes_through_the_one_guard():
    files = sorted([*(ROOT / "dashboard").rglob("*.py"), *(ROOT / "app_pages").glob("*.py"), ROOT / "app.py"])
    assert len(files) > 20
    bad = [hit for p in files for hit in _unguarded_writes(p)]
    assert not bad, ("writes or process starts outside a handler wrapped in dashboard.auth.guarded: " + ", ".join(bad)
                     + " (wrap each in a guarded handler; a call that neither writes to the runs folder nor starts a "
                       "process goes into ALLOWED or IN_MEMORY above, with the reason)")


def test_the_rule_finds_an_unguarded_write(tmp_path):
    """The scan above can fail: an unguarded Stop (as on main before the rule) is reported, a guarded one is not."""
    sample = ROOT / "dashboard" / "_rule_sample_for_test.py"
    try:
        sample.write_text("from dashboard import auth\n\ndef stop(mgr, i):\n    mgr.stop(i)\n\n"
                          "@auth.guarded('stop a run')\ndef ok(mgr, i):\n    mgr.stop(i)\n")
        assert _unguarded_writes(sample) == ["dashboard/_rule_sample_for_test.py:4 mgr.stop()"]
    finally:
        sample.unlink()


def test_the_guard_runs_a_handler_only_for_a_session_that_may_act(monkeypatch):
    import streamlit as st

    from dashboard import auth

    calls = []
    handler = auth.guarded("stop a run")(lambda run_id: calls.append(run_id) or "done")
    assert handler.guarded_action == "stop a run"
    session: dict = {}
    monkeypatch.setattr(st, "session_state", session)
    monkeypatch.setattr(st, "error", lambda *a, **k: calls.append(("error", a[0])))
    monkeypatch.setattr(st, "toast", lambda *a, **k: None)
    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    assert handler("a") == "done"  # no token configured: a personal machine, everyone acts
    monkeypatch.setenv(auth.TOKEN_ENV, GOOD)
    assert handler("b") is None  # token set, not entered: refused, with what to do
    assert calls[-1][0] == "error" and "enter the teacher token in the sidebar" in calls[-1][1]
    assert "to stop a run" in calls[-1][1]
    session[auth.SESSION_KEY] = "correct horse battery stapl"  # one character short: still refused
    assert handler("c") is None
    session[auth.SESSION_KEY] = GOOD
    assert handler("d") == "done"
    assert [c for c in calls if not isinstance(c, tuple)] == ["a", "d"]


# ---- the token ----

def test_a_short_token_is_refused_at_start_up(monkeypatch):
    from dashboard import auth

    assert auth.token_problem("x" * 15) and "at least 16" in auth.token_problem("x" * 15)
    assert auth.token_problem("x" * 16) is None and auth.token_problem("") is None
    monkeypatch.setenv(auth.TOKEN_ENV, "letmein")
    monkeypatch.setattr("streamlit.session_state", {auth.SESSION_KEY: "letmein"})
    assert not auth.allowed()  # even the one who typed it: a short token unlocks nothing
    env = {k: v for k, v in __import__("os").environ.items()}
    out = subprocess.run([sys.executable, "-m", "dashboard.auth"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1  # `make run` stops here, saying why
    assert "GENLIB_TEACHER_TOKEN is 7 characters long; use at least 16" in out.stderr
    env[auth.TOKEN_ENV] = GOOD
    assert subprocess.run([sys.executable, "-m", "dashboard.auth"], cwd=ROOT, env=env, capture_output=True,
                          timeout=120).returncode == 0
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.index("-m dashboard.auth") < makefile.index("-m streamlit run serve.py")


def test_a_short_token_shows_its_error_on_every_page_and_serves_no_action(dashboard_env, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import APP

    monkeypatch.setenv("GENLIB_TEACHER_TOKEN", "letmein")
    for page in ("app_pages/home.py", "app_pages/vae.py", "app_pages/runs.py"):
        at = AppTest.from_file(APP, default_timeout=60)
        at.switch_page(page)
        at.run()
        assert not at.exception, at.exception
        assert any("too short" in e.value or "at least 16" in e.value for e in at.error)
        assert not at.button and not at.text_input  # no control of any page is drawn


class FakeTime:
    """A clock that only moves when slept on: the waits a session is made to sit through, without waiting."""

    def __init__(self) -> None:
        self.now, self.slept = 1000.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_failed_token_attempts_slow_that_session_down(monkeypatch):
    from dashboard import auth

    monkeypatch.setenv(auth.TOKEN_ENV, GOOD)
    t = FakeTime()
    session: dict = {}
    for _ in range(9):  # nine wrong guesses in a row, each sent as soon as the last was answered
        assert not auth.attempt("guess", session, clock=t.clock, sleep=t.sleep)
    assert t.slept == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]  # doubling, capped at MAX_DELAY_S
    other: dict = {}
    assert not auth.attempt("guess", other, clock=t.clock, sleep=t.sleep)
    assert t.slept[-1] == 30.0 and len(t.slept) == 8  # another session's first try does not wait
    t.now += 3600  # a session that waited long enough is not made to wait again...
    assert auth.attempt(GOOD, session, clock=t.clock, sleep=t.sleep)  # ...and the right token still opens it
    assert len(t.slept) == 8 and session[auth.SESSION_KEY] == GOOD and session[auth.FAILURES_KEY] == 0
    fresh: dict = {}
    assert not auth.attempt("a", fresh, clock=t.clock, sleep=t.sleep)
    assert auth.attempt(GOOD, fresh, clock=t.clock, sleep=t.sleep)  # even the teacher's typo costs the second
    assert t.slept[-1] == 1.0


def test_the_sidebar_box_makes_a_guessing_session_wait(dashboard_env, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import APP
    from dashboard import auth

    monkeypatch.setenv(auth.TOKEN_ENV, GOOD)
    waits: list[float] = []
    monkeypatch.setattr(auth, "_pause", waits.append)  # the box's sleep, counted instead of slept
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("app_pages/home.py")
    at.run()
    for guess in ("a", "b", "c"):
        at.text_input(key="teacher-token-input").input(guess).run()
    assert len(waits) == 2 and 0 < waits[0] < waits[1] <= auth.MAX_DELAY_S  # grows with each failure
    assert any("not the teacher token" in w.value for w in at.sidebar.warning)
    assert at.session_state[auth.FAILURES_KEY] == 3


# ---- a leftover cancel ----

def test_a_leftover_cancel_file_cancels_no_later_evaluation(tmp_path, monkeypatch):
    from genlib.quality import records
    from genlib.runs.store import RunStore

    run = RunStore(tmp_path).create({"model": "vae"})
    run.quality_cancel_path.touch()  # a Cancel pressed as an earlier evaluation ended
    quality = records.RunQuality(run, data=None)
    assert not quality.evaluator.cancelled()  # the cheap evaluations while training go on
    monkeypatch.setattr(records, "evaluate_saved_run", lambda *a, **k: None)
    handle = records.start_evaluation(run, "full", backend="thread")
    handle.join(10)
    assert not run.quality_cancel_path.exists()  # a new evaluation starts without the old request
    seen = []

    def evaluate(model, settings):  # the teacher presses Cancel during the end-of-run evaluation: that one stops
        run.quality_cancel_path.touch()
        seen.append(quality.evaluator.cancelled())
        return {}

    monkeypatch.setattr(quality.evaluator, "evaluate", evaluate)
    quality.final(None, step=30)
    assert seen == [True]
