"""A browser's share of the server's sampling work: each new chain setting a tab asks for is charged to its browser
(every tab of it together) and to the whole server, in genlib.work_budget.SharedMeters; one over either budget waits,
with a message that says which, instead of running.

Layout only: the prices and the buckets come from genlib.work_budget; a setting the browser saw before (served from
the cache) is free. The browser is told apart by Streamlit's XSRF cookie, which every tab of one browser sends; a
client that sends none (XSRF protection off, a bare websocket) is metered per tab.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Hashable, Mapping

import streamlit as st
from streamlit.web.server.starlette.starlette_app_utils import decode_xsrf_token_string
from streamlit.web.server.starlette.starlette_server_config import XSRF_COOKIE_NAME

from genlib import work_budget
from genlib.work_budget import Caps, Refusal, SharedMeters, human_flops

TAB_KEY = "work-meter-tab"


@st.cache_resource(show_spinner=False, max_entries=2)
def shared_meters(caps: Caps) -> SharedMeters:
    """The server's one store of meters (a new one only when the caps change: tests lower them)."""
    return SharedMeters(caps)


def meter_key(cookies: Mapping[str, str], tab: str) -> tuple[str, str]:
    """Whose bucket a tab draws from: ("browser", a digest of the XSRF cookie's token) or, without a readable cookie,
    ("tab", `tab`). The cookie's text differs from tab to tab (Streamlit masks the token afresh in every response
    that sets it, "2|mask|masked token|time"): the token under the mask is what one browser's tabs share. Only its
    digest is kept, never the token."""
    token, _ = decode_xsrf_token_string(cookies.get(XSRF_COOKIE_NAME, ""))
    if not token:
        return "tab", tab
    return "browser", hashlib.sha256(token).hexdigest()


def charge(cookies: Mapping[str, str], tab: str, setting: Hashable, flops: float) -> tuple[Refusal | None, tuple]:
    """Charge `setting` (worth `flops`) to the browser these cookies name (else to `tab`) and to the server: (None,
    key) when it may run now, else (the Refusal, key). The page's `allowed` and the GAN grid route both call it."""
    key = meter_key(cookies, tab)
    caps = work_budget.CAPS  # read at each request, not bound at import: a test lowers the caps
    return shared_meters(caps).charge(key, setting, flops, time.monotonic()), key


def refusal_message(refusal: Refusal, key: tuple, flops: float) -> str:
    """What the page says when a setting waits: whose share is used up, how much, and when it can run."""
    wait = f"{refusal.wait_s:.0f} s"
    if refusal.scope == "server":
        return (f"The server's explorer work is fully used for the next {wait}: every browser's new settings "
                f"together have asked for about {human_flops(refusal.level)} in the last few minutes, what this "
                f"server gives a class. This setting ({human_flops(flops)}) can run then. Settings shown before "
                "appear at once.")
    who = "This browser (all its tabs together)" if key[0] == "browser" else "This tab"
    return (f"{who} has asked the server for about {human_flops(refusal.level)} of sampling in the last few "
            f"minutes, its share of a class's server: this setting ({human_flops(flops)}) can run in {wait}. "
            "Settings shown before appear at once.")


def allowed(setting: Hashable, flops: float) -> bool:
    """Whether this tab may compute `setting` (worth `flops`) now; when not, the page says when it can."""
    tab = st.session_state.setdefault(TAB_KEY, uuid.uuid4().hex)
    refusal, key = charge(st.context.cookies, tab, setting, flops)
    if refusal is None:
        return True
    st.warning(refusal_message(refusal, key, flops), icon=":material/hourglass_top:")
    return False
