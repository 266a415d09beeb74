"""Interactive Plotly figures of a report: learning curves per seed with the mean ± interval, final error,
throughput, time to accuracy under the three rules, the roofline. Renderers only: every number comes from ``groups.py``.

Figures are plain data (``Figure``: a fixed id, a title, a caption and Plotly's JSON), so a page embeds them
without random ids and the same records give byte-identical pages.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ...results import finite_or_none
from ..groups import MIN_SEEDS_FOR_CI, Group, Report, Spread, curve, measured_throughputs, spread
from ..roofline import Point, drawable, intensity_span, roof_curve, roofs
from ..rules import RULES

# Okabe-Ito colours (told apart with colour-blindness), and per group a dash and a marker so greyscale prints do too.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star", "hexagon")
RULE_PATTERNS = {"fixed-budget": "", "mlperf": "/", "first-crossing": "."}
_LAYOUT = {"template": "plotly_white", "font": {"size": 12}, "hovermode": "closest", "margin": {"t": 60, "b": 60}}


@dataclass(frozen=True)
class Figure:
    """One figure of a page: ``id`` is the element it is drawn into; ``data`` and ``layout`` are Plotly's."""

    id: str
    title: str
    caption: str
    data: list[dict]
    layout: dict

    def json(self) -> str:
        """Plotly's figure as JSON safe inside a ``<script>`` element (no ``</`` can close it early)."""
        text = json.dumps(_no_nan({"data": self.data, "layout": self.layout}), sort_keys=True, allow_nan=False)
        return text.replace("</", "<\\/")


def _no_nan(x: object) -> object:
    """NaN and infinities (not JSON) as null: Plotly leaves a gap there instead of the page failing to build."""
    if isinstance(x, float):
        return finite_or_none(x)
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


