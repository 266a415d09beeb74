"""Run records: one JSON file per finished cell, the single source every table and plot is built from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from .errors import MnistbenchError
from .files import write_atomic

SCHEMA = 1


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    train_seconds: float
    eval_seconds: float
    train_samples_per_s: float
    eval_samples_per_s: float
    lr: float


@dataclass
class RunRecord:
    spec: str
    cell: str
    config: dict  # the cell's full resolved CellConfig
    config_hash: str
    status: str  # "finished" or "diverged"
    model: dict  # name, parameters, forward_flops, train_flops
    data: dict  # dataset, official, files: [{role, file, sha256, md5, official}]
    epochs: list[EpochMetrics]
    environment: dict
    started: str
    finished: str
    device: str = "cpu"
    time_to_target_s: Optional[float] = None
    epochs_to_target: Optional[float] = None
    peak_memory_bytes: Optional[int] = None
    note: str = ""
    extra: dict = field(default_factory=dict)  # measurements added by later features (roofline, ...)
    schema: int = SCHEMA

    @property
    def final(self) -> EpochMetrics:
        return self.epochs[-1]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, raw: dict) -> "RunRecord":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["epochs"] = [EpochMetrics(**e) for e in raw["epochs"]]
        return cls(**values)

    def save(self, runs_dir: Path) -> Path:
        path = runs_dir / f"{self.cell}.json"
        write_atomic(path, self.to_json())
        return path


def load_record(path: Path) -> RunRecord:
    try:
        raw = json.loads(path.read_text())
        if raw.get("schema") != SCHEMA:
            raise ValueError(f"schema {raw.get('schema')!r}, expected {SCHEMA}")
        return RunRecord.from_dict(raw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MnistbenchError(f"{path}: not a readable run file ({e})") from None


def load_records(results_dir: Path) -> list[RunRecord]:
    """All run files of one spec's results folder, in file-name order."""
    runs = Path(results_dir) / "runs"
    if not runs.is_dir():
        raise MnistbenchError(f"no run files in {results_dir} (expected {runs}/*.json)")
    return [load_record(p) for p in sorted(runs.glob("*.json"))]
