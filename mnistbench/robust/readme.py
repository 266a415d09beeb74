"""One README paragraph from a folder's robustness figures: does LeNet-5 keep its accuracy when a digit moves?

The founding document says convolutions share weights across the image; the prediction checked here is that
LeNet-5 loses less accuracy than the MLPs when every test digit is shifted by a few pixels.
"""

from __future__ import annotations

import math

from .summary import PX, cell, groups, shift_accuracy, values
from ..report.stats import welch

CNN = "lenet5"


def _pct(runs, get) -> str:
    return cell(runs, get).text() + " %"


def shift_sentence(results: list[dict], px: int = PX) -> str:
    """A paragraph comparing accuracy at a ``px``-pixel shift (mean of 8 directions) of LeNet-5 and every other model."""
    by_label = groups(results)
    if CNN not in by_label:
        return f"No {CNN} runs without distortions in these results: nothing to say about its shifts."
    at = lambda r: shift_accuracy(r, px)  # noqa: E731
    cnn = by_label[CNN]
    parts = [f"Shifted by {px} pixels (mean of 8 directions, zero fill), LeNet-5 keeps {_pct(cnn, at)} of the test "
             f"digits right (clean {_pct(cnn, lambda r: r['clean'])}, {len(cnn)} seeds)"]
    for name, runs in by_label.items():
        if name == CNN or name.endswith("distortions"):
            continue
        c = welch(values(cnn, at), values(runs, at))
        p = "" if math.isnan(c.p_value) else f", Welch p {'<0.001' if c.p_value < 0.001 else f'{c.p_value:.3f}'}"
        parts.append(f"{name} {_pct(runs, at)} (LeNet-5 − {name}: {100 * c.difference:+.1f} points{p})")
    return "; ".join(parts) + ". Intervals: 95% over seeds (mnistbench robust, docs/robustness-eval.md)."
