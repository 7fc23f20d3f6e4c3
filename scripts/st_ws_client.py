"""A browserless Streamlit session: speaks Streamlit 1.67's own websocket protocol (BackMsg / ForwardMsg protobufs on
/_stcore/stream, streamlit/web/server/starlette/starlette_websocket.py) so that a load test can hold many sessions on
a small machine, where each Chromium tab would cost a core's worth of rendering.

It does for one tab what the browser's frontend does for the server: it connects with the `streamlit` subprotocol,
sends `rerun_script` with the page's URL name and query string, keeps the element tree from the `delta` messages
(keyed by delta path, pruned of stale elements when a full run finishes, as the frontend does), re-runs fragments on
their `auto_rerun` interval (st.fragment(run_every=...)), fetches every image it is sent from /media/, and changes a
widget by sending its new value in `widget_states` with the widget's fragment id. It renders nothing and sends only
the widget values it changed (the server keeps the others at their last values).

    python scripts/st_ws_client.py http://127.0.0.1:8501 vae "run=<run id>"   # prints the widgets and images
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

WIDGETS = ("slider", "selectbox", "multiselect", "number_input", "checkbox", "radio", "button", "text_input",
           "toggle", "select_slider", "plotly_chart", "file_uploader", "text_area", "button_group", "color_picker",
           "date_input", "time_input", "download_button", "chat_input", "camera_input", "audio_input")
ID_PREFIX = "$$ID-"  # streamlit.elements.lib.utils: element ids are "$$ID-<hash>-<user key>"
FINISHED = ForwardMsg.ScriptFinishedStatus


def user_key(element_id: str) -> str | None:
    """The `key=` a widget or keyed container was given, from its element id (None without one)."""
    if not element_id.startswith(ID_PREFIX):
        return None
    parts = element_id.split("-", 2)  # "$$ID", hash, user key (which may itself contain dashes)
    return parts[2] if len(parts) == 3 and parts[2] != "None" else None


@dataclass
class Element:
    """One element of the page: its kind ('slider', 'imgs', 'block', ...), protobuf, fragment, and the full run
    (generation) that last sent it."""

    kind: str
    proto: Any
    fragment_id: str
    generation: int


@dataclass
class Run:
    """What one script run (full or fragment) produced: its end status and the seconds from request to end."""

    status: str
    seconds: float
    fragment_id: str = ""
    sent: float = 0.0  # time.perf_counter() when the request went out: the start of `seconds`


@dataclass
class Session:
    """One Streamlit session over a websocket. Use as `async with Session(url) as s: await s.open("vae", "run=..")`."""

    url: str  # http://host:port
    timeout: float = 60.0
    # a Cookie header sent on the websocket's upgrade and with every image GET, e.g. "genlib_backend=k3": behind the
    # sticky proxy (deploy/nginx-genlib.conf) it picks the app server, whose media store holds the session's images
    cookie: str = ""
    fetch_images: bool = True
    elements: dict[tuple[int, ...], Element] = field(default_factory=dict)
    exceptions: list[str] = field(default_factory=list)
    images_fetched: int = 0
    images_gone: int = 0  # image URLs that answered 404: a later run had replaced them before the fetch
    overtaken: int = 0  # widget changes whose fragment run was replaced by a full rerun of the page
    image_bytes: int = 0
    messages: int = 0
    page_hash: str = ""
    pages: dict[str, str] = field(default_factory=dict)  # url pathname -> page script hash (from `navigation`)
    auto_reruns: dict[str, float] = field(default_factory=dict)  # fragment id -> interval s

    def __post_init__(self) -> None:
        self._ws = None
        self._reader: asyncio.Task | None = None
        self._timers: dict[str, asyncio.Task] = {}
        self._generation = 0
        self._states: dict[str, Any] = {}  # widget id -> WidgetState we set (sent with every rerun)
        self._query = ""
        self._page_name = ""
        self._finished: asyncio.Condition | None = None
        self._finish_log: list[tuple[float, str, tuple[str, ...]]] = []  # (time, status, fragment ids)
        self.image_log: list[tuple[float, tuple[int, ...], list[str]]] = []  # (time fetched, delta path, urls)
        self._closed: BaseException | None = None

    # ---- connection ----
    async def __aenter__(self) -> Session:
        from websockets.asyncio.client import connect

        ws_url = self.url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + "/_stcore/stream"
        # first subprotocol entry: the one selected; the server reads an XSRF token and a session id from entries
        # 2 and 3 (none here). No Origin header: the server allows non-browser clients without one.
        self._ws = await asyncio.wait_for(
            connect(ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=self.timeout,
                    ping_interval=None, additional_headers={"Cookie": self.cookie} if self.cookie else None),
            self.timeout)
        self._finished = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing: the reader's end is not news
                pass

    # ---- requests ----
    async def open(self, page_name: str = "", query: str = "") -> Run:
        """Load a page as a fresh tab would (page_name is its URL path, '' for the default page); wait for the run."""
        self._page_name, self._query = page_name, query
        self._states.clear()
        self._finish_log.clear()  # a new page: the logs start again, so a long session holds only one page's
        self.image_log.clear()
        self.page_hash = self.pages.get(page_name, "")
        return await self._rerun(fragment_id="")

    async def set_widget(self, key: str, value: Any) -> Run:
        """Give the widget with `key` a new value (a slider: a number), as a user would; wait for the run it causes."""
        wid, el = self.widget(key)
        state = _widget_state(wid, el, value)
        self._states[wid] = state
        return await self._rerun(fragment_id=el.fragment_id)

    async def press_every_button(self) -> list[str]:
        """Press each enabled button on the page once, as a student clicking everything would (a trigger is sent
        with one run only, as the frontend does); returns the keys (or ids) pressed. Buttons that a press made
        disappear are skipped."""
        pressed = []
        for wid in [getattr(el.proto, "id", "") for el in self.widgets("button")]:
            el = next((e for e in self.widgets("button") if getattr(e.proto, "id", "") == wid), None)
            if el is None or getattr(el.proto, "disabled", False):
                continue
            self._states[wid] = _widget_state(wid, el, True)
            try:
                await self._rerun(fragment_id=el.fragment_id)
            finally:
                self._states.pop(wid, None)  # a trigger is true for the run it caused only
            pressed.append(user_key(wid) or wid)
        return pressed

    async def move_slider(self, slider_key: str, value: float, image_key: str) -> tuple[float | None, Run]:
        """Set a slider and time it: (seconds until the image in the container `image_key` was replaced by a new one
        and fetched, None if the run did not change it; the run it caused)."""
        old = self.image_urls(image_key)
        mark = len(self.image_log)
        run = await self.set_widget(slider_key, value)
        root = self._block_path(image_key)
        for t, path, urls in self.image_log[mark:]:  # the image deltas come before their run's script_finished
            if root is not None and path[:len(root)] == root and urls != old:
                return t - run.sent, run  # from the same instant as run.seconds
        return None, run

    async def _rerun(self, *, fragment_id: str, auto: bool = False) -> Run:
        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = self._query
        cs.page_name = self._page_name
        cs.page_script_hash = self.page_hash
        cs.fragment_id = fragment_id
        cs.is_auto_rerun = auto
        cs.widget_states.widgets.extend(self._states.values())
        cs.context_info.timezone = "UTC"
        cs.context_info.url = f"{self.url}/{self._page_name}" + (f"?{self._query}" if self._query else "")
        t0 = time.perf_counter()
        mark = len(self._finish_log)
        await self._ws.send(msg.SerializeToString())
        if auto:
            return Run("", 0.0, fragment_id, t0)
        status = await self._wait_finished(mark, fragment_id)
        return Run(status, time.perf_counter() - t0, fragment_id, t0)

    async def _wait_finished(self, mark: int, fragment_id: str) -> str:
        """The status of the first run to finish after `mark` that ran `fragment_id` ('' = a full run);
        'OVERTAKEN_BY_FULL_RUN' when a full rerun of the page started and ended first."""
        def done() -> str | None:
            started = False  # a full run (new_session) started after the request
            for _, status, frags in self._finish_log[mark:]:
                if status == "NEW_SESSION" and frags:
                    continue  # a fragment run started
                if fragment_id:
                    if status == "NEW_SESSION":
                        # a full rerun started: it redraws this fragment too, and the server drops a fragment
                        # rerun that arrives while the fragment is not registered (app_session.request_rerun)
                        started = True
                        continue
                    if started and (not frags or status in ("FINISHED_SUCCESSFULLY",
                                                            "FINISHED_FRAGMENT_RUN_SUCCESSFULLY")):
                        return "OVERTAKEN_BY_FULL_RUN"
                    # a fragment run is never preempted by another fragment's, but when the next run starts before
                    # its messages went out, the server relabels its script_finished FINISHED_EARLY_FOR_RERUN and
                    # keeps its deltas (streamlit/runtime/forward_msg_queue.py): either way, it ran
                    if fragment_id in frags:
                        return status
                elif status == "NEW_SESSION":
                    started = True
                elif (not frags or status == "FINISHED_SUCCESSFULLY") and status != "FINISHED_EARLY_FOR_RERUN":
                    return status  # (an interrupted full run is followed by another)
                elif started and status == "FINISHED_FRAGMENT_RUN_SUCCESSFULLY":
                    # fragments run only after the full run that started ended, so it did, even though its own
                    # script_finished never came back as such (seen under load)
                    return "FINISHED_SUCCESSFULLY"
            return None

        try:
            async with self._finished:
                await asyncio.wait_for(
                    self._finished.wait_for(lambda: done() is not None or self._closed is not None), self.timeout)
        except asyncio.TimeoutError:
            since = [(status, frags) for _, status, frags in self._finish_log[mark:]][-4:]
            raise TimeoutError(f"no end of the {'run of fragment ' + fragment_id if fragment_id else 'full run'} "
                               f"within {self.timeout:g} s; runs that ended since: {since}") from None
        status = done()
        if status is None:
            raise ConnectionError(f"the websocket closed: {self._closed!r}")
        self.overtaken += status == "OVERTAKEN_BY_FULL_RUN"
        return status

    # ---- what the page shows ----
    def widget(self, key: str) -> tuple[str, Element]:
        """(element id, element) of the widget created with `key=key`; KeyError listing the keys there are."""
        for el in self.elements.values():
            wid = getattr(el.proto, "id", "")
            if el.kind in WIDGETS and user_key(wid) == key:
                return wid, el
        raise KeyError(f"no widget with key {key!r} on the page; keys: {sorted(self.widget_keys())}")

    def slider(self, key: str) -> tuple[float, float, float, float]:
        """(value, min, max, step) of a single-value slider: the value this client set, else the page's."""
        wid, el = self.widget(key)
        if el.kind != "slider":
            raise ValueError(f"the widget {key!r} is a {el.kind}, not a slider")
        p = el.proto
        sent = self._states.get(wid)
        value = sent.double_array_value.data[0] if sent is not None else (p.value if p.set_value else p.default)[0]
        return value, p.min, p.max, p.step

    def widget_keys(self) -> set[str]:
        return {k for el in self.elements.values() if el.kind in WIDGETS
                and (k := user_key(getattr(el.proto, "id", ""))) is not None}

    def widgets(self, kind: str | None = None) -> list[Element]:
        return [el for el in self.elements.values() if el.kind in WIDGETS and (kind is None or el.kind == kind)]

    def component_data(self, key: str) -> dict[str, Any] | None:
        """The JSON data of the components-v2 element created with `key=key` (e.g. the GAN sliders' route URL), or
        None when the page has none."""
        for el in self.elements.values():
            if el.kind == "bidi_component" and user_key(el.proto.id) == key and el.proto.json:
                return json.loads(el.proto.json)
        return None

    async def get(self, path: str) -> tuple[float, int, bytes]:
        """(seconds, HTTP status, body) of a GET of `path` on this session's server, as its browser (its cookie)."""
        t0 = time.perf_counter()
        status, body = await asyncio.wait_for(_get(self.url.rstrip("/") + path, self.cookie), self.timeout)
        return time.perf_counter() - t0, status, body

    def image_urls(self, container_key: str | None = None, *, fetched: bool = False) -> list[str]:
        """URLs of the images on the page, or only of those inside the keyed container `container_key`."""
        root = () if container_key is None else self._block_path(container_key)
        if root is None:
            return []
        return [img.url for path, el in sorted(self.elements.items())
                if el.kind == "imgs" and path[:len(root)] == root for img in el.proto.imgs]

    def _block_path(self, container_key: str) -> tuple[int, ...] | None:
        return next((p for p, el in self.elements.items()
                     if el.kind == "block" and user_key(el.proto.id) == container_key), None)

    # ---- the reader: ForwardMsgs in, state updated ----
    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                msg = ForwardMsg()
                msg.ParseFromString(raw)
                self.messages += 1
                await self._handle(msg)
        except Exception as e:  # noqa: BLE001 - the connection's end, seen by every waiter
            self._closed = e
        else:
            self._closed = ConnectionError("closed by the server")
        async with self._finished:
            self._finished.notify_all()

    async def _handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if kind == "new_session":  # the start of a run (tagged with its fragments; none: a full run)
            frags = tuple(msg.metadata.run.fragment_ids)
            if not frags:  # a full run: the elements it does not re-send by its end are stale
                self._generation += 1
            async with self._finished:
                self._finish_log.append((time.perf_counter(), "NEW_SESSION", frags))
            if msg.new_session.page_script_hash:
                self.page_hash = msg.new_session.page_script_hash
        elif kind == "navigation":
            self.pages = {p.url_pathname: p.page_script_hash for p in msg.navigation.app_pages}
            self.page_hash = msg.navigation.page_script_hash or self.page_hash
        elif kind == "delta":
            await self._delta(msg)
        elif kind == "auto_rerun":
            self._auto_rerun(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            self.auto_reruns.clear()
            for t in self._timers.values():
                t.cancel()
            self._timers.clear()
        elif kind == "script_finished":
            status = FINISHED.Name(msg.script_finished)
            frags = tuple(msg.metadata.run.fragment_ids)
            if status == "FINISHED_SUCCESSFULLY" and not frags:  # the frontend drops what a full run did not send
                self.elements = {p: el for p, el in self.elements.items() if el.generation >= self._generation}
            async with self._finished:
                self._finish_log.append((time.perf_counter(), status, frags))
                self._finished.notify_all()

    async def _delta(self, msg: ForwardMsg) -> None:
        path = tuple(msg.metadata.delta_path)
        delta = msg.delta
        which = delta.WhichOneof("type")
        if which == "new_element":
            kind = delta.new_element.WhichOneof("type")
            el = Element(kind, getattr(delta.new_element, kind), delta.fragment_id, self._generation)
            if kind == "exception":
                e = el.proto
                self.exceptions.append(f"{e.type}: {e.message}")
            self.elements[path] = el
            if kind == "imgs":
                await self._fetch(el)
                self.image_log.append((time.perf_counter(), path, [img.url for img in el.proto.imgs]))
        elif which == "add_block":
            # a container replaces what was at its path: drop the old subtree
            self.elements = {p: e for p, e in self.elements.items() if p[:len(path)] != path}
            self.elements[path] = Element("block", delta.add_block, delta.fragment_id, self._generation)

    async def _fetch(self, el: Element) -> None:
        """GET the images as the browser would (they are served from the server's media store)."""
        if self.fetch_images:
            for img in el.proto.imgs:
                url = img.url if img.url.startswith("http") else self.url.rstrip("/") + img.url
                if img.url.startswith(("/", "http")):
                    status, data = await asyncio.wait_for(_get(url, self.cookie), self.timeout)
                    if status == 404:
                        self.images_gone += 1  # replaced by a newer run before we asked: a browser skips it too
                        continue
                    if status != 200:
                        raise ConnectionError(f"GET {url} answered HTTP {status}")
                    self.images_fetched += 1
                    self.image_bytes += len(data)

    def _auto_rerun(self, fragment_id: str, interval: float) -> None:
        """Re-run the fragment every `interval` seconds, as the frontend does for st.fragment(run_every=...)."""
        self.auto_reruns[fragment_id] = interval
        old = self._timers.pop(fragment_id, None)
        if old is not None:
            old.cancel()

        async def tick() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self._rerun(fragment_id=fragment_id, auto=True)
                except Exception:  # noqa: BLE001 - a closed socket ends the timer
                    return

        self._timers[fragment_id] = asyncio.create_task(tick())


async def _get(url: str, cookie: str = "") -> tuple[int, bytes]:
    """(HTTP status, body) of a GET on the event loop (with a Cookie header when given): a thread pool would queue
    many sessions' fetches behind each other and count that wait as the server's."""
    u = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
    try:
        path = u.path + (f"?{u.query}" if u.query else "")
        cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\n{cookie_line}Connection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _widget_state(wid: str, el: Element, value: Any) -> Any:
    """The WidgetState protobuf the frontend would send for `value` (sliders: a list of doubles)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    s = WidgetState(id=wid)
    if el.kind == "slider":
        s.double_array_value.data.extend([float(v) for v in (value if isinstance(value, (list, tuple)) else [value])])
    elif el.kind in ("checkbox", "toggle"):
        s.bool_value = bool(value)
    elif el.kind == "number_input":
        if isinstance(value, int):
            s.int_value = value
        else:
            s.double_value = float(value)
    elif el.kind == "text_input" or el.kind == "text_area":
        s.string_value = str(value)
    elif el.kind == "button":
        s.trigger_value = True
    else:
        raise ValueError(f"setting a {el.kind} is not supported by this client; use a slider, checkbox, "
                         "number_input, text_input or button")
    return s


async def _main(url: str, page: str, query: str) -> None:
    async with Session(url) as s:
        run = await s.open(page, query)
        print(f"{run.status} in {run.seconds:.2f} s; {s.messages} messages; exceptions: {s.exceptions}")
        for el in s.widgets():
            print(f"  {el.kind:14s} key={user_key(el.proto.id)!r} fragment={el.fragment_id or '-'}")
        print(f"  images: {len(s.image_urls())} ({s.images_fetched} fetched, {s.image_bytes:,} bytes)")
        print(f"  auto-reruns: {s.auto_reruns}")


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "",
                      sys.argv[3] if len(sys.argv) > 3 else ""))
