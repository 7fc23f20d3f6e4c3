"""The first-import race of a class arriving at once: while one script thread imports pandas, plotly's JSON encoder in
another thread finds the half-initialised module in sys.modules and fails ("partially initialized module 'pandas'
has no attribute 'Series'"). Reproduced on a fresh interpreter in a subprocess, with pandas' import held open so the
race happens every time, not one run in ten; dashboard.preload (called by app.py before anything is drawn) closes it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import importlib.abc, importlib.machinery, json, sys, threading, time
    import numpy  # the server has numpy long before any chart (torch, the images)

    PRELOAD = sys.argv[1] == "preload"
    opened = threading.Event()

    class SlowPandas(importlib.abc.MetaPathFinder):
        # pandas' own import takes ~1 s on a busy machine; hold it open (the module already in sys.modules,
        # half-initialised) until the chart threads have tried, so the race is certain, not one run in ten
        def find_spec(self, name, path=None, target=None):
            if name != "pandas":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            real = spec.loader

            class Loader(importlib.abc.Loader):
                def create_module(self, spec):
                    return real.create_module(spec)

                def exec_module(self, module):
                    opened.set()
                    time.sleep(1.5)
                    real.exec_module(module)

            spec.loader = Loader()
            return spec

    sys.meta_path.insert(0, SlowPandas())
    if PRELOAD:
        from dashboard.preload import preload_lazy_modules
        preload_lazy_modules()

    import plotly.graph_objects as go
    import plotly.io as pio

    errors = []

    def session(i):
        # one student's script run: what app.py does first, then a chart serialised as st.plotly_chart does
        if i == 0:
            import pandas  # a page that shows a table (Streamlit imports pandas lazily)
        else:
            opened.wait(30)
            if PRELOAD:
                from dashboard.preload import preload_lazy_modules
                preload_lazy_modules()
        try:  # building the figure looks pandas up too (plotly's array checks)
            fig = go.Figure(go.Scatter(x=list(range(50)), y=list(range(50))))
            pio.to_json(fig, validate=False)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=session, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    print(json.dumps(errors))
""")


def _race(mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_thirty_sessions_serialising_charts_while_pandas_imports_raise_without_the_preload():
    errors = _race("bare")  # today's server: the race the load test saw
    assert errors and all("partially initialized module 'pandas'" in e for e in errors), errors


def test_thirty_sessions_serialising_charts_while_pandas_imports_all_succeed_with_the_preload():
    assert _race("preload") == []


def test_app_preloads_before_any_page_runs():
    """app.py calls dashboard.preload.preload_lazy_modules at module level, before pg.run() draws the page."""
    tree = ast.parse((ROOT / "app.py").read_text())
    calls = [(node.lineno, ast.unparse(node.value.func)) for node in tree.body
             if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
    names = [name for _, name in calls]
    assert "preload_lazy_modules" in names and "pg.run" in names, names
    assert names.index("preload_lazy_modules") < names.index("pg.run")
    assert names.index("preload_lazy_modules") < names.index("sidebar.render")
