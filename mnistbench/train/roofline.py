"""The machine's two roofs, measured during a run, to put model throughput in proportion.

The compute roof: a float32 matrix multiply of a size that runs near the BLAS library's best
(2048 x 2048 on the CPU, 8192 x 8192 on a GPU), timed after a warm-up, best of a few repeats.
Model GFLOP/s are FLOPs counted by ``torch.utils.flop_counter`` times measured samples/s.

The memory roof: STREAM's copy (``a = b``) and triad (``a = b + s*c``) on float32 arrays
several times larger than the last-level cache, timed the same way; the attainable bandwidth is
the better of the two. Each model's bytes moved per sample (``models.traffic``) turn the two
roofs into a roofline (``report.roofline``). Both roofs are calibrated, not looked up, and
measured once per process, device and thread count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=None)
def matmul_peak_gflops(device: str = "cpu", threads: int | None = None, size: int | None = None, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 GFLOP/s of an n x n matmul on ``device`` with ``threads`` CPU threads."""
    dev = torch.device(device)
    n = size or (8192 if dev.type == "cuda" else 2048)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(n, n, generator=g).to(dev)
        b = torch.randn(n, n, generator=g).to(dev)
        torch.mm(a, b)  # warm-up: thread pool, kernels, caches
        best = float("inf")
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            torch.mm(a, b)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2 * n**3 / best / 1e9


@dataclass(frozen=True)
class Bandwidth:
    """Attainable memory bandwidth in GB/s (1e9 bytes/s): STREAM copy and triad, and the array size they ran on."""

    copy_gbs: float
    triad_gbs: float
    array_bytes: int

    @property
    def best_gbs(self) -> float:
        return max(self.copy_gbs, self.triad_gbs)

    def to_dict(self) -> dict:
        """As a run record stores it, in ``extra.roofline``."""
        return {"bandwidth_gbs": self.best_gbs, "copy_gbs": self.copy_gbs, "triad_gbs": self.triad_gbs,
                "stream_array_bytes": self.array_bytes}


# STREAM's rule: each array at least 4x the last-level cache, so every pass goes to memory; capped so that the three
# arrays stay a small share of a modest machine's memory.
_MIN_ARRAY_BYTES = 64 * 2**20
_MAX_ARRAY_BYTES = 512 * 2**20
_GPU_ARRAY_BYTES = 256 * 2**20  # 5x an H100's 50 MB L2
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def last_level_cache_bytes() -> int | None:
    """The largest cache the kernel reports for CPU 0 (Linux sysfs), or None where it says nothing."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip() if f.is_file() else ""
        if text[:-1].isdigit() and text[-1] in _UNITS:
            sizes.append(int(text[:-1]) * _UNITS[text[-1]])
    return max(sizes, default=None)


def _array_bytes(dev: torch.device) -> int:
    if dev.type == "cuda":
        return _GPU_ARRAY_BYTES
    return min(_MAX_ARRAY_BYTES, max(_MIN_ARRAY_BYTES, 4 * (last_level_cache_bytes() or 0)))


def _best_seconds(op, dev: torch.device, repeats: int) -> float:
    """Best-of-``repeats`` wall time of ``op()`` after one untimed call, synchronized on CUDA."""
    op()
    best = float("inf")
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        op()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - start)
    return best


@lru_cache(maxsize=None)
def stream_bandwidth(device: str = "cpu", threads: int | None = None, array_bytes: int | None = None,
                     repeats: int = 5) -> Bandwidth:
    """Best-of-``repeats`` STREAM copy and triad bandwidth on ``device`` with ``threads`` CPU threads.

    Bytes counted as STREAM counts them: copy reads one array and writes one (2 x array bytes),
    triad reads two and writes one (3 x); a cache's write-allocate reads are not counted.
    """
    dev = torch.device(device)
    n = (array_bytes or _array_bytes(dev)) // 4
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b, c = (torch.full((n,), v, dtype=torch.float32, device=dev) for v in (1.0, 2.0, 0.5))  # pages touched
        copy = _best_seconds(lambda: a.copy_(b), dev, repeats)
        triad = _best_seconds(lambda: torch.add(b, c, alpha=3.0, out=a), dev, repeats)
    finally:
        torch.set_num_threads(previous)
    return Bandwidth(2 * 4 * n / copy / 1e9, 3 * 4 * n / triad / 1e9, 4 * n)


def fraction_of_peak(train_flops: int, forward_flops: int, train_samples_per_s: float, eval_samples_per_s: float, peak_gflops: float) -> dict:
    """Achieved GFLOP/s in training and evaluation and their fractions of the calibrated peak."""
    train_gflops = train_flops * train_samples_per_s / 1e9
    eval_gflops = forward_flops * eval_samples_per_s / 1e9
    return {
        "peak_gflops": peak_gflops,
        "train_gflops": train_gflops,
        "eval_gflops": eval_gflops,
        "train_fraction_of_peak": train_gflops / peak_gflops,
        "eval_fraction_of_peak": eval_gflops / peak_gflops,
    }


def achieved_rates(model: dict, outcome, config) -> dict:
    """Steady-state GFLOP/s of a cell (``engine.CellOutcome``; ``model``: its record's description) against the
    matmul peak of its device and thread count, the memory bandwidth measured there (``stream_bandwidth``) and the
    bytes a training and an inference sample move (``models.traffic``)."""
    import statistics

    from ..models.traffic import Traffic, eval_bytes_per_sample, state_buffers, train_bytes_per_sample

    steady = outcome.epochs[1:] or outcome.epochs  # the first epoch pays for warm-up
    rates = fraction_of_peak(
        model["train_flops"],
        model["forward_flops"],
        statistics.median(e.train_samples_per_s for e in steady),
        statistics.median(e.eval_samples_per_s for e in steady),
        matmul_peak_gflops(outcome.device, outcome.threads),
    )
    rates |= stream_bandwidth(outcome.device, outcome.threads).to_dict()
    if isinstance(model.get("traffic"), dict):
        t = Traffic(**model["traffic"])
        rates["train_bytes_per_sample"] = train_bytes_per_sample(t, config.batch_size, state_buffers(config.optimizer, config.momentum))
        rates["eval_bytes_per_sample"] = eval_bytes_per_sample(t, config.eval_batch_size)
    return rates
