"""What an inference run measures: validated once, from the command line or an ``inference:`` spec section."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import MnistbenchError
from ..spec.safeyaml import load_bounded

# MLPerf's high-accuracy tier: a backend must keep 99.9% of the fp32 accuracy of the same weights.
ACCURACY_FLOOR = 0.999
CPU_BACKENDS = ("eager", "compile", "onnxruntime", "openvino", "int8")
CUDA_BACKENDS = ("eager", "compile", "fp16", "bf16", "onnxruntime")


class InferOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    results: Optional[str] = None  # the results folder whose weights are measured (a spec names it; the CLI's DIR wins)
    device: str = "cpu"
    backends: Optional[tuple[str, ...]] = None  # None: every backend of the device
    batch_sizes: tuple[int, ...] = (1, 64, 1024, 10000)
    threads: int = Field(2, ge=1, le=1024)  # intra-op threads of every backend alike
    min_queries: int = Field(2000, ge=1)  # batch-1 latency: at least this many timed queries ...
    min_seconds: float = Field(2.0, ge=0)  # ... and at least this long
    warmup_queries: int = Field(100, ge=0)  # untimed for the figures, reported apart from the cold (first) query
    throughput_seconds: float = Field(1.0, ge=0)  # per batch size, after one warm-up batch
    calibration_samples: int = Field(1000, ge=1)  # training images that calibrate int8 (never test images)
    timing_seeds: Optional[int] = Field(None, ge=1)  # time only the first N seeds of a model (accuracy: every seed)
    isolate: bool = False  # each model x backend in a fresh process: memory and cold start as a new process sees them

    @model_validator(mode="after")
    def _default_backends(self) -> "InferOptions":
        # Without a list, every backend of the device; set past pydantic so it stays "unset" (with_overrides).
        if self.backends is None:
            object.__setattr__(self, "backends", CUDA_BACKENDS if self.device.startswith("cuda") else CPU_BACKENDS)
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, not {v!r}")
        return v

    @field_validator("backends")
    @classmethod
    def _backends(cls, v: Optional[tuple[str, ...]]) -> Optional[tuple[str, ...]]:
        if v is None:
            return v
        unknown = sorted(set(v) - set(CPU_BACKENDS) - set(CUDA_BACKENDS))
        if unknown or not v:
            raise ValueError(f"unknown backend {', '.join(unknown) or '(none given)'}; known: "
                             f"{', '.join(dict.fromkeys(CPU_BACKENDS + CUDA_BACKENDS))}")
        return tuple(dict.fromkeys(v))

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(b < 1 for b in v):
            raise ValueError("batch sizes must be positive integers")
        return tuple(sorted(set(v)))

    def check_device(self) -> None:
        allowed = CUDA_BACKENDS if self.device.startswith("cuda") else CPU_BACKENDS
        wrong = [b for b in self.backends if b not in allowed]
        if wrong:
            raise MnistbenchError(f"backend {', '.join(wrong)} does not run on {self.device}; there: {', '.join(allowed)}")


def parse_options(raw: object, where: str) -> InferOptions:
    try:
        options = InferOptions.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(map(str, err["loc"])) or "inference"
        raise MnistbenchError(f"{where}: {field}: {err['msg']}") from None
    options.check_device()
    return options


def load_options(path: Path) -> InferOptions:
    """The ``inference:`` section of a spec file (bench/infer-cpu.yaml), validated."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise MnistbenchError(f"{path}: cannot read ({e.strerror or e})") from None
    raw = load_bounded(text, str(path))
    if not isinstance(raw, dict) or not isinstance(raw.get("inference"), dict):
        raise MnistbenchError(f"{path}: no 'inference:' section (docs/inference.md)")
    return parse_options(raw["inference"], f"{path}: inference")


def with_overrides(options: InferOptions, **overrides) -> InferOptions:
    """``options`` with the command line's values (those not None) in place of the spec's, validated again."""
    given = {k: v for k, v in overrides.items() if v is not None}
    # Only what the spec set: a default (the backends of the device) follows the command line's device.
    return parse_options({**options.model_dump(exclude_unset=True), **given}, "command line")
