"""The robustness curves as figures (PNG and SVG, the style of mnistbench/plots.py): accuracy against shift,
rotation and attack strength with a 95% band over seeds, and test error per corruption."""

from __future__ import annotations

from pathlib import Path

from ..report.plots import _RC, _colour, _figure, _save
from ..report.stats import estimate
from .corruptions import CORRUPTIONS
from .summary import groups, shift_accuracy


def _band(ax, xs, per_run: list[list[float]], colour: str, name: str) -> None:
    """Mean line over runs, with the Student-t 95% band of the mean where there are 2 or more runs."""
    ests = [estimate([run[i] for run in per_run]) for i in range(len(xs))]
    ax.plot(xs, [100 * e.mean for e in ests], color=colour, marker="o", markersize=3, label=f"{name} (n={len(per_run)})")
    if len(per_run) > 1:
        # An interval of a mean accuracy is drawn inside [0, 100] (few seeds can stretch it past either end).
        ax.fill_between(xs, [max(0.0, 100 * e.ci_low) for e in ests], [min(100.0, 100 * e.ci_high) for e in ests],
                        color=colour, alpha=0.2, lw=0)


def _curves(title: str, xlabel: str, by_label, xs, read):
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    for i, (name, runs) in enumerate(by_label.items()):
        _band(ax, xs, [[read(r, x) for x in xs] for r in runs], _colour(i), name)
    ax.set(title=title, xlabel=xlabel, ylabel="test accuracy (%)")
    ax.legend(fontsize=7)
    return fig


def _corruptions(by_label):
    fig = _figure(8.0, 4.0)
    ax = fig.add_subplot()
    names = list(CORRUPTIONS)
    width = 0.8 / max(1, len(by_label))
    for i, (name, runs) in enumerate(by_label.items()):
        means = [100 * estimate([1 - r["corruptions"][c] for r in runs]).mean for c in names]
        ax.bar([j + i * width for j in range(len(names))], means, width, color=_colour(i), label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], [n.replace("_", " ") for n in names],
                  rotation=45, ha="right")
    ax.set(title="MNIST-C-style corruptions (mean over seeds)", ylabel="test error (%)", yscale="log")
    ax.legend(fontsize=7)
    return fig


def _adversarial(by_label):
    attacked = {k: v for k, v in by_label.items() if v[0].get("adversarial", {}).get("status") == "ok"}
    fig = _figure(8.0, 3.6)
    for j, kind in enumerate(("fgsm", "pgd")):
        ax = fig.add_subplot(1, 2, j + 1)
        for i, (name, runs) in enumerate(attacked.items()):
            eps = list(runs[0]["adversarial"][kind])
            per_run = [[r["adversarial"]["clean_subset"], *(r["adversarial"][kind][e] for e in eps)] for r in runs]
            _band(ax, [0.0, *map(float, eps)], per_run, _colour(i), name)
        ax.set(title=f"{kind.upper()} (L∞)", xlabel="ε (pixel scale [0, 1])", ylabel="accuracy (%)")
        if attacked:
            ax.legend(fontsize=7)
    return fig


def write_figures(out_dir: Path, results: list[dict]) -> list[Path]:
    from matplotlib import rc_context

    by_label = groups(results)
    shifts = sorted(int(k) for k in results[0]["shifts"])
    angles = sorted(int(a) for a in results[0]["rotations"])
    written: list[Path] = []
    with rc_context(_RC):
        written += _save(_curves("Translation (mean of 8 directions, zero fill)", "shift (pixels)", by_label, shifts,
                                 shift_accuracy), out_dir / "translation")
        written += _save(_curves("Rotation about the centre", "angle (degrees, anticlockwise +)", by_label, angles,
                                 lambda r, a: r["rotations"][str(a)]), out_dir / "rotation")
        written += _save(_corruptions(by_label), out_dir / "corruptions")
        written += _save(_adversarial(by_label), out_dir / "adversarial")
    return written

