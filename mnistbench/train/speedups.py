"""The engine's speed-ups that leave every result bit-identical (issue #27), and the switch that turns them off.

``MNISTBENCH_ENGINE_OFF=fast-pool,foreach,...`` (names from SPEEDUPS, comma-separated) turns some off, for A/B
measurements only (scripts/engine_ab.py, scripts/bench_ab.py); docs/performance.md describes each.
"""

from __future__ import annotations

import os

SPEEDUPS = ("fast-pool", "foreach", "fast-conv1", "fast-adam", "pool-relu", "pool-planes", "native-pool")


def speedup(name: str) -> bool:
    """Whether the speed-up ``name`` (one of SPEEDUPS) is on: it is unless MNISTBENCH_ENGINE_OFF names it."""
    return name not in os.environ.get("MNISTBENCH_ENGINE_OFF", "").split(",")
