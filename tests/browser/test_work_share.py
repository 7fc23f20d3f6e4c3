"""The explorers' work meter (dashboard/work_meter.py) in a real server and Chromium: the tabs of one browser share
one budget, through the XSRF cookie Streamlit gives a browser (AppTest has no cookies, so only a real server shows
that the key holds across tabs), and another browser has its own.

A one-line app on its own server calls the meter with tiny caps, so the budget is spent in one request.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

from st_harness import free_port, stop_server, streamlit_command, wait_healthy  # noqa: E402 (scripts/ on sys.path)

ROOT = Path(__file__).resolve().parents[2]
APP = """
import streamlit as st
from genlib import work_budget
from dashboard import work_meter

work_budget.CAPS = work_budget.Caps(session_flops=100.0, session_window_s=3600.0)  # one request spends it
setting = st.query_params.get("setting", "first")
if work_meter.allowed(setting, 100.0):
    st.write(f"computed {setting}")
"""


@pytest.fixture(scope="module")
def meter_url(tmp_path_factory):
    base = tmp_path_factory.mktemp("work-share")
    (base / "app.py").write_text(APP)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    log = open(base / "streamlit.log", "wb")
    proc = subprocess.Popen(streamlit_command(port, str(base / "app.py")), cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, 90)
        yield url
    finally:
        stop_server(proc, log)


def _open(ctx, url: str, setting: str):
    page = ctx.new_page()
    page.goto(f"{url}/?setting={setting}")
    page.get_by_text(f"computed {setting}").or_(page.get_by_text("Settings shown before appear at once")).wait_for(
        timeout=60_000)
    return page


def test_a_second_tab_of_one_browser_is_refused_and_another_browser_is_not(browser, meter_url):
    mine, other = browser.new_context(), browser.new_context()
    try:
        first = _open(mine, meter_url, "first")
        assert first.get_by_text("computed first").count() == 1
        second = _open(mine, meter_url, "second")  # a second tab of the same browser: the budget is spent
        assert second.get_by_text("computed second").count() == 0
        assert second.get_by_text("This browser (all its tabs together)", exact=False).count() == 1
        elsewhere = _open(other, meter_url, "second")  # another student's browser
        assert elsewhere.get_by_text("computed second").count() == 1
    finally:
        mine.close()
        other.close()
