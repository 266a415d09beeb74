"""Per-epoch checkpoints of a running cell: the engine's ``ResumeState``, serialised, and nothing else.

A checkpoint belongs to one cell key. One that cannot be read or does not hold a
sound state is moved aside (``<cell>.pt.bad``) with a message, and its cell restarts.
A cell whose ``<cell>.pt`` holds another key's progress keeps its own in ``<cell>~<suffix>.pt``
(``checkpoint_for``), so neither overwrites the other.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Optional

import torch
from pydantic import TypeAdapter, ValidationError

from ..train.engine import ResumeState
from ..errors import MnistbenchError
from ..files import write_atomic
from ..results import EpochMetrics

_EPOCHS = TypeAdapter(list[EpochMetrics])
FORMAT = 2


def checkpoint_path(results_dir: Path, cell: str) -> Path:
    return Path(results_dir) / "checkpoints" / f"{cell}.pt"


def checkpoint_for(results_dir: Path, cell: str, key: str, suffix: str) -> Path:
    """The checkpoint a cell of ``key`` resumes from and writes: the candidate that holds this key, else the first
    that is absent or unreadable (it is set aside when read), never one that holds another key's progress."""
    from ..layout import file_stems

    candidates = [checkpoint_path(results_dir, stem) for stem in file_stems(cell, suffix)]
    owners = [_owner(path) for path in candidates]
    for path, owner in zip(candidates, owners):
        if owner == key:
            return path
    for path, owner in zip(candidates, owners):
        if owner is None:
            return path
    raise MnistbenchError(f"{candidates[0]} and {candidates[-1].name} hold the progress of other configurations of "
                          f"cell {cell}: finish or remove one of them, or use another --results-dir")


def _owner(path: Path) -> Optional[str]:
    """The key a checkpoint file belongs to; None when there is none or it cannot be read."""
    if not os.path.lexists(path):
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        key = payload.get("key", payload.get("config_hash")) if isinstance(payload, dict) else None
    except Exception:  # noqa: BLE001 - unreadable: whoever claims it sets it aside
        return None
    return key if isinstance(key, str) else None


def save_checkpoint(path: Path, key: str, state: ResumeState) -> None:
    """Write the state atomically; a full disk is a one-line ``MnistbenchError`` (torch itself would raise RuntimeError)."""
    payload = {"format": FORMAT, "key": key, **asdict(state)}
    payload["epochs"] = [asdict(e) for e in state.epochs]
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # serialised in memory (a few MB), so every OS error comes from write_atomic
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path, key: str, epochs: int) -> tuple[Optional[ResumeState], str]:
    """(state, "") for a sound checkpoint of this key; (None, why) when there is none or it was set aside.

    A checkpoint of another key (the cell's settings or data changed) is left alone and
    ignored; one that is unreadable or malformed is renamed to ``.bad`` so nothing reads it again.
    """
    if not os.path.lexists(path):
        return None, ""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict):
            raise ValueError(f"holds a {type(payload).__name__}, not a mapping")
        if payload.get("key", payload.get("config_hash")) != key:
            return None, ""
        state = _state(payload, epochs)
    except Exception as e:  # noqa: BLE001 - whatever is wrong with it, the cell restarts
        return None, set_aside(path, str(e).splitlines()[0][:120] if str(e) else type(e).__name__)
    return state, ""


def set_aside(path: Path, why: str) -> str:
    """Move a bad checkpoint out of the way (a folder or file alike) and say so in one line."""
    bad = path.with_name(path.name + ".bad")
    try:
        if bad.is_dir() and not bad.is_symlink():
            import shutil

            shutil.rmtree(bad)
        os.replace(path, bad)
        where = f"moved to {bad.name}"
    except OSError as e:
        where = f"could not be moved aside ({e.strerror}); it is ignored"
    return f"checkpoint {path.name} is unusable ({why}); {where}, and the cell restarts"


# Fields added after checkpoints were first written, or only present with some settings.
OPTIONAL = ("time_to_target_s", "epochs_to_target", "distort_generator", "wall_to_target_s", "ema")


def _state(payload: dict, epochs: int) -> ResumeState:
    names = [f.name for f in fields(ResumeState)]
    missing = [n for n in names if n not in payload and n not in OPTIONAL]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    try:
        done = _EPOCHS.validate_python(payload["epochs"])
    except ValidationError as e:
        raise ValueError(f"epochs: {e.errors()[0]['msg']}") from None
    if not done or len(done) >= epochs + 1 or any(e.epoch != i for i, e in enumerate(done, start=1)):
        raise ValueError(f"holds {len(done)} epochs for a cell of {epochs}")
    if not isinstance(payload["model"], dict) or not all(isinstance(v, torch.Tensor) for v in payload["model"].values()):
        raise ValueError("model: not a state dict of tensors")
    if not isinstance(payload["optimizer"], dict) or not isinstance(payload["generator"], torch.Tensor):
        raise ValueError("optimizer or generator state malformed")
    if not isinstance(payload.get("distort_generator"), (torch.Tensor, type(None))):
        raise ValueError("distortion generator state malformed")
    if payload["scheduler"] is not None and not isinstance(payload["scheduler"], dict):
        raise ValueError("scheduler state malformed")
    ema = payload.get("ema")
    if ema is not None and not (isinstance(ema, dict) and all(isinstance(v, torch.Tensor) for v in ema.values())):
        raise ValueError("ema: not a state dict of tensors")
    for name in ("time_to_target_s", "epochs_to_target", "wall_to_target_s"):  # copied into the run file, which must stay strict JSON
        value = payload.get(name)
        if value is not None and not (isinstance(value, float) and math.isfinite(value)):
            raise ValueError(f"{name}: not a finite number")
    return ResumeState(**{**{n: payload.get(n) for n in names}, "epochs": done})
