"""The machine's attainable FLOP rate, measured during a run, to put model throughput in proportion.

Only the compute roof: achieved GFLOP/s are set against a measured matmul peak. There is
no memory roof (these small models are bound by per-step overheads and memory traffic
long before the compute peak), so a low fraction says "far from compute-bound", not why.

Peak is calibrated, not looked up: a float32 matrix multiply of a size that runs
near the BLAS library's best (2048 x 2048 on the CPU, 8192 x 8192 on a GPU), timed
after a warm-up, best of a few repeats. Model GFLOP/s are then FLOPs counted by
``torch.utils.flop_counter`` times measured samples/s.
"""

from __future__ import annotations

import time
from functools import lru_cache

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


def achieved_rates(model: dict, outcome) -> dict:
    """Steady-state GFLOP/s of a cell (``engine.CellOutcome``; ``model``: its record's description) against the
    matmul peak of its device and thread count."""
    import statistics

    steady = outcome.epochs[1:] or outcome.epochs  # the first epoch pays for warm-up
    return fraction_of_peak(
        model["train_flops"],
        model["forward_flops"],
        statistics.median(e.train_samples_per_s for e in steady),
        statistics.median(e.eval_samples_per_s for e in steady),
        matmul_peak_gflops(outcome.device, outcome.threads),
    )
