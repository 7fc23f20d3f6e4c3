"""dashboard.charts' figures are drawn by every viewer of a run: what st.plotly_chart makes of them per session (the
figure's dict, deep-copied and walked element by element by plotly) is made once and shared, and the chart each
browser receives is unchanged."""

from __future__ import annotations

import json
import random

import plotly.graph_objects as go
import plotly.io as pio
import plotly.tools

from dashboard.charts import SharedFigure, comparison_figure, loss_figure


def _spec(fig) -> dict:
    """The chart spec st.plotly_chart sends (streamlit/elements/plotly_chart.py: the same two calls)."""
    figure = plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True)
    return json.loads(pio.to_json(figure, validate=False))


def _series(n: int = 3000) -> dict:
    rng = random.Random(0)
    return {k: (list(range(n)), [rng.random() for _ in range(n)]) for k in ("d_loss", "g_loss", "d_real", "d_fake")}


def test_a_loss_figure_is_turned_into_its_dict_once_for_every_viewer(monkeypatch):
    fig = loss_figure(_series(), ["d_loss", "g_loss", "d_real", "d_fake"], marks=[(10, "lr", "lr 1e-04")])
    assert isinstance(fig, SharedFigure)
    builds = []
    original = go.Figure.to_dict

    def counted(self):
        builds.append(1)
        return original(self)

    monkeypatch.setattr(go.Figure, "to_dict", counted)
    specs = [_spec(fig) for _ in range(30)]  # a class of 30 drawing the same chart
    assert len(builds) == 1
    plain = go.Figure(fig.to_plotly_json())  # the same figure, not shared: what each viewer cost before
    assert all(s == _spec(plain) for s in specs)
    assert len(specs[0]["data"][0]["x"]) == 2000  # still downsampled to the cap, as plain lists


def test_a_comparison_figure_built_step_by_step_is_shared_once_drawn():
    fig = comparison_figure({"a": ([0, 1, 2], [1.0, 0.5, 0.2]), "b": ([0, 1], [1.0, 0.7])}, "loss", half_line=True)
    assert isinstance(fig, SharedFigure)
    first = fig.to_dict()
    assert fig.to_dict() is first
    assert [t["name"] for t in _spec(fig)["data"]] == ["a", "b"]
    assert any(s.get("y0") == 0.5 for s in _spec(fig)["layout"]["shapes"])


def test_the_chart_json_each_viewer_gets_is_encoded_by_orjson_and_unchanged():
    """st.plotly_chart calls plotly.io.to_json for every viewer on every refresh: with orjson installed (requirements
    .txt) plotly's 'auto' engine uses it, ~10x faster than the json module here, for the same chart."""
    import orjson  # noqa: F401 - a requirement: without it, every viewer pays the slow encoder

    fig = loss_figure(_series(), ["d_loss", "g_loss", "d_real", "d_fake"], marks=[(10, "lr", "lr 1e-04")])
    d = fig.to_dict()
    series = _series(50)
    series["d_loss"][1][3] = float("nan")  # a diverged step: both encoders send it as null
    with_nan = loss_figure(series, ["d_loss", "g_loss"]).to_dict()
    assert pio.json.config.default_engine in ("auto", "orjson")
    for figure in (d, with_nan):
        fast, slow = pio.to_json(figure, validate=False), pio.to_json(figure, validate=False, engine="json")
        assert json.loads(fast) == json.loads(slow)
    assert json.loads(pio.to_json(with_nan, validate=False))["data"][0]["y"][3] is None
