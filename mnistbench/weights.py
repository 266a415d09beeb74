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


def finished_runs(folder: Path, doing: str) -> list[tuple[Path, "RunRecord"]]:
    """The finished runs of a results folder (run file, record), which inference and robustness read; none is one line
    naming what could not be ``doing`` (e.g. "measure")."""
    from .results import load_record, run_files

    records = [(path, load_record(path)) for path in run_files(folder)]
    finished = [(p, r) for p, r in records if r.status == "finished"]
    if not finished:
        raise MnistbenchError(f"{folder}: no finished runs to {doing}")
    return finished


def trained_model(run_file: Path, record: "RunRecord") -> "torch.nn.Module":
    """The run's model, built as the run built it (a file reference from its recorded folder, unchanged) with the
    weights it saved, in eval mode; any problem is one line."""
    from .models.factory import build_model, load_unchanged

    source = load_unchanged(record.config["model"], base_dir(record), record.config.get("model_sha256"))
    return load_into(build_model(source), load_weights(run_file, record), str(run_file)).eval()


def base_dir(record: "RunRecord") -> str:
    """The folder a file reference (``./nets.py:build``) was resolved from: the recorded file minus the reference's
    path; "" (the working folder) for every other model."""
    from .models.factory import parse_model_ref

    try:
        ref = parse_model_ref(record.config["model"])
    except ValueError:
        return ""
    file, target = record.model.get("file"), Path(ref.target).parts
    if ref.kind != "file" or not file or Path(file).parts[-len(target):] != target:
        return ""
    return str(Path(*Path(file).parts[:-len(target)]))


def load_into(model: "torch.nn.Module", state: dict[str, "torch.Tensor"], where: str) -> "torch.nn.Module":
    """``model`` with ``state`` loaded strictly; weights of another model or shape are one line naming ``where``."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())[:200]
        raise MnistbenchError(f"{where}: the weights do not fit the model ({first})") from None
    return model
