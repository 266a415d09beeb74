"""Each configuration on the roofline of the machine it ran on: arithmetic only, from what the run records store.

A run stores the two roofs measured where it ran (``extra.roofline``: the matmul peak in GFLOP/s and
the STREAM bandwidth in GB/s), its achieved GFLOP/s and the bytes a training and an inference sample
move (``models.traffic``); the model's FLOPs per sample are in ``model``. From these:

- arithmetic intensity I = FLOPs per sample / bytes per sample (FLOP/byte);
- attainable rate = min(peak, bandwidth × I); the ridge point is peak / bandwidth;
- below the ridge a pass is **memory-bound** (the bandwidth roof binds), at or above it **compute-bound**;
- achieved / attainable says how far the pass runs from the roof that binds it.

Records written before the memory roof was measured give "n/a" for everything past the compute peak.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional

from ..results import RunRecord

PHASES = (("training", "train_flops", "train_gflops", "train_bytes_per_sample"),
          ("inference", "forward_flops", "eval_gflops", "eval_bytes_per_sample"))
CSV_COLUMNS = ("model", "pass", "flops_per_sample", "bytes_per_sample", "intensity_flop_per_byte", "peak_gflops",
               "bandwidth_gbs", "ridge_flop_per_byte", "attainable_gflops", "achieved_gflops", "bound",
               "fraction_of_attainable")


def attainable_gflops(peak_gflops: float, bandwidth_gbs: float, intensity: float) -> float:
    """The roofline: the lower of the compute roof and the memory roof at ``intensity`` FLOP/byte."""
    return min(peak_gflops, bandwidth_gbs * intensity)


def bound(peak_gflops: float, bandwidth_gbs: float, intensity: float) -> str:
    """``memory`` below the ridge point (peak / bandwidth), else ``compute``."""
    return "memory" if intensity < peak_gflops / bandwidth_gbs else "compute"


@dataclass(frozen=True)
class Point:
    """One configuration's training or inference pass against the roofs of its machine (medians over seeds)."""

    model: str
    phase: str  # "training" or "inference"
    flops_per_sample: Optional[float]
    bytes_per_sample: Optional[float]
    peak_gflops: Optional[float]
    bandwidth_gbs: Optional[float]
    achieved_gflops: Optional[float]

    @property
    def placed(self) -> bool:
        """Whether both roofs and both counts are known, so the point has a place on the roofline."""
        return None not in (self.flops_per_sample, self.bytes_per_sample, self.peak_gflops, self.bandwidth_gbs) \
            and self.bytes_per_sample > 0 and self.bandwidth_gbs > 0

    @property
    def intensity(self) -> Optional[float]:
        return self.flops_per_sample / self.bytes_per_sample if self.placed else None

    @property
    def ridge(self) -> Optional[float]:
        return self.peak_gflops / self.bandwidth_gbs if self.placed else None

    @property
    def attainable(self) -> Optional[float]:
        return attainable_gflops(self.peak_gflops, self.bandwidth_gbs, self.intensity) if self.placed else None

    @property
    def bound(self) -> Optional[str]:
        return bound(self.peak_gflops, self.bandwidth_gbs, self.intensity) if self.placed else None

    @property
    def fraction_of_attainable(self) -> Optional[float]:
        if not self.placed or self.achieved_gflops is None or not self.attainable:
            return None
        return self.achieved_gflops / self.attainable

    def row(self) -> dict:
        """The point as ``roofline.csv`` writes it (None where a record lacks the figure)."""
        return {"model": self.model, "pass": self.phase, "flops_per_sample": self.flops_per_sample,
                "bytes_per_sample": self.bytes_per_sample, "intensity_flop_per_byte": self.intensity,
                "peak_gflops": self.peak_gflops, "bandwidth_gbs": self.bandwidth_gbs, "ridge_flop_per_byte": self.ridge,
                "attainable_gflops": self.attainable, "achieved_gflops": self.achieved_gflops, "bound": self.bound,
                "fraction_of_attainable": self.fraction_of_attainable}


def _median(values: list) -> Optional[float]:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(numbers) if numbers else None


def group_points(label: str, records: list[RunRecord]) -> list[Point]:
    """The training and inference points of one group; none when no record measured its rates."""
    rates = [r.extra["roofline"] for r in records if isinstance(r.extra.get("roofline"), dict)]
    if not rates:
        return []
    model = records[0].model
    return [Point(label, phase, model.get(flops), _median([x.get(nbytes) for x in rates]),
                  _median([x.get("peak_gflops") for x in rates]), _median([x.get("bandwidth_gbs") for x in rates]),
                  _median([x.get(achieved) for x in rates]))
            for phase, flops, achieved, nbytes in PHASES]


def drawable(points: list[Point]) -> list[Point]:
    """The points a roofline figure shows: placed on both roofs, with an achieved rate (none for older records)."""
    return [p for p in points if p.placed and p.achieved_gflops]


def roofs(points: list[Point]) -> list[tuple[float, float]]:
    """The distinct (peak GFLOP/s, bandwidth GB/s) pairs of the placed points (one per machine and thread count)."""
    return sorted({(p.peak_gflops, p.bandwidth_gbs) for p in points if p.placed})


def roof_curve(peak_gflops: float, bandwidth_gbs: float, low: float, high: float) -> tuple[list[float], list[float]]:
    """The roofline from ``low`` to ``high`` FLOP/byte: the bandwidth slope up to the ridge point, then the peak."""
    ridge = peak_gflops / bandwidth_gbs
    xs = [low] + ([ridge] if low < ridge < high else []) + [high]
    return xs, [attainable_gflops(peak_gflops, bandwidth_gbs, x) for x in xs]


def intensity_span(points: list[Point]) -> tuple[float, float]:
    """An x range (FLOP/byte) that shows every placed point and every ridge point with room on both sides."""
    xs = [x for p in points if p.placed for x in (p.intensity, p.ridge)]
    return min(xs) / 4, max(xs) * 4
