"""Figures built from run records alone: learning curves, final test error, training throughput, the roofline.

Each is written as PNG and SVG next to ``summary.md``. matplotlib is imported lazily and
used without pyplot (a bare ``Figure`` renders with Agg), so no GUI backend or global
figure state is involved, and torch is never imported.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..files import atomic_path
from .groups import MIN_SEEDS_FOR_CI, Group, Report, Spread, curve, describe_devices, measured_throughputs, seeds_words, spread
from .roofline import Point, drawable, intensity_span, roof_curve, roofs
from ..results import RunRecord

DPI = 150
# Fixed SVG ids and text as paths, so the same records give byte-identical figures.
_RC = {
    "svg.hashsalt": "mnistbench",
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_METADATA = {"png": {"Software": None}, "svg": {"Date": None}}
# Markers on the curves while the points are few enough to tell apart.
_MARKER_EPOCHS = 25


def write_plots(results_dir: str | Path, report: Report) -> list[Path]:
    """Write learning_curves, final_error, throughput and (when the runs measured both roofs) roofline, as PNG and SVG,
    into ``results_dir``; return their paths."""
    from matplotlib import rc_context

    results_dir = Path(results_dir)
    groups = report.groups()
    spec = report.title
    header = _header([r for g in groups for r in g.records], groups)
    written: list[Path] = []
    with rc_context(_RC):
        for name, draw in (
            ("learning_curves", _learning_curves),
            ("final_error", _final_error),
            ("throughput", _throughput),
        ):
            fig = draw(spec, header, groups)
            written += _save(fig, results_dir / name)
        points = drawable(report.roofline_points())
        if points:  # runs recorded before the memory roof have no roofline to draw
            written += _save(_roofline(spec, header, points), results_dir / "roofline")
    return written


def _save(fig, stem: Path) -> list[Path]:
    paths = []
    for fmt in ("png", "svg"):
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            # The temporary name ends in .tmp, so the format is given explicitly.
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
        paths.append(path)
    return paths


def _header(records: list[RunRecord], groups: list[Group]) -> str:
    datasets = ", ".join(sorted({str(r.config.get("dataset")) for r in records}))
    return f"{datasets} on {describe_devices(records)}, {seeds_words(groups)}"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _diverged_words(g: Group) -> str:
    k = len(g.records) - len(g.finished)
    if not k:
        return ""
    why = " or ".join(s for s in ("diverged", "failed") if g.with_status(s))
    return f"all {why}, not shown" if not g.finished else f"{k} of {len(g.records)} {why}, not shown"


def _band_words(counts: list[int], ci_words: str = "95% CI of the mean") -> str:
    """What the band or bar around a mean shows, given each group's number of seeds."""
    counts = [n for n in counts if n > 0]
    if not counts or max(counts) == 1:
        return ""
    if min(counts) >= MIN_SEEDS_FOR_CI:
        return ci_words
    if max(counts) < MIN_SEEDS_FOR_CI:
        return "min–max over seeds"
    return f"{ci_words} (n≥{MIN_SEEDS_FOR_CI}), min–max (n<{MIN_SEEDS_FOR_CI})"


def _plot_curve(ax, xs, spreads, colour, test: bool, markers: bool, bounds=(-math.inf, math.inf)) -> bool:
    """The mean line, and on test curves the band clipped to ``bounds`` (0-100% for accuracy); True if it clipped."""
    means = [s.mean for s in spreads]
    style = dict(
        color=colour,
        linestyle="-" if test else "--",
        linewidth=1.6 if test else 1.1,
        marker=("o" if test else "s") if markers else None,
        markersize=3.5 if test else 3,
        markerfacecolor=colour if test else "white",
    )
    ax.plot(xs, means, **style)
    if not test:
        return False  # bands on the test curves only: the train curves are there to show the gap
    lows = [min(max(s.low, bounds[0]), s.mean) for s in spreads]
    highs = [max(min(s.high, bounds[1]), s.mean) for s in spreads]
    if len(xs) == 1:
        if highs[0] > lows[0]:
            ax.errorbar(xs, means, yerr=[[means[0] - lows[0]], [highs[0] - means[0]]], color=colour, capsize=3, linewidth=1)
    else:
        ax.fill_between(xs, lows, highs, color=colour, alpha=0.18, linewidth=0)
    return any(lo != s.low or hi != s.high for lo, hi, s in zip(lows, highs, spreads))


