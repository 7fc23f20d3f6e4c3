"""Playwright helpers for the dashboard's pages, shared by the browser tests (tests/browser/), scripts/measure_ui.py
and scripts/lecture_walk.py: wait until a run of the page has been drawn, open a page, find keyed elements, wait for
an image and fetch its bytes.

Import it from the scripts folder (`sys.path.append(<repo>/scripts)`); Playwright is imported only when a helper runs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

APP_TIMEOUT_MS = 90_000  # a first page run imports torch and plotly; on a loaded 2-core machine that takes a while

IMAGE_LOADED_JS = ("(sel) => { const i = document.querySelector(sel + ' img');"
                   " return i && i.complete && i.naturalWidth > 0; }")


def wait_for_app_run(page: Any, timeout: int = APP_TIMEOUT_MS) -> None:
    """Connected, the script not running, no skeletons: the page is drawn. With `run_every` fragments the state
    flips every tick, so assertions after this still auto-retry (expect)."""
    from playwright.sync_api import expect

    page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(state="attached",
                                                                                            timeout=timeout)
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(state="attached",
                                                                                         timeout=timeout)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=timeout)


def open_page(page: Any, url: str, timeout: int = APP_TIMEOUT_MS) -> None:
    """Go to `url`, wait for the page to be drawn, and check that it shows no exception."""
    from playwright.sync_api import expect

    page.goto(url, wait_until="domcontentloaded")
    wait_for_app_run(page, timeout)
    expect(page.get_by_test_id("stException")).to_have_count(0)


def by_key(page: Any, key: str) -> Any:
    """A keyed widget or container (Streamlit adds the class st-key-<key>)."""
    return page.locator(f".st-key-{key}")


def wait_image_loaded(page: Any, key: str, timeout: int = APP_TIMEOUT_MS) -> str:
    """Wait until the first image in the keyed container has loaded; returns its src."""
    page.wait_for_function(IMAGE_LOADED_JS, arg=f".st-key-{key}", timeout=timeout)
    return by_key(page, key).locator("img").first.get_attribute("src")


def image_bytes(page: Any, src: str, *, replaced_ok: bool = False) -> bytes | None:
    """The bytes behind an image's src (a /media/ URL of the server). With `replaced_ok`, None where the server
    answers 404: a rerun replaced the image after its src was read, and the server dropped the old media file."""
    r = page.request.get(urljoin(page.url, src))
    if replaced_ok and r.status == 404:
        return None
    assert r.ok, f"GET {src}: {r.status}"
    return r.body()
