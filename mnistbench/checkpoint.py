"""Per-epoch checkpoints of a running cell, so an interrupted cell resumes where it stopped."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch

from .engine import Resume
from .files import atomic_path
from .results import EpochMetrics


def checkpoint_path(results_dir: Path, cell: str) -> Path:
    return results_dir / "checkpoints" / f"{cell}.pt"


def save_checkpoint(path: Path, config_hash: str, epochs: list[EpochMetrics], state: dict[str, Any]) -> None:
    payload = {"config_hash": config_hash, "epochs": [asdict(e) for e in epochs], **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, config_hash: str) -> Optional[Resume]:
    """The resume state in ``path`` if it belongs to this exact configuration; None otherwise."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint only costs a restart of the cell
        return None
    if payload.get("config_hash") != config_hash:
        return None
    return Resume(
        epochs=[EpochMetrics(**e) for e in payload["epochs"]],
        model=payload["model"],
        optimizer=payload["optimizer"],
        scheduler=payload["scheduler"],
        generator=payload["generator"],
        time_to_target_s=payload.get("time_to_target_s"),
        epochs_to_target=payload.get("epochs_to_target"),
    )
