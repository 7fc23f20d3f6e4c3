"""Teacher mode: when $GENLIB_TEACHER_TOKEN is set, every action that writes to the runs folder or starts a process
needs that token, entered once per browser session in the sidebar; everyone else watches and explores.

The one rule lives here: each such handler is wrapped in `guarded(action)`, which checks this session on the server
before the handler runs (a disabled button is only a courtesy: a client can send any widget event), and otherwise
says what to do. tests/test_auth_rule.py checks that every call that writes or starts something in dashboard/ and
app_pages/ sits inside a guarded handler.

Without the variable every visitor may do everything, as on a personal machine. The token is compared in constant
time (hmac.compare_digest) against the environment on every check, so changing it and restarting locks everyone out;
a token shorter than MIN_TOKEN_CHARS is refused at start-up (and locks every action); each failed attempt makes that
session wait longer before its next one (FIRST_DELAY_S doubling, at most MAX_DELAY_S).
"""

from __future__ import annotations

import functools
import hmac
import sys
import time
from typing import Any, Callable, MutableMapping, TypeVar

import streamlit as st

from genlib.settings import TEACHER_TOKEN_ENV as TOKEN_ENV, current as current_settings

MIN_TOKEN_CHARS = 16  # secrets.token_urlsafe(16) gives 22; a short word falls to guessing in a lecture
FIRST_DELAY_S = 1.0  # the wait before the attempt after the first failure; doubles with each further failure...
MAX_DELAY_S = 30.0  # ...up to this
SESSION_KEY = "teacher-token-ok"  # the token this browser session entered (compared anew on every check)
FAILURES_KEY = "teacher-token-failures"  # failed attempts of this session
NEXT_TRY_KEY = "teacher-token-next"  # the clock time before which this session's next attempt waits
LOCKED_HELP = "Only the teacher can do this on this server: enter the teacher token in the sidebar."

F = TypeVar("F", bound=Callable[..., Any])


def _token() -> str:
    return current_settings().teacher_token


def teacher_mode() -> bool:
    """True when this server asks for a teacher token."""
    return bool(_token())


def token_problem(token: str | None = None) -> str | None:
    """Why the configured token (or `token`) is refused, or None when it is fine or unset."""
    token = _token() if token is None else token
    if token and len(token) < MIN_TOKEN_CHARS:
        return (f"${TOKEN_ENV} is {len(token)} characters long; use at least {MIN_TOKEN_CHARS}, for example "
                f"export {TOKEN_ENV}=\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(16))')\", and "
                "restart the server. Until then nobody can start, stop or delete anything here.")
    return None


def _matches(entered: str | None) -> bool:
    token = _token()
    return (bool(token) and token_problem(token) is None and isinstance(entered, str)
            and hmac.compare_digest(entered.encode(), token.encode()))


def allowed() -> bool:
    """May this browser session write to the runs folder or start a process?"""
    if not teacher_mode():
        return True
    return _matches(st.session_state.get(SESSION_KEY))


def why(help_text: str | None = None) -> str | None:
    """The help of a control: its own text when allowed, else why it is disabled."""
    return help_text if allowed() else LOCKED_HELP


def refusal(action: str | None = None) -> str:
    """What a refused session reads: what was refused and what to do."""
    what = f"to {action}" if action else "for that"
    if token_problem():
        return f"Not done: the teacher token of this server is too short, so nobody may act. {token_problem()}"
    return (f"Not done: the teacher token is needed {what}. If you are the teacher, enter the teacher token in "
            "the sidebar; everyone else can watch the runs and explore the models.")


def refuse(action: str | None = None) -> bool:
    """True (after saying why) when this session may not act; for `guarded` and for code that has no handler."""
    if allowed():
        return False
    text = refusal(action)
    st.error(text, icon=":material/lock:")
    st.toast(text, icon=":material/lock:")  # stays visible where a refreshing fragment redraws the error away
    return True


def guarded(action: str) -> Callable[[F], F]:
    """THE rule: `@guarded("stop a run")` on every handler that writes to the runs folder or starts a process.

    The wrapped handler runs only when this session may act (no teacher token configured, or this session entered
    it); otherwise the page says what to do and the handler returns None without touching anything.
    """
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def handler(*args: Any, **kwargs: Any) -> Any:
            if refuse(action):
                return None
            return fn(*args, **kwargs)

        handler.guarded_action = action  # type: ignore[attr-defined]
        return handler  # type: ignore[return-value]
    return wrap


# ---- entering the token: constant-time compare, and a growing wait after each failure ----

def delay_after(failures: int) -> float:
    """Seconds a session waits before its next attempt after `failures` failed ones (0, 1, 2, 4, ... MAX_DELAY_S)."""
    if failures <= 0:
        return 0.0
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** (failures - 1))


def attempt(entered: str, session: MutableMapping[str, Any], *, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> bool:
    """Check one entered token for one session: first wait out the delay earned by its failed attempts (on the
    server, in this session's own script thread, so other sessions are not slowed), then compare in constant time.
    Unlocks the session and returns True on a match; counts a failure and returns False otherwise."""
    wait = float(session.get(NEXT_TRY_KEY, 0.0)) - clock()
    if wait > 0:
        sleep(wait)
    if _matches(entered):
        session[SESSION_KEY] = entered
        session[FAILURES_KEY] = 0
        session[NEXT_TRY_KEY] = 0.0
        return True
    failures = int(session.get(FAILURES_KEY, 0)) + 1
    session[FAILURES_KEY] = failures
    session[NEXT_TRY_KEY] = clock() + delay_after(failures)
    return False


def _pause(seconds: float) -> None:
    """The sleep of a token attempt (a test replaces it to count the waits instead of sitting through them)."""
    time.sleep(seconds)


def _unlock() -> None:
    entered = st.session_state.get("teacher-token-input", "")
    st.session_state["teacher-token-input"] = ""
    st.session_state["teacher-token-bad"] = not attempt(entered, st.session_state, sleep=_pause)


def _lock() -> None:
    st.session_state.pop(SESSION_KEY, None)


def stop_if_misconfigured() -> None:
    """At the top of app.py: a too-short token shows its error on every page and nothing else is served (the
    server's log says it too, and `make run` refuses to start: `python -m dashboard.auth`)."""
    problem = token_problem()
    if problem is None:
        return
    print(f"genlib: {problem}", file=sys.stderr, flush=True)
    st.error(f"This server is misconfigured: {problem}", icon=":material/lock:")
    st.stop()


def render() -> None:
    """The sidebar's teacher box (only in teacher mode): a token field, or who is unlocked and a Lock button."""
    if not teacher_mode():
        return
    with st.sidebar:
        if allowed():
            st.caption("Teacher controls unlocked in this browser.")
            st.button("Lock teacher controls", key="teacher-lock", on_click=_lock, icon=":material/lock:")
            return
        st.caption("Watching: starting, stopping and deleting runs need the teacher token.")
        st.text_input("Teacher token", type="password", key="teacher-token-input", on_change=_unlock,
                      help="Asked once per browser session; only the teacher has it.")
        if st.session_state.get("teacher-token-bad"):
            failures = int(st.session_state.get(FAILURES_KEY, 0))
            st.warning("That is not the teacher token."
                       + (f" The next try waits {delay_after(failures):.0f} s." if failures > 1 else ""))


def main() -> int:
    """`python -m dashboard.auth`: exit 1 with the reason when the configured teacher token would be refused
    (`make run` calls it before starting the server)."""
    problem = token_problem()
    if problem:
        print(f"Not starting the dashboard: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