def _zoom_limits(curves: list[tuple[list[Spread], list[Spread]]]) -> tuple[float, float]:
    """An accuracy range (%) around the test curves' second half and final bands, padded.

    Final train accuracy above that (over-fitting) is kept in view; below it, it may leave the panel.
    """
    test_values, train_values = [], []
    for test, train in curves:
        test_values += [test[-1].low, test[-1].high] + [s.mean for s in test[len(test) // 2 :]]
        train_values.append(train[-1].mean)
    lo, hi = min(test_values), max(test_values + [t for t in train_values if t > min(test_values)])
    span = max(hi - lo, 0.2)
    lo = max(0.0, math.floor(10 * (lo - 0.25 * span)) / 10)
    hi = min(100.0, hi + 0.25 * span)
    if hi - lo < 0.2:
        lo = max(0.0, hi - 0.2)
    return lo, hi


def _learning_curves(spec: str, header: str, groups: list[Group]):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig = _figure(14, 5)
    ax_acc, ax_zoom, ax_loss = fig.subplots(1, 3)
    max_epochs = max((len(r.epochs) for g in groups for r in g.finished), default=0)
    markers = max_epochs <= _MARKER_EPOCHS
    handles, zoom_data, clipped = [], [], False
    log_loss = _log_loss_axis(groups)
    for i, g in enumerate(groups):
        colour = _colour(i)
        label = f"{g.label} (n={len(g.finished)})"
        if _diverged_words(g):
            label = f"{g.label} (n={len(g.finished)}; {_diverged_words(g)})"
        handles.append(Line2D([], [], color=colour, linewidth=2, label=label))
        if not g.finished:
            continue
        xs, test_acc = curve(g.finished, "test_accuracy", 100)
        xt, train_acc = curve(g.finished, "train_accuracy", 100)
        for ax in (ax_acc, ax_zoom):
            clipped |= _plot_curve(ax, xs, test_acc, colour, True, markers, bounds=(0.0, 100.0))
            _plot_curve(ax, xt, train_acc, colour, False, markers)
        zoom_data.append((test_acc, train_acc))
        xs, test_loss = curve(g.finished, "test_loss", log=log_loss)  # on a log axis: geometric mean, positive band
        xt, train_loss = curve(g.finished, "train_loss", log=log_loss)
        clipped |= _plot_curve(ax_loss, xs, test_loss, colour, True, markers, bounds=(0.0, math.inf))
        _plot_curve(ax_loss, xt, train_loss, colour, False, markers)

    _label_curve_axes(ax_acc, ax_zoom, ax_loss, log_loss, zoom_data, max_epochs)
    handles += [
        Line2D([], [], color="0.3", linestyle="-", marker="o" if markers else None, markersize=3.5, label="test (mean over seeds)"),
        Line2D([], [], color="0.3", linestyle="--", marker="s" if markers else None, markersize=3,
               markerfacecolor="white", label="train, running mean over the epoch"),
    ]
    band = _band_words([len(g.finished) for g in groups])
    if band:
        handles.append(Patch(color="0.3", alpha=0.18, label=f"band: {band}" + ("; clipped to accuracy ≤ 100%, loss ≥ 0" if clipped else "")))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), frameon=False)
    fig.suptitle(f"{spec}: learning curves\n{header}")
    return fig


def _log_loss_axis(groups: list[Group]) -> bool:
    """A log loss axis when the mean losses span more than 20x."""
    losses = [s.mean for g in groups if g.finished for attr in ("test_loss", "train_loss") for s in curve(g.finished, attr)[1]]
    positive = [v for v in losses if v > 0 and math.isfinite(v)]
    return bool(positive) and max(positive) / min(positive) > 20


def _label_curve_axes(ax_acc, ax_zoom, ax_loss, log_loss: bool, zoom_data: list, max_epochs: int) -> None:
    """Titles, labels, the loss scale, the zoomed range and the epoch axis."""
    from matplotlib.ticker import MaxNLocator

    ax_acc.set_title("Accuracy")
    ax_zoom.set_title("Accuracy, zoomed")
    ax_loss.set_title("Loss")
    for ax in (ax_acc, ax_zoom):
        ax.set_ylabel("accuracy (%)")
    ax_loss.set_ylabel("cross-entropy loss (nats/sample)")
    if log_loss:  # the lines and bands are then geometric means and intervals of log loss (curve(log=True))
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("cross-entropy loss (nats/sample, log scale;\ngeometric mean, interval of log loss)")
    if zoom_data:
        ax_zoom.set_ylim(*_zoom_limits(zoom_data))
    else:
        for ax in (ax_acc, ax_zoom, ax_loss):
            ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", va="center")
    for ax in (ax_acc, ax_zoom, ax_loss):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if max_epochs:
            ax.set_xlim(1 - 0.03 * max(max_epochs - 1, 8), max_epochs + 0.03 * max(max_epochs - 1, 8))


