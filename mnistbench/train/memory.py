"""The process's peak resident memory over a stretch of code, from the kernel's own high-water mark.

A sampler that polls RSS every few milliseconds misses a sub-millisecond forward pass; Linux keeps the exact peak
(``VmHWM`` in ``/proc/self/status``) and lets a process reset it to its current RSS by writing ``5`` to
``/proc/self/clear_refs`` (kernel 4.0+). Where either is unavailable the peak is ``None`` ("n/a"), never a guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
METHOD = "VmHWM reset through /proc/self/clear_refs"


def _status_kib(field: str) -> Optional[int]:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def current_rss_bytes() -> Optional[int]:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS; False where the kernel does not allow it (no peak then)."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def peak_rss_bytes() -> Optional[int]:
    """The process's RSS high-water mark since the last ``reset_peak``."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024
