"""What a backend is given (``BackendContext``) and what it hands back ready to time (``Prepared``).

A module of its own so that the backends (backends.py) and the ONNX/OpenVINO exporters (onnx.py) share the
types without importing each other.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np
import torch


@dataclass
class BackendContext:
    device: str
    threads: int
    workdir: Path  # where exported files go (one folder per trained model)
    calibration: np.ndarray  # normalized training images, N x 1 x 28 x 28 float32: int8's calibration set
    example: torch.Tensor  # a few normalized test images: the export's equal-outputs check


@dataclass
class Prepared:
    run: Callable[[Any], Any]  # one query on an input made by to_input
    to_input: Callable[[torch.Tensor], Any]  # a normalized float32 CPU batch -> the backend's input (placed, cast)
    to_logits: Callable[[Any], np.ndarray]  # the backend's output -> float32 logits on the host (a copy)
    sync: Callable[[], None] = lambda: None  # waits for queued device work (CUDA), so a query's time is its own
    context: Callable[[], ContextManager] = contextlib.nullcontext  # entered once around a measurement loop
    files: dict[str, int] = field(default_factory=dict)  # format -> bytes on disk
