"""An inference run as data: one ``BackendRun`` per trained model (cell) and backend, round-tripping through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import MnistbenchError
from .measure import Latency, Startup, Throughput

SCHEMA = 1
RESULT_FILE = "inference.json"


@dataclass
class Gate:
    accuracy: float  # on every test image
    fp32_accuracy: float  # the same weights in eager fp32 on the same device
    delta: float  # accuracy - fp32_accuracy
    max_abs_logit_diff: float
    flagged: bool  # below ACCURACY_FLOOR x fp32_accuracy


@dataclass
class BackendRun:
    cell: str
    model: str
    seed: int
    backend: str
    status: str  # "ok", "not installed" or "failed"
    reason: str = ""
    weights_sha256: str = ""  # the kept weights measured (the run record's extra.weights.sha256)
    parameters: int = 0
    files: dict[str, int] = field(default_factory=dict)  # format -> bytes on disk
    gate: Optional[Gate] = None
    startup: Optional[Startup] = None
    latency: Optional[Latency] = None  # None for seeds past timing_seeds
    throughput: list[Throughput] = field(default_factory=list)
    memory_baseline_bytes: Optional[int] = None
    peak_memory_bytes: dict[str, Optional[int]] = field(default_factory=dict)  # measurement -> peak over baseline

    @property
    def peak(self) -> Optional[int]:
        values = [v for v in self.peak_memory_bytes.values() if v is not None]
        return max(values) if values else None


@dataclass
class InferenceResult:
    folder: str
    options: dict[str, Any]
    device: str
    threads: int
    memory_method: str
    dataset: dict[str, Any]
    environment: dict[str, Any]
    runs: list[BackendRun]
    warnings: list[str] = field(default_factory=list)
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=False) + "\n"


def _run_from_dict(raw: dict) -> BackendRun:
    def maybe(cls, value):
        return None if value is None else cls(**value)

    latency = raw.get("latency")
    if latency is not None:
        latency = {**latency, **{k: tuple(latency[k]) if latency.get(k) else None for k in ("p90_ci", "p99_ci")}}
    return BackendRun(**{**raw, "gate": maybe(Gate, raw.get("gate")), "startup": maybe(Startup, raw.get("startup")),
                         "latency": maybe(Latency, latency), "throughput": [Throughput(**t) for t in raw.get("throughput", [])]})


def load_result(path: Path) -> InferenceResult:
    """An ``inference.json`` read back typed; a missing or malformed file is one line."""
    try:
        raw = json.loads(Path(path).read_text())
        return InferenceResult(**{**raw, "runs": [_run_from_dict(r) for r in raw["runs"]]})
    except OSError as e:
        raise MnistbenchError(f"{path}: cannot read ({e.strerror or e}); run `mnistbench infer` first") from None
    except (ValueError, TypeError, KeyError) as e:
        raise MnistbenchError(f"{path}: not an inference result ({str(e)[:120]})") from None
