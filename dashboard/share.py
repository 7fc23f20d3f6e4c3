"""Presenter links: the page's state lives in the URL, so a copied link opens exactly the same view for every student,
and a presenter mode (`?present=true`) hides the forms and enlarges the images for a projector.

Widgets join the link through Streamlit's own query-parameter binding (`bind="query-params"`, Streamlit 1.67): the
widget's key is the parameter's name, a link's value seeds the widget on first load, every change rewrites the URL,
and values equal to the widget's default are left out so links stay short. The model page is the URL's path, the run
`?run=` (dashboard.state), the explorer's tab, sliders and seeds their own keys.
"""

from __future__ import annotations

import html
import json

import streamlit as st

BIND = "query-params"  # pass as bind= to every widget whose value belongs in a shared link
PRESENT_KEY = "present"  # the presenter-mode toggle, and its URL parameter (?present=true)
PRESENT_IMAGE_WIDTH = 720  # px of a training sample grid in presenter mode (480 otherwise)

# projector styling: bigger text, no top padding, and pixels that stay square when an image is enlarged
_PRESENT_CSS = """
<style>
html { font-size: 19px; }
[data-testid="stMainBlockContainer"] { padding-top: 2rem; max-width: 100%; }
[data-testid="stImage"] img { image-rendering: pixelated; }
</style>
"""
_PIXELATED_CSS = "<style>[data-testid='stImage'] img { image-rendering: pixelated; }</style>"


def presenting() -> bool:
    """Whether this page is in presenter mode (the sidebar toggle, bound to ?present=)."""
    return bool(st.session_state.get(PRESENT_KEY, False))


def image_width(normal: int | str) -> int | str:
    """The width to draw an image at: enlarged to fill its column in presenter mode, `normal` otherwise."""
    return "stretch" if presenting() else normal


def _copy_link_html(label: str) -> str:
    """A button that copies the browser's own address (always the exact view: Streamlit rewrites it on every change)
    to the clipboard, with a fallback for pages served over plain http (no Clipboard API there). The copied link is
    also kept in the button's data-copied attribute (for tests, and for a teacher to read)."""
    js_label = json.dumps(label)
    return f"""
<button type="button" id="genlib-copy-link" style="padding:0.35rem 0.75rem;border-radius:0.5rem;width:100%;
  border:1px solid rgba(49,51,63,0.2);background:transparent;color:inherit;cursor:pointer;font-size:0.9rem">
{html.escape(label)}</button>
<script>
(function () {{
  const b = document.getElementById("genlib-copy-link");
  if (!b || b.dataset.bound) return;
  b.dataset.bound = "1";
  b.addEventListener("click", function () {{
    const url = window.location.href;
    const done = function () {{
      b.dataset.copied = url;
      b.textContent = "Link copied";
      setTimeout(function () {{ b.textContent = {js_label}; }}, 2500);
    }};
    const fallback = function () {{
      const t = document.createElement("textarea");
      t.value = url;
      document.body.appendChild(t);
      t.select();
      try {{ document.execCommand("copy"); }} catch (e) {{}}
      t.remove();
      done();
    }};
    if (navigator.clipboard && window.isSecureContext) {{
      navigator.clipboard.writeText(url).then(done, fallback);
    }} else {{
      fallback();
    }}
  }});
}})();
</script>
"""


def sidebar_controls() -> None:
    """The sidebar's presenter toggle and 'Copy link for students'; call once per script run, from the frame."""
    with st.sidebar:
        st.toggle("Presenter mode", key=PRESENT_KEY, bind=BIND,
                  help="For a projector: hides the forms, enlarges the images and the text. Kept in the page "
                       "address (?present=true), so a copied link opens in presenter mode too.")
        st.html(_copy_link_html("Copy link for students"), unsafe_allow_javascript=True)
        st.caption("The link opens this page with the same run, tab, sliders and seeds.")
    st.html(_PRESENT_CSS if presenting() else _PIXELATED_CSS)
