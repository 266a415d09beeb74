"""The trackers, apart from the loop: batch-1 latency (MLPerf SingleStream), throughput (Offline), peak memory.

Latency figures are seconds per query; the 95% intervals of p90 and p99 are distribution-free order-statistic
intervals (the binomial count of queries below a quantile), so they need no assumption about the latency's shape.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from ..train import memory
from .backends import Prepared

MAX_QUERIES = 1_000_000  # a bound on one latency run whatever min_seconds asks
LATENCY_INPUTS = 1000  # distinct test images the batch-1 queries cycle through
MIN_BATCHES = 3  # timed batches per batch size at least
EVAL_BATCH = 1000  # the accuracy pass's batch size


@dataclass
class Latency:
    queries: int
    seconds: float  # wall time of the timed queries
    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    p999: float
    p90_ci: Optional[tuple[float, float]]  # None when too few queries bound it
    p99_ci: Optional[tuple[float, float]]

    @classmethod
    def from_values(cls, seconds: np.ndarray) -> "Latency":
        s = np.sort(np.asarray(seconds, dtype=np.float64))
        q = {p: float(np.quantile(s, p)) for p in (0.5, 0.9, 0.99, 0.999)}
        return cls(len(s), float(s.sum()), float(s[0]), float(s.mean()), q[0.5], q[0.9], q[0.99], q[0.999],
                   quantile_interval(s, 0.9), quantile_interval(s, 0.99))


def quantile_interval(ordered: np.ndarray, q: float, confidence: float = 0.95) -> Optional[tuple[float, float]]:
    """[x_(l), x_(u)], the order statistics that cover the q-quantile with at least ``confidence``: the number of
    values below it is Binomial(n, q), so l and u are that distribution's (1±confidence)/2 points."""
    from scipy.stats import binom

    n = len(ordered)
    alpha = 1 - confidence
    low, high = int(binom.ppf(alpha / 2, n, q)), int(binom.ppf(1 - alpha / 2, n, q)) + 1  # 1-based ranks
    if low < 1 or high > n:
        return None
    return float(ordered[low - 1]), float(ordered[high - 1])


@dataclass
class Startup:
    prepare_s: float  # load, export, quantize or wrap: everything before the first query
    cold_s: float  # the first batch-1 query after that (a torch.compile backend compiles here)
    warmup_queries: int
    warmup_mean_s: Optional[float]  # the queries after the cold one, before the timed ones


@dataclass
class Throughput:
    batch_size: int
    batches: int
    seconds: float
    images_per_s: float


class PeakMemory:
    """Peaks of the process over measurements, each against the baseline taken when this was made (before the
    backend loaded its model). CPU: RSS high-water mark (memory.py); CUDA: max_memory_allocated."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.device = device
        if self.cuda:
            self.method = "torch.cuda.max_memory_allocated"
            self.baseline: Optional[int] = torch.cuda.memory_allocated(device)
        else:
            resettable = memory.reset_peak()
            self.method = memory.METHOD if resettable else "n/a (no resettable VmHWM on this system)"
            self.baseline = memory.current_rss_bytes() if resettable else None
        self.peaks: dict[str, Optional[int]] = {}

    @contextmanager
    def over(self, what: str) -> Iterator[None]:
        if self.baseline is None:
            self.peaks[what] = None
            yield
            return
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            memory.reset_peak()
        yield
        peak = torch.cuda.max_memory_allocated(self.device) if self.cuda else memory.peak_rss_bytes()
        self.peaks[what] = None if peak is None else peak - self.baseline


def _timed(p: Prepared, x) -> int:
    start = time.perf_counter_ns()
    p.run(x)
    p.sync()
    return time.perf_counter_ns() - start


def single_stream(p: Prepared, images: torch.Tensor, prepare_s: float, min_queries: int, min_seconds: float,
                  warmup: int) -> tuple[Startup, Latency]:
    """Batch-1 queries one after another: the cold first one, the warm-up, then at least ``min_queries`` timed ones
    lasting at least ``min_seconds``, cycling through distinct test images prepared beforehand."""
    inputs = [p.to_input(images[i:i + 1]) for i in range(min(LATENCY_INPUTS, len(images)))]
    k = len(inputs)
    with p.context():
        cold = _timed(p, inputs[0])
        warm = [_timed(p, inputs[(i + 1) % k]) for i in range(warmup)]
        times: list[int] = []
        deadline = time.perf_counter_ns() + int(min_seconds * 1e9)
        while len(times) < MAX_QUERIES and (len(times) < min_queries or time.perf_counter_ns() < deadline):
            times.append(_timed(p, inputs[len(times) % k]))
    startup = Startup(prepare_s, cold / 1e9, len(warm), float(np.mean(warm)) / 1e9 if warm else None)
    return startup, Latency.from_values(np.array(times) / 1e9)


def batch_of(images: torch.Tensor, start: int, size: int) -> torch.Tensor:
    """``size`` images from ``start`` on, wrapping round the split (a batch may be larger than a small test set)."""
    return images[(torch.arange(size) + start) % len(images)]


def offline(p: Prepared, images: torch.Tensor, batch_size: int, min_seconds: float) -> Throughput:
    """Images per second at ``batch_size``: one untimed batch (compiles a new shape), then at least ``MIN_BATCHES``
    lasting at least ``min_seconds``."""
    count = max(1, min(4, math.ceil(len(images) / batch_size)))
    inputs = [p.to_input(batch_of(images, i * batch_size, batch_size)) for i in range(count)]
    with p.context():
        p.run(inputs[0])
        p.sync()
        done, start = 0, time.perf_counter_ns()
        while done < MIN_BATCHES or time.perf_counter_ns() - start < min_seconds * 1e9:
            p.run(inputs[done % count])
            done += 1
        p.sync()
        seconds = (time.perf_counter_ns() - start) / 1e9
    return Throughput(batch_size, done, seconds, done * batch_size / seconds)


def predict_all(p: Prepared, images: torch.Tensor) -> np.ndarray:
    """Logits of every image, in order, batch by batch."""
    with p.context():
        return np.concatenate([p.to_logits(p.run(p.to_input(images[i:i + EVAL_BATCH])))
                               for i in range(0, len(images), EVAL_BATCH)])
