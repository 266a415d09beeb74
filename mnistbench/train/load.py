"""The machine load a cell ran under, and whether its throughput can be trusted.

While a cell trains, ``LoadMonitor`` reads the machine's CPU times (psutil) after every epoch:
the share of all cores' time that *other* processes used (busy time minus this process's own
CPU time), the share the hypervisor stole (``steal``, where the kernel reports it) and the
1-minute load average. The record keeps them in ``extra["load"]``, and the spread of the
run's steady epoch throughputs in ``extra["throughput_spread"]``.

``throughput_flags`` turns a record into the reasons its throughput is not a clean
measurement (the thresholds below, stated in docs/statistics.md); the report marks such
configurations and ``compare --fail-on 'throughput…'`` refuses to judge them.
Imports no torch; psutil only when a cell is measured.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass
from typing import Callable, Optional

# Other processes used more than this share of all cores' time during the steady epochs.
OTHERS_SHARE_MAX = 0.10
# The hypervisor stole more than this share of the CPU time (virtual machines).
STEAL_MAX = 0.05
# The fastest steady epoch of one run was more than this many times faster than its slowest.
SPREAD_MAX = 2.0
# Only where CPU times cannot be read: the 1-minute load average exceeded the logical CPUs by this.
LOAD_EXCESS_MAX = 0.5


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU seconds at one moment: the machine's (all cores) and this process's."""

    total: float  # all cores' time since boot, idle included
    busy: float  # of it: not idle, not waiting for I/O, not stolen
    steal: Optional[float]  # None where the kernel does not report it
    own: float  # this process's user + system time
    load1: Optional[float]  # 1-minute load average


def read_cpu() -> CpuReading:
    import psutil

    t = psutil.cpu_times()
    parts = t._asdict()
    for guest in ("guest", "guest_nice"):  # Linux counts guest time inside user and nice already
        parts.pop(guest, None)
    total = sum(parts.values())
    steal = parts.get("steal")
    busy = total - parts.get("idle", 0.0) - parts.get("iowait", 0.0) - (steal or 0.0)
    own = psutil.Process().cpu_times()
    try:
        load1: Optional[float] = os.getloadavg()[0]
    except (OSError, AttributeError):  # Windows has no load average
        load1 = None
    return CpuReading(total, busy, steal, own.user + own.system, load1)


@dataclass(frozen=True)
class LoadSample:
    """The load between two readings (one epoch): shares of all cores' time, and the load average at its end."""

    others_cpu_share: Optional[float]
    steal_share: Optional[float]
    load_avg_1m: Optional[float]


def between(a: CpuReading, b: CpuReading) -> LoadSample:
    total = b.total - a.total
    if total <= 0:
        return LoadSample(None, None, b.load1)
    others = max(0.0, (b.busy - a.busy) - (b.own - a.own)) / total
    steal = None if a.steal is None or b.steal is None else max(0.0, b.steal - a.steal) / total
    return LoadSample(round(min(others, 1.0), 4), None if steal is None else round(steal, 4), b.load1)


class LoadMonitor:
    """Readings at the start and after every epoch of one cell; ``summary`` is what the record stores."""

    def __init__(self, read: Optional[Callable[[], CpuReading]] = None) -> None:
        self._read = read or read_cpu  # looked up when built, so a test can replace read_cpu
        try:
            self._last: Optional[CpuReading] = self._read()
        except Exception:  # noqa: BLE001 - a machine whose CPU times cannot be read is recorded as unknown
            self._last = None
        self.start_load = self._last.load1 if self._last else None
        self.samples: list[LoadSample] = []

    def epoch(self) -> None:
        if self._last is None:
            return
        try:
            now = self._read()
        except Exception:  # noqa: BLE001
            return
        self.samples.append(between(self._last, now))
        self._last = now

    def summary(self, threads: Optional[int]) -> dict:
        steady = self.samples[1:] or self.samples  # as throughput: the first epoch pays for warm-up
        loads = [x for x in [self.start_load] + [s.load_avg_1m for s in self.samples] if x is not None]
        return {
            "cpu_count": os.cpu_count(),
            "threads": threads,
            "others_cpu_share": _mean([s.others_cpu_share for s in steady]),
            "steal_share": _mean([s.steal_share for s in steady]),
            "load_avg_1m_start": self.start_load,
            "load_avg_1m_max": max(loads) if loads else None,
            "per_epoch": [asdict(s) for s in self.samples],
        }


def _mean(values: list[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return round(statistics.fmean(known), 4) if known else None


def throughput_spread(samples_per_s: list[float]) -> Optional[dict]:
    """Max/min and coefficient of variation of one run's steady epoch throughputs (first epoch left out)."""
    steady = samples_per_s[1:] if len(samples_per_s) > 1 else samples_per_s
    if not steady or min(steady) <= 0:
        return None
    cv = statistics.stdev(steady) / statistics.fmean(steady) if len(steady) > 1 else 0.0
    return {"max_over_min": round(max(steady) / min(steady), 4), "cv": round(cv, 4), "epochs": len(steady)}


def throughput_flags(load: Optional[dict], samples_per_s: list[float]) -> list[str]:
    """Why one run's throughput is not a clean measurement (empty: nothing seen). Runs recorded before the load was
    measured are judged on their spread alone."""
    reasons = []
    load = load or {}
    others, steal = load.get("others_cpu_share"), load.get("steal_share")
    if others is not None and others > OTHERS_SHARE_MAX:
        reasons.append(f"other processes used {100 * others:.0f}% of the CPU time")
    if steal is not None and steal > STEAL_MAX:
        reasons.append(f"{100 * steal:.0f}% of the CPU time stolen by the hypervisor")
    peak, cpus = load.get("load_avg_1m_max"), load.get("cpu_count")
    if others is None and peak is not None and cpus and peak > cpus + LOAD_EXCESS_MAX:
        reasons.append(f"load average {peak:.1f} on {cpus} CPUs")
    spread = throughput_spread(samples_per_s)
    if spread and spread["max_over_min"] > SPREAD_MAX:
        reasons.append(f"epoch throughputs spread {spread['max_over_min']:.1f}×")
    return reasons


THRESHOLDS = (f"other processes above {100 * OTHERS_SHARE_MAX:.0f}% of the CPU time, steal above {100 * STEAL_MAX:.0f}%, "
              f"or a run's fastest steady epoch over {SPREAD_MAX:g}× its slowest")

