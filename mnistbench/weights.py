"""A finished cell's final weights: saved as safetensors beside its run file, hashed in its record, loaded back checked.

safetensors holds tensors only (no pickle, so loading runs no code) and is small: the file is the
parameters' bytes plus a JSON header. The record's ``extra.weights`` names the file and its SHA-256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .errors import MnistbenchError
from .files import write_atomic
from .layout import weights_file

if TYPE_CHECKING:
    import torch

    from .results import RunRecord

FORMAT = "safetensors"


def weights_bytes(state: dict[str, "torch.Tensor"]) -> bytes:
    from safetensors.torch import save

    return save(state, metadata={"format": "pt"})


def save_weights(run_file: Path, data: bytes) -> dict:
    """Write the weights beside ``run_file`` atomically; what the record keeps of them (file, SHA-256, bytes)."""
    path = weights_file(run_file)
    write_atomic(path, data)
    return describe_weights(path.name, data)


def describe_weights(name: str, data: bytes) -> dict:
    return {"file": name, "format": FORMAT, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def load_weights(run_file: Path, record: "RunRecord") -> dict[str, "torch.Tensor"]:
    """The state dict saved with ``record`` (read from beside ``run_file``), checked against the hash in the record.

    Any problem (no weights kept, a missing, truncated or altered file) is one ``MnistbenchError`` line naming the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    kept: Optional[dict] = record.extra.get("weights")
    if not isinstance(kept, dict) or "sha256" not in kept:
        raise MnistbenchError(f"{run_file}: its run kept no weights (runs before mnistbench 0.3 did not): run the cell again with --force")
    path = Path(run_file).parent / str(kept.get("file", weights_file(run_file).name))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MnistbenchError(f"{path}: cannot read the weights ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != kept["sha256"]:
        raise MnistbenchError(f"{path}: not the weights its run saved (SHA-256 differs from {run_file.name}'s record)")
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise MnistbenchError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None


def load_into(model: "torch.nn.Module", state: dict[str, "torch.Tensor"], where: str) -> "torch.nn.Module":
    """``model`` with ``state`` loaded strictly; weights of another model or shape are one line naming ``where``."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())[:200]
        raise MnistbenchError(f"{where}: the weights do not fit the model ({first})") from None
    return model
