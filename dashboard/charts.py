"""Plotly figure builders for loss curves and run comparisons: pure functions of plain lists, no Streamlit.

Every chart is downsampled to at most MAX_POINTS points per curve before it is built, because each refresh of every
viewer's browser re-sends the whole figure. The figures are SharedFigures: built once per job update (the pages cache
them), their dict, which st.plotly_chart would otherwise deep-copy and walk element by element for every viewer on
every refresh, is made once too.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import plotly.graph_objects as go

MAX_POINTS = 2000  # points per curve sent to the browser
PANEL_HEIGHT = 260  # pixels per row of subplots
MAX_COLS = 3
PROBABILITY_METRICS = ("d_real", "d_fake")  # the GAN discriminator's mean outputs, drawn on one [0, 1] panel
HALF_LABEL = "D = 1/2: the seed's convergence criterion (D can no longer tell real from generated)"
# metric -> (y, label) of a dotted reference line at the value the metric has at the game's balance point
REFERENCE_LINES: dict[str, tuple[float, str]] = {
    "d_loss": (2 * math.log(2), "2 log 2: a discriminator that can only guess"),
    "g_loss": (math.log(2), "log 2: the balance point"),
}

Series = tuple[Sequence[float], Sequence[float]]  # (steps, values)
MARK_COLORS = {"lr": "orange", "beta": "mediumpurple", "k": "seagreen", "fork": "gray"}  # else "gray"


def knob_label(name: str, value: object) -> str:
    """'lr 1e-04', 'beta 2', 'k 5', 'epochs 12': how a changed setting is written on the chart."""
    if isinstance(value, float) and name == "lr":
        return f"lr {value:.0e}"
    if isinstance(value, float):
        return f"{name} {value:g}"
    return f"{name} {value}"


class SharedFigure(go.Figure):
    """A go.Figure that many sessions draw: `to_dict()` (what st.plotly_chart serialises, via plotly's deep copy and
    an element-by-element walk of every list: ~80% of a 2,000-point chart's server time, measured with cProfile) is
    computed on first use and the same dict returned after, read-only. Build it completely, then draw it: a change
    after the first draw would not be seen."""

    def to_dict(self) -> dict:
        cached = self.__dict__.get("_shared_dict")
        if cached is None:  # two sessions at once may both build it: the same dict, the last one kept
            cached = super().to_dict()
            self._shared_dict = cached
        return cached


# ---- data helpers ----

def downsample_indices(n: int, max_points: int = MAX_POINTS) -> list[int]:
    """At most `max_points` evenly spaced indices into a sequence of length n, always with the first and last."""
    if n <= 0:
        return []
    max_points = max(2, int(max_points))
    if n <= max_points:
        return list(range(n))
    stride = (n - 1) / (max_points - 1)
    out = sorted({round(i * stride) for i in range(max_points)})
    out[0], out[-1] = 0, n - 1
    return out


def downsample(xs: Sequence[float], ys: Sequence[float], max_points: int = MAX_POINTS) -> tuple[list, list]:
    """Thin a curve to at most `max_points` points, keeping its first and last points."""
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length ({len(xs)} vs {len(ys)})")
    idx = downsample_indices(len(xs), max_points)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def series_from_rows(rows: Iterable[Mapping], names: Sequence[str]) -> dict[str, Series]:
    """Metric rows as metrics.jsonl holds them -> {name: (steps, values)}; event rows (knob changes) are skipped."""
    out: dict[str, tuple[list, list]] = {n: ([], []) for n in names}
    for row in rows:
        if "event" in row or "step" not in row:
            continue
        for n in names:
            v = row.get(n)
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[n][0].append(row["step"])
                out[n][1].append(float(v))
    return out


def short_label(name: str, labels: Mapping[str, str] | None = None) -> str:
    """'Loss (negative ELBO, nats per image): reconstruction ...' -> 'Loss (negative ELBO, nats per image)'."""
    text = (labels or {}).get(name) or name
    return text.split(":", 1)[0].strip()


def metric_panels(metric_names: Sequence[str]) -> list[list[str]]:
    """One panel per metric, except the GAN's D(real) and D(fake), which share a [0, 1] panel."""
    panels: list[list[str]] = []
    probs = [n for n in metric_names if n in PROBABILITY_METRICS]
    for n in metric_names:
        if n in PROBABILITY_METRICS:
            if n == probs[0]:
                panels.append(probs)
        else:
            panels.append([n])
    return panels


# ---- figures ----

def _axis_ids(i: int) -> tuple[str, str]:
    """Panel i's axis references ('x', 'y') / ('x2', 'y2') ... as plotly names them in traces and shapes."""
    return ("x", "y") if i == 0 else (f"x{i + 1}", f"y{i + 1}")


def loss_figure(series: Mapping[str, Series], metric_names: Sequence[str], labels: Mapping[str, str] | None = None,
                *, uirevision: str | None = None, max_points: int = MAX_POINTS,
                lr_changes: Sequence[tuple[float, float]] = (),
                marks: Sequence[tuple[float, str, str]] = ()) -> SharedFigure:
    """Every metric of a run against the training step, one subplot per metric (D outputs together with a dashed
    line at 1/2). `marks` are (step, knob, label) changes (a live knob, or a fork) drawn as vertical dotted lines in
    the knob's colour, labelled in the first panel; `lr_changes` (step, new lr) pairs are lr marks.

    The figure is built as one spec and validated once (plotly's make_subplots/add_hline cost ~5x more), because
    it is rebuilt on every refresh.
    """
    panels = metric_panels(metric_names) or [["loss"]]
    cols = 2 if len(panels) == 4 else min(MAX_COLS, len(panels))
    rows = math.ceil(len(panels) / cols)
    hgap, vgap = 0.06, (0.16 if rows > 1 else 0.0)
    w = (1 - hgap * (cols - 1)) / cols
    h = (1 - vgap * (rows - 1)) / rows
    data: list[dict] = []
    layout: dict = {"height": PANEL_HEIGHT * rows + 80, "margin": dict(l=10, r=10, t=50, b=10),
                    "uirevision": uirevision, "hovermode": "x unified", "showlegend": True,
                    "legend": dict(orientation="h", yanchor="top", y=-0.08 if rows > 1 else -0.18),
                    "annotations": [], "shapes": []}
    for i, panel in enumerate(panels):
        r, c = divmod(i, cols)
        xid, yid = _axis_ids(i)
        x0, y1 = c * (w + hgap), 1 - r * (h + vgap)
        suffix = "" if i == 0 else str(i + 1)
        layout["xaxis" + suffix] = dict(domain=[x0, x0 + w], anchor=yid, title=dict(text="step" if r == rows - 1
                                                                                    else None))
        layout["yaxis" + suffix] = dict(domain=[y1 - h, y1], anchor=xid)
        title = " and ".join(short_label(n, labels) for n in panel)
        layout["annotations"].append(dict(text=title, x=x0 + w / 2, y=y1, xref="paper", yref="paper",
                                          xanchor="center", yanchor="bottom", showarrow=False, font=dict(size=12)))
        for name in panel:
            xs, ys = series.get(name, ([], []))
            xs, ys = downsample(list(xs), list(ys), max_points)
            data.append(dict(type="scatter", x=xs, y=ys, mode="lines", name=short_label(name, labels),
                             xaxis=xid, yaxis=yid, legendgroup=name, showlegend=len(panel) > 1,
                             hovertemplate="step %{x:,}<br>%{y:.4g}<extra>" + name + "</extra>"))
        lines = []
        if any(n in PROBABILITY_METRICS for n in panel):
            lines.append((0.5, HALF_LABEL, "dash"))
            layout["yaxis" + suffix]["range"] = [0, 1]
        elif len(panel) == 1 and panel[0] in REFERENCE_LINES:
            lines.append((*REFERENCE_LINES[panel[0]], "dot"))
        for y, text, dash in lines:
            layout["shapes"].append(dict(type="line", xref=f"{xid} domain", x0=0, x1=1, yref=yid, y0=y, y1=y,
                                         line=dict(color="gray", dash=dash, width=1.5)))
            layout["annotations"].append(dict(text=text, xref=f"{xid} domain", x=0, yref=yid, y=y, xanchor="left",
                                              yanchor="bottom", showarrow=False, font=dict(size=10, color="gray")))
        all_marks = list(marks) + [(step, "lr", knob_label("lr", float(lr))) for step, lr in lr_changes]
        for n, (step, knob, text) in enumerate(all_marks):
            shape = dict(type="line", xref=xid, x0=step, x1=step, yref=f"{yid} domain", y0=0, y1=1,
                         line=dict(color=MARK_COLORS.get(knob, "gray"), dash="dot", width=1.5))
            if i == 0:  # the label once, in the first panel, staggered so neighbouring marks stay readable
                # left of the line: a change is usually made at the newest step, the panel's right edge
                shape["label"] = dict(text=text, textposition="end", textangle=0, xanchor="right", yanchor="top",
                                      font=dict(size=10, color=MARK_COLORS.get(knob, "gray")),
                                      padding=2 + 12 * (n % 3))
            layout["shapes"].append(shape)
    return SharedFigure(data=data, layout=layout)


def comparison_figure(curves: Mapping[str, Series], metric_label: str, *, uirevision: str | None = None,
                      max_points: int = MAX_POINTS, half_line: bool = False) -> SharedFigure:
    """One metric of several runs on one chart: {run label: (steps, values)}."""
    fig = SharedFigure()
    for label, (xs, ys) in curves.items():
        xs, ys = downsample(list(xs), list(ys), max_points)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=label,
                                 hovertemplate="step %{x:,}<br>%{y:.4g}<extra>" + label + "</extra>"))
    if half_line:
        fig.add_hline(y=0.5, line_dash="dash", line_color="gray", annotation_text=HALF_LABEL,
                      annotation_position="top left", annotation_font_size=10)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), uirevision=uirevision,
                      xaxis_title="step", yaxis_title=metric_label, legend=dict(orientation="h", y=-0.2))
    return fig
