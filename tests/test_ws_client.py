"""The load test's browserless client (scripts/st_ws_client.py) against a real `streamlit run` server on a tiny app:
it must load the page to script_finished, see the widgets by key and the images by container, move a slider inside a
fragment and get a new (fetched) image from that fragment's rerun, follow a fragment's auto-rerun, and report an
exception shown in the page. Skipped only if the server cannot start."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "scripts") not in sys.path:
    sys.path.append(str(ROOT / "scripts"))
from st_harness import (STICKY_COOKIE, free_port, nginx_path, start_app_servers,  # noqa: E402
                        start_nginx, sticky_key, stop_server, streamlit_command, wait_healthy)
from st_ws_client import Session, user_key  # noqa: E402

APP = '''
import numpy as np
import streamlit as st

st.title("tiny")
st.checkbox("boom", key="boom")
st.session_state.setdefault("presses", [])
if st.button("press me", key="press"):
    st.session_state.presses.append("press")
if st.button("no key"):
    st.session_state.presses.append("unkeyed")
st.button("never", key="never", disabled=True)
st.write("presses " + ",".join(st.session_state.presses))
if st.session_state.boom:
    raise ValueError("boom was ticked")


@st.fragment
def explorer():
    v = st.slider("v", 0.0, 1.0, 0.0, 0.25, key="v")
    with st.container(key="img"):
        st.image(np.full((8, 8), v, dtype=np.float32), output_format="PNG")


@st.fragment(run_every=0.3)
def ticker():
    st.session_state.ticks = st.session_state.get("ticks", 0) + 1
    st.write(f"tick {st.session_state.ticks}")


explorer()
ticker()
'''

# behind the proxy: which server drew the page, and an image from that server's media store
PROXIED_APP = '''
import numpy as np
import streamlit as st

st.write(f"served by port {st.get_option('server.port')}")
v = st.slider("v", 0.0, 1.0, 0.0, 0.25, key="v")
with st.container(key="img"):
    st.image(np.full((8, 8), v, dtype=np.float32), output_format="PNG")
'''


@pytest.fixture(scope="module")
def tiny_url(tmp_path_factory):
    base = tmp_path_factory.mktemp("ws")
    (base / "app.py").write_text(APP)
    port = free_port()
    log = open(base / "log.txt", "wb")
    proc = subprocess.Popen(streamlit_command(port, "app.py"), cwd=base, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, 60)
    except (RuntimeError, TimeoutError) as e:
        proc.kill()
        proc.wait(10)
        log.close()
        pytest.skip(f"the streamlit server did not start: {e}; log: {(base / 'log.txt').read_text()[-500:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_user_key_is_read_from_element_ids():
    assert user_key("$$ID-0123abcd-vae-z0-vae-2025-ab") == "vae-z0-vae-2025-ab"
    assert user_key("$$ID-0123abcd-None") is None
    assert user_key("plain") is None


def test_a_session_loads_the_page_moves_a_slider_and_follows_auto_reruns(tiny_url):
    async def scenario():
        async with Session(tiny_url, timeout=30) as s:
            run = await s.open()
            assert run.status == "FINISHED_SUCCESSFULLY"
            assert {"boom", "v"} <= s.widget_keys()
            _, slider = s.widget("v")
            assert slider.kind == "slider" and slider.fragment_id  # inside the explorer fragment
            first = s.image_urls("img")
            assert len(first) == 1 and first[0].startswith("/media/") and s.images_fetched >= 1
            assert s.image_bytes > 60 and s.images_gone == 0  # an 8x8 PNG came back over HTTP
            assert s.auto_reruns and min(s.auto_reruns.values()) == pytest.approx(0.3)

            dt, moved = await s.move_slider("v", 0.5, "img")
            # (relabelled FINISHED_EARLY_FOR_RERUN when the ticker's run starts before its messages went out)
            assert moved.status in ("FINISHED_FRAGMENT_RUN_SUCCESSFULLY", "FINISHED_EARLY_FOR_RERUN")
            assert moved.fragment_id == slider.fragment_id
            assert dt is not None and 0 < dt <= moved.seconds
            second = s.image_urls("img")
            assert second and second != first
            same, _ = await s.move_slider("v", 0.5, "img")  # the same value: the same image, so no latency sample
            assert same is None

            before = s.messages
            await asyncio.sleep(1.5)  # the ticker fragment reruns every 0.3 s: the server keeps sending
            assert s.messages > before + 2
            assert s.exceptions == []
            with pytest.raises(KeyError, match="no widget with key 'nope'"):
                s.widget("nope")

            run = await s.set_widget("boom", True)  # the script raises: an exception element in the page
            assert run.status == "FINISHED_SUCCESSFULLY"
            assert len(s.exceptions) == 1 and "boom was ticked" in s.exceptions[0]

    # in its own thread: in a full test session Playwright's sync API keeps an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()


def test_a_hostile_session_presses_every_enabled_button_once(tiny_url):
    async def scenario():
        async with Session(tiny_url, timeout=30) as s:
            await s.open()
            pressed = await s.press_every_button()
            assert len(pressed) == 2 and "press" in pressed  # the keyed one by its key, the other by its id
            assert "never" not in pressed  # disabled: a student cannot press it
            await s.move_slider("v", 0.25, "img")  # a later run: the triggers are not sent again
            await s.open()
            texts = [el.proto.body for el in s.elements.values() if el.kind == "markdown"]
            assert "presses press,unkeyed" in texts, texts

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()


def test_the_load_test_script_documents_its_modes():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "load_test.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--ws-sessions" in out.stdout and "--browser-sessions" in out.stdout and "--out" in out.stdout
    assert "--hostile-sessions" in out.stdout and "--servers" in out.stdout


def test_a_session_with_the_sticky_cookie_stays_on_its_server_behind_nginx(tmp_path):
    """Two app servers behind deploy/nginx-genlib.conf (what load_test.py --servers 2 drives): a session sends its
    genlib_backend cookie on the websocket's upgrade, so it lands on the server the cookie picks, and with every
    image request, so each image comes from the media store of the server that drew it (a request without the
    cookie gets a fresh random key from the proxy and, half the time, the other server's 404)."""
    if nginx_path() is None:
        if os.environ.get("GENLIB_REQUIRE_NGINX", "") not in ("", "0", "false", "no"):
            pytest.fail("GENLIB_REQUIRE_NGINX=1 but nginx is not installed (apt-get install nginx)")
        pytest.skip("nginx not found: apt-get install nginx")
    (tmp_path / "app.py").write_text(PROXIED_APP)
    servers = start_app_servers(2, dict(os.environ), tmp_path, tmp_path, timeout=60,
                                command=lambda port: streamlit_command(port, "app.py"))
    ports = [port for _, _, port in servers]
    try:
        nginx, url, log = start_nginx(tmp_path, ports)
        try:
            cookies = {port: f"{STICKY_COOKIE}={sticky_key(url, port)}" for port in ports}

            async def scenario(port: int) -> None:
                async with Session(url, timeout=30, cookie=cookies[port]) as s:
                    await s.open()
                    texts = [el.proto.body for el in s.elements.values() if el.kind == "markdown"]
                    assert f"served by port {port}" in texts, texts
                    for value in (0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25, 0.0):
                        dt, _ = await s.move_slider("v", value, "img")
                        assert dt is not None
                    assert s.images_gone == 0 and s.images_fetched >= 9  # the first image and one per move
                    assert s.exceptions == []

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                for port in ports:
                    pool.submit(asyncio.run, scenario(port)).result()
        finally:
            stop_server(nginx, log)
    finally:
        for proc, proc_log, _ in servers:
            stop_server(proc, proc_log)
