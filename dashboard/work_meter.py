"""A browser tab's share of the server's sampling work: each new chain setting it asks for is charged to its session's
genlib.work_budget.WorkMeter, and one over the budget waits, with a message, instead of running.

Layout only: the prices come from genlib.work_budget's cost functions; a setting the tab saw before (served from
the cache) is free.
"""

from __future__ import annotations

import time
from typing import Hashable

import streamlit as st

METER_KEY = "work-meter"
SEEN_KEY = "work-meter-seen"
MAX_SEEN = 256  # settings remembered per tab as already paid for


def allowed(setting: Hashable, flops: float) -> bool:
    """Whether this tab may compute `setting` (worth `flops`) now; when not, the page says when it can."""
    from genlib.work_budget import human_flops, session_meter

    seen: dict = st.session_state.setdefault(SEEN_KEY, {})
    if setting in seen:
        return True
    meter = st.session_state.setdefault(METER_KEY, session_meter())
    wait = meter.charge(flops, time.monotonic())
    if wait > 0:
        st.warning(f"This tab has asked the server for about {human_flops(meter.level)} of sampling in the last "
                   f"few minutes, its share of a class's server: this setting ({human_flops(flops)}) can run in "
                   f"{wait:.0f} s. Settings shown before appear at once.", icon=":material/hourglass_top:")
        return False
    seen[setting] = True
    if len(seen) > MAX_SEEN:
        seen.pop(next(iter(seen)))
    return True