def _final_error(spec: str, header: str, groups: list[Group]):
    from matplotlib.lines import Line2D

    fig = _figure(max(6.0, 1.9 * len(groups) + 2.5), 5)
    ax = fig.subplots()
    paper_shown = False
    ticks = []
    for i, g in enumerate(groups):
        colour = _colour(i)
        ticks.append(f"{g.label}\n(n={len(g.finished)})" + (f"\n{_diverged_words(g)}" if _diverged_words(g) else ""))
        if not g.finished:
            continue
        errors = [100 * (1 - r.final.test_accuracy) for r in g.finished]
        s = spread(errors)
        offsets = [0.0] if len(errors) == 1 else [-0.12 + 0.24 * k / (len(errors) - 1) for k in range(len(errors))]
        ax.scatter([i - 0.2 + o * 0.5 for o in offsets], errors, s=12, color=colour, alpha=0.5, linewidths=0, zorder=2)
        ax.errorbar([i], [s.mean], yerr=[[s.mean - s.low], [s.high - s.mean]], fmt="o", color=colour,
                    markersize=7, capsize=5, linewidth=1.5, zorder=3)
        ax.annotate(f"{s.mean:.2f}%", (i, s.mean), xytext=(8, 0), textcoords="offset points", va="center", fontsize=8)
        paper = g.paper_error_pct()
        if paper is not None:
            ax.scatter([i + 0.3], [paper], marker="D", s=30, facecolors="none", edgecolors="black", zorder=3)
            ax.annotate(f"{paper:.2f}%", (i + 0.3, paper), xytext=(7, 0), textcoords="offset points", va="center",
                        fontsize=8, color="0.25")
            paper_shown = True
    ax.set_xticks(range(len(groups)), ticks)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("final test error (%)")
    ax.grid(axis="x", visible=False)
    bar = _band_words([len(g.finished) for g in groups]) or "one seed, no interval"
    handles = [
        Line2D([], [], color="0.3", marker="o", markersize=7, linestyle="-", label=f"mean, bars: {bar}"),
        Line2D([], [], color="0.3", marker="o", markersize=4, alpha=0.5, linestyle="none", label="each seed"),
    ]
    if paper_shown:
        handles.append(Line2D([], [], color="black", marker="D", markerfacecolor="none", linestyle="none",
                              label="LeCun et al. 1998 (different recipe)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"{spec}: test error after the last epoch\n{header}")
    return fig


def _runs(n: int) -> str:
    return f"{n} run{'' if n == 1 else 's'}"


def _mantissa(v: float) -> int:
    return round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0


def _throughput(spec: str, header: str, groups: list[Group]):
    fig = _figure(max(6.0, 1.9 * len(groups) + 2.5), 5)
    ax = fig.subplots()
    values = []
    for i, g, med, lo, hi in measured_throughputs(groups):
        values += [lo, hi]
        ax.errorbar([i], [med], yerr=[[med - lo], [hi - med]], fmt="o", color=_colour(i), markersize=7, capsize=5,
                    linewidth=1.5)
        ax.annotate(f"{med:,.0f}/s", (i, med), xytext=(9, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xticks(range(len(groups)), [f"{g.label}\n({_runs(len(g.records))})" for g in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.grid(axis="x", visible=False)
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) >= 10:
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.set_ylabel("training throughput (samples/s, log scale)")
        # Plain numbers (2,000 rather than 2x10^3); minor ticks labelled at 2x and 5x each decade.
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if _mantissa(v) in (2, 5) else ""))
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel("training throughput (samples/s)")
    single = any(len(r.epochs) == 1 for g in groups for r in g.records)
    excluded = "first (warm-up) epoch excluded" + (" except in one-epoch runs" if single else "")
    fig.suptitle(f"{spec}: training throughput\n{header}")
    ax.set_title(f"median over epochs and seeds, bars min–max; {excluded}", fontsize=8.5)
    return fig


_ROOF_STYLES = ("-", "--", ":", "-.")


def _roofline(spec: str, header: str, points: list[Point]):
    """Log-log: each (peak, bandwidth) pair as a roof, each configuration's training (filled circle) and inference
    (hollow square) pass at its arithmetic intensity and achieved GFLOP/s."""
    fig = _figure(7.5, 5.5)
    ax = fig.subplots()
    ax.set_xscale("log")
    ax.set_yscale("log")
    low, high = intensity_span(points)
    for k, (peak, bandwidth) in enumerate(roofs(points)):
        xs, ys = roof_curve(peak, bandwidth, low, high)
        ax.plot(xs, ys, color="0.25", linestyle=_ROOF_STYLES[k % len(_ROOF_STYLES)], linewidth=1.5,
                label=f"roof: {peak:,.1f} GFLOP/s, {bandwidth:,.1f} GB/s (ridge {peak / bandwidth:.1f} FLOP/byte)")
    labels = list(dict.fromkeys(p.model for p in points))
    for p in points:
        colour, training = _colour(labels.index(p.model)), p.phase == "training"
        ax.plot([p.intensity], [p.achieved_gflops], linestyle="none", marker="o" if training else "s", markersize=7,
                color=colour, markerfacecolor=colour if training else "none", label=f"{p.model} ({p.phase})")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.4g}")  # 30 rather than 3x10^1
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    ax.set_xlim(low, high)
    ax.set_xlabel("arithmetic intensity (FLOP/byte, log scale)")
    ax.set_ylabel("GFLOP/s (log scale)")
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{spec}: roofline\n{header}")
    ax.set_title("roofs measured during the run (matmul peak, STREAM bandwidth); points: achieved GFLOP/s, "
                 "median over seeds", fontsize=8.5)
    return fig
