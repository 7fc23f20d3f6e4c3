"""Modules that libraries look up in `sys.modules` without importing them, imported in full before a session draws
anything: plotly's JSON encoder (plotly/io/_json.py, _plotly_utils) asks `get_module("pandas", should_load=False)`,
which returns a module another script thread is still importing, and then fails with "partially initialized module
'pandas' has no attribute 'Series'" (seen with 30 sessions arriving at once on a fresh server).

An `import` statement waits for a module that another thread is still initialising (Python's per-module import
lock); a `sys.modules` lookup does not. So every session's script imports these first (app.py), and none can reach
plotly's encoder while one of them is half-initialised.
"""

from __future__ import annotations

import importlib

# what plotly's encoder looks up without loading (numpy, pandas, PIL.Image; sage is not installed here)
LOOKED_UP = ("numpy", "pandas", "PIL.Image")


def preload_lazy_modules() -> None:
    """Import LOOKED_UP (once per process: later calls find them in sys.modules at no cost)."""
    for name in LOOKED_UP:
        try:
            importlib.import_module(name)
        except ImportError:  # not installed: plotly's lookup then finds nothing, which it handles
            pass
