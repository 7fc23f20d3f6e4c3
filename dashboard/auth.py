"""Teacher mode: when $GENLIB_TEACHER_TOKEN is set, starting, stopping, pausing, continuing, deleting and uploading
need that token, entered once per browser session in the sidebar; everyone else watches and explores.

Without the variable every visitor may do everything, as on a personal machine. The token is compared in constant
time (hmac.compare_digest) against the environment on every check, so changing it and restarting locks everyone out.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

TOKEN_ENV = "GENLIB_TEACHER_TOKEN"
SESSION_KEY = "teacher-token-ok"  # the token this browser session entered (compared anew on every check)
LOCKED_HELP = "Only the teacher can do this on this server: enter the teacher token in the sidebar."


def _token() -> str:
    return os.environ.get(TOKEN_ENV, "")


def teacher_mode() -> bool:
    """True when this server asks for a teacher token."""
    return bool(_token())


def _matches(entered: str | None) -> bool:
    token = _token()
    return bool(token) and isinstance(entered, str) and hmac.compare_digest(entered.encode(), token.encode())


def allowed() -> bool:
    """May this browser session start, stop, pause, continue, delete and upload?"""
    return not teacher_mode() or _matches(st.session_state.get(SESSION_KEY))


def why(help_text: str | None = None) -> str | None:
    """The help of a control: its own text when allowed, else why it is disabled."""
    return help_text if allowed() else LOCKED_HELP


def refuse() -> bool:
    """For a handler: True (after saying why) when this session may not act. A second guard behind disabled buttons."""
    if allowed():
        return False
    st.error(LOCKED_HELP)
    return True


def _unlock() -> None:
    entered = st.session_state.get("teacher-token-input", "")
    if _matches(entered):
        st.session_state[SESSION_KEY] = entered
        st.session_state["teacher-token-bad"] = False
    else:
        st.session_state["teacher-token-bad"] = True
    st.session_state["teacher-token-input"] = ""


def _lock() -> None:
    st.session_state.pop(SESSION_KEY, None)


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
            st.warning("That is not the teacher token.")
