"""PyTorch's process-wide settings, kept across a piece of code that may change them (a cell, a user's model).

A model's code can change settings that every later cell in the same process would inherit
(``torch.set_default_dtype(torch.float64)`` in a factory made every cell after it fail). Each
cell, and each check of a referenced model, runs inside ``kept()``: what it changed is put
back afterwards, and ``changed()`` names what was changed, for the record and the warning.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

# name -> (read, write): every setting a cell or a model could leave behind that changes the next cell's numbers or speed.
SETTINGS: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "default_dtype": (torch.get_default_dtype, torch.set_default_dtype),
    "default_device": (lambda: torch.get_default_device(), lambda v: torch.set_default_device(v)),
    "grad_enabled": (torch.is_grad_enabled, torch.set_grad_enabled),
    "anomaly_detection": (torch.is_anomaly_enabled, torch.set_anomaly_enabled),
    "num_threads": (torch.get_num_threads, torch.set_num_threads),
    "deterministic_algorithms": (
        lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        lambda v: torch.use_deterministic_algorithms(v[0], warn_only=v[1])),
    "float32_matmul_precision": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    "cudnn_enabled": (lambda: torch.backends.cudnn.enabled, lambda v: setattr(torch.backends.cudnn, "enabled", v)),
    "cudnn_deterministic": (lambda: torch.backends.cudnn.deterministic, lambda v: setattr(torch.backends.cudnn, "deterministic", v)),
    "cudnn_benchmark": (lambda: torch.backends.cudnn.benchmark, lambda v: setattr(torch.backends.cudnn, "benchmark", v)),
    "cudnn_allow_tf32": (lambda: torch.backends.cudnn.allow_tf32, lambda v: setattr(torch.backends.cudnn, "allow_tf32", v)),
    "cuda_matmul_allow_tf32": (lambda: torch.backends.cuda.matmul.allow_tf32,
                               lambda v: setattr(torch.backends.cuda.matmul, "allow_tf32", v)),
}


def snapshot() -> dict[str, Any]:
    return {name: read() for name, (read, _) in SETTINGS.items()}


def restore(saved: dict[str, Any]) -> list[str]:
    """Put every setting back; the names of those that had changed."""
    changed = []
    for name, (read, write) in SETTINGS.items():
        if read() != saved[name]:
            changed.append(name)
            write(saved[name])
    return changed


class Kept:
    """What ``kept()`` yields: after the block, the settings the code inside it changed (and that were put back)."""

    def __init__(self) -> None:
        self.changed: list[str] = []


@contextlib.contextmanager
def kept() -> Iterator[Kept]:
    """Run a block, then restore PyTorch's process-wide settings to what they were before it, whatever happened."""
    saved, outcome = snapshot(), Kept()
    try:
        yield outcome
    finally:
        outcome.changed = restore(saved)