def _style(i: int) -> dict:
    return {"colour": COLOURS[i % len(COLOURS)], "dash": DASHES[i % len(DASHES)], "symbol": SYMBOLS[i % len(SYMBOLS)]}


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[k : k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def figures(report: Report) -> list[Figure]:
    """Every figure the page of ``report`` shows, in page order."""
    groups = report.groups()
    out = [learning_curves(groups), final_error(groups), throughput(groups)]
    if any(g.rules for g in groups):
        out.append(time_to_accuracy(groups))
    points = drawable(report.roofline_points())
    if points:  # runs recorded before the memory roof have no roofline
        out.append(roofline(points))
    return out


def band_words(groups: list[Group]) -> str:
    counts = [len(g.finished) for g in groups if len(g.finished) > 1]
    if not counts:
        return "one seed a model: no interval"
    if min(counts) >= MIN_SEEDS_FOR_CI:
        return "95% Student-t interval of the mean"
    return f"95% interval of the mean with {MIN_SEEDS_FOR_CI}+ seeds, else min–max over seeds"


def _seed_traces(g: Group, i: int, attr: str, scale: float, axis: str, first: bool) -> list[dict]:
    """One thin line per finished seed; a seed shares its legend entry across panels, so one click hides it."""
    s = _style(i)
    unit = "%" if scale == 100 else ""
    out = []
    for r in g.finished:
        seed = r.config.get("seed")
        out.append({
            "type": "scatter", "mode": "lines", "x": [e.epoch for e in r.epochs],
            "y": [finite_or_none(scale * getattr(e, attr)) for e in r.epochs], "xaxis": f"x{axis}", "yaxis": f"y{axis}",
            "name": f"{g.label} · seed {seed}", "legendgroup": f"g{i}-seed-{seed}", "showlegend": first,
            "line": {"color": s["colour"], "dash": s["dash"], "width": 1}, "opacity": 0.45,
            "meta": [g.label, str(seed)],
            "hovertemplate": f"%{{meta[0]}}<br>seed %{{meta[1]}}<br>epoch %{{x}}<br>{attr.replace('_', ' ')} %{{y:.4g}}{unit}<extra></extra>",
        })
    return out


def _mean_traces(g: Group, i: int, attr: str, scale: float, axis: str, first: bool) -> list[dict]:
    """The mean over seeds with markers, and its interval as a filled band (two traces) from two seeds up."""
    s = _style(i)
    xs, spreads = curve(g.finished, attr, scale)
    unit = "%" if scale == 100 else ""
    group = f"g{i}-mean"
    mean = {
        "type": "scatter", "mode": "lines+markers", "x": xs, "y": [finite_or_none(p.mean) for p in spreads],
        "xaxis": f"x{axis}", "yaxis": f"y{axis}", "name": f"{g.label} · mean (n={len(g.finished)})", "legendgroup": group,
        "showlegend": first, "line": {"color": s["colour"], "dash": s["dash"], "width": 2.5},
        "marker": {"symbol": s["symbol"], "size": 7}, "meta": [g.label],
        "customdata": [[finite_or_none(p.low), finite_or_none(p.high)] for p in spreads],
        "hovertemplate": f"%{{meta[0]}}<br>mean over seeds<br>epoch %{{x}}<br>{attr.replace('_', ' ')} %{{y:.4g}}{unit}"
                         f"<br>interval [%{{customdata[0]:.4g}}, %{{customdata[1]:.4g}}]<extra></extra>",
    }
    if len(g.finished) < 2:
        return [mean]
    edge = {"type": "scatter", "mode": "lines", "x": xs, "xaxis": f"x{axis}", "yaxis": f"y{axis}", "legendgroup": group,
            "showlegend": False, "hoverinfo": "skip", "line": {"width": 0, "color": s["colour"]}}
    upper = {**edge, "name": f"{g.label} · interval high", "y": [finite_or_none(p.high) for p in spreads]}
    lower = {**edge, "name": f"{g.label} · interval low", "y": [finite_or_none(p.low) for p in spreads], "fill": "tonexty",
             "fillcolor": _rgba(s["colour"], 0.18)}
    return [upper, lower, mean]


def learning_curves(groups: list[Group]) -> Figure:
    """Test accuracy and test loss per epoch: every seed, and the mean with its band."""
    data: list[dict] = []
    losses: list[float] = []
    for i, g in enumerate(groups):
        if not g.finished:
            continue
        for attr, scale, axis in (("test_accuracy", 100, ""), ("test_loss", 1, "2")):
            first = axis == ""
            data += _mean_traces(g, i, attr, scale, axis, first) + _seed_traces(g, i, attr, scale, axis, first)
        losses += [e.test_loss for r in g.finished for e in r.epochs if e.test_loss > 0 and math.isfinite(e.test_loss)]
    log_loss = bool(losses) and max(losses) / min(losses) > 20
    layout = {
        **_LAYOUT, "height": 560,
        "title": {"text": "Learning curves: test accuracy and test loss per epoch"},
        "xaxis": {"domain": [0, 0.46], "title": {"text": "epoch"}, "dtick": 1 if _max_epochs(groups) <= 20 else None},
        "yaxis": {"title": {"text": "test accuracy (%)"}},
        "xaxis2": {"domain": [0.54, 1], "title": {"text": "epoch"}, "anchor": "y2", "dtick": 1 if _max_epochs(groups) <= 20 else None},
        "yaxis2": {"title": {"text": "test loss (cross-entropy" + (", log scale)" if log_loss else ")")}, "anchor": "x2",
                   "type": "log" if log_loss else "linear"},
        "legend": {"title": {"text": "click: hide or show a line"}, "groupclick": "togglegroup"},
    }
    caption = (f"Thin lines: each seed; thick lines with markers: the mean over seeds; band: {band_words(groups)}. "
               "Diverged and failed runs are not drawn (see the caveats). Hover a line for its model, seed, epoch and value; "
               "click a legend entry to hide or show that seed or mean in both panels.")
    return Figure("fig-learning-curves", "Learning curves", caption, data, _clean(layout))


def _max_epochs(groups: list[Group]) -> int:
    return max((len(r.epochs) for g in groups for r in g.finished), default=0)


def _clean(layout: dict) -> dict:
    """Drop settings left unset (None), so Plotly uses its defaults for them."""
    return {k: _clean(v) if isinstance(v, dict) else v for k, v in layout.items() if v is not None}


def final_error(groups: list[Group]) -> Figure:
    """Per model the final test error of each seed, the mean with its interval, and the 1998 paper's error."""
    data = []
    for i, g in enumerate(groups):
        if not g.finished:
            continue
        s = _style(i)
        errors = [100 * (1 - r.final.test_accuracy) for r in g.finished]
        sp: Spread = spread(errors)
        data.append({"type": "scatter", "mode": "markers", "x": [g.label] * len(errors), "y": errors,
                     "name": f"{g.label} · seeds", "legendgroup": f"g{i}", "marker": {"color": s["colour"], "symbol": s["symbol"],
                     "size": 6, "opacity": 0.5}, "text": [f"seed {r.config.get('seed')}" for r in g.finished],
                     "hovertemplate": "%{x}<br>%{text}<br>final test error %{y:.3f}%<extra></extra>"})
        data.append({"type": "scatter", "mode": "markers", "x": [g.label], "y": [sp.mean], "name": f"{g.label} · mean",
                     "legendgroup": f"g{i}", "marker": {"color": s["colour"], "symbol": s["symbol"], "size": 13,
                     "line": {"color": "black", "width": 1}},
                     "error_y": {"type": "data", "symmetric": False, "array": [sp.high - sp.mean], "arrayminus": [sp.mean - sp.low]},
                     "hovertemplate": f"%{{x}}<br>mean of {sp.n} seeds %{{y:.3f}}%<br>[{sp.low:.3f}, {sp.high:.3f}]<extra></extra>"})
    paper = [(g.label, g.paper_error_pct()) for g in groups if g.finished and g.paper_error_pct() is not None]
    if paper:
        data.append({"type": "scatter", "mode": "markers", "x": [p[0] for p in paper], "y": [p[1] for p in paper],
                     "name": "LeCun et al. 1998 (different recipe)", "marker": {"symbol": "diamond-open", "size": 12, "color": "black"},
                     "hovertemplate": "%{x}<br>LeCun et al. 1998: %{y:.2f}%<extra></extra>"})
    layout = {**_LAYOUT, "height": 480, "title": {"text": "Final test error (after the last epoch)"},
              "xaxis": {"title": {"text": "model"}}, "yaxis": {"title": {"text": "final test error (%)"}, "rangemode": "tozero"}}
    caption = (f"Small markers: each seed; large markers: the mean, bars: {band_words(groups)}. Open diamonds: the error "
               "LeCun et al. (1998) report, with a different recipe.")
    return Figure("fig-final-error", "Final test error", caption, data, layout)


def throughput(groups: list[Group]) -> Figure:
    """Median training samples/s over steady epochs and seeds, with the min–max range."""
    data = []
    values = []
    for i, g, med, lo, hi in measured_throughputs(groups):
        values += [lo, hi]
        s = _style(i)
        data.append({"type": "scatter", "mode": "markers", "x": [g.label], "y": [med], "name": g.label,
                     "marker": {"color": s["colour"], "symbol": s["symbol"], "size": 12},
                     "error_y": {"type": "data", "symmetric": False, "array": [hi - med], "arrayminus": [med - lo]},
                     "hovertemplate": f"%{{x}}<br>median %{{y:,.0f}} samples/s<br>min–max {lo:,.0f}–{hi:,.0f}<extra></extra>"})
    positive = [v for v in values if v > 0]
    log = bool(positive) and max(positive) / min(positive) >= 10
    layout = {**_LAYOUT, "height": 460, "title": {"text": "Training throughput"}, "showlegend": False,
              "xaxis": {"title": {"text": "model"}},
              "yaxis": {"title": {"text": "training samples/s" + (" (log scale)" if log else "")}, "type": "log" if log else "linear",
                        "rangemode": "tozero"}}
    caption = "Median over epochs and seeds, bars min–max; each run's first (warm-up) epoch excluded unless it ran only one."
    return Figure("fig-throughput", "Training throughput", caption, data, layout)


def time_to_accuracy(groups: list[Group]) -> Figure:
    """Median seconds to the target per rule (one bar series per rule); a rule not met is named, not drawn."""
    ruled = [g for g in groups if g.rules]
    data = []
    for k, rule in enumerate(RULES):
        figs = [g.rules[rule] for g in ruled]
        data.append({"type": "bar", "name": rule + (" (optimistic)" if rule == "first-crossing" else ""),
                     "x": [g.label for g in ruled], "y": [f.seconds for f in figs],
                     "marker": {"color": COLOURS[k], "pattern": {"shape": RULE_PATTERNS[rule]}},
                     "text": [f.seeds for f in figs], "textposition": "outside",
                     "customdata": [[f.verdict] for f in figs],
                     "hovertemplate": f"%{{x}}<br>{rule}: %{{y:.2f}} s<br>seeds %{{text}}<br>%{{customdata[0]}}<extra></extra>"})
    layout = {**_LAYOUT, "height": 480, "barmode": "group", "title": {"text": "Time to the target accuracy under three rules"},
              "xaxis": {"title": {"text": "recipe"}}, "yaxis": {"title": {"text": "median seconds over seeds"}}}
    caption = ("Bars: median seconds over seeds per rule (fixed-budget is the headline; first-crossing is optimistic); the "
               "label over a bar: seeds meeting the rule. A missing bar: the rule is not met or does not apply (hover "
               "or see the table for why).")
    return Figure("fig-time-to-accuracy", "Time to accuracy", caption, data, layout)


def roofline(points: list[Point]) -> Figure:
    """Log-log: the roofs measured during the run and each configuration's training and inference pass on them."""
    low, high = intensity_span(points)
    data = []
    for k, (peak, bandwidth) in enumerate(roofs(points)):
        xs, ys = roof_curve(peak, bandwidth, low, high)
        data.append({"type": "scatter", "mode": "lines", "x": xs, "y": ys, "line": {"color": "#444444", "dash": DASHES[k % len(DASHES)]},
                     "name": f"roof: {peak:,.1f} GFLOP/s, {bandwidth:,.1f} GB/s", "hoverinfo": "skip"})
    labels = list(dict.fromkeys(p.model for p in points))
    for p in points:
        colour = _style(labels.index(p.model))["colour"]
        symbol = "circle" if p.phase == "training" else "square-open"
        data.append({"type": "scatter", "mode": "markers", "x": [p.intensity], "y": [p.achieved_gflops],
                     "name": f"{p.model} ({p.phase})", "marker": {"color": colour, "symbol": symbol, "size": 12},
                     "hovertemplate": f"{p.model} ({p.phase})<br>%{{x:.2f}} FLOP/byte, %{{y:,.1f}} GFLOP/s<br>{p.bound}-bound, "
                                      f"{100 * (p.fraction_of_attainable or 0):.1f}% of attainable<extra></extra>"})
    layout = {**_LAYOUT, "height": 520, "title": {"text": "Roofline"},
              "xaxis": {"title": {"text": "arithmetic intensity (FLOP/byte)"}, "type": "log"},
              "yaxis": {"title": {"text": "GFLOP/s"}, "type": "log"}}
    caption = ("Roofs measured during the run: the float32 matmul peak and the STREAM bandwidth (slope). Filled circles: "
               "training, hollow squares: inference, at FLOPs per sample ÷ bytes per sample counted per layer "
               "(docs/performance.md). Left of a roof's ridge a pass is memory-bound, right of it compute-bound.")
    return Figure("fig-roofline", "Roofline", caption, data, layout)
