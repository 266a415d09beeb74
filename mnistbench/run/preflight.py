"""What a run checks before the first epoch: its models (built and described once), and in its results folder
layout, file-name lengths, free space.

Each problem here would otherwise surface only after training, when a run file, a
checkpoint or the report is written. The free-space estimate (docs/robustness.md) is
deliberately generous; ``MNISTBENCH_SKIP_SPACE_CHECK=1`` skips it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Optional

from ..errors import MnistbenchError, brief
from ..report.build import REPORT_FILES

MiB = 2**20
RUN_FILE_BYTES = 16 * 1024  # a run file without its epochs (config, environment, data files), generously
EPOCH_BYTES = 1024  # one epoch's metrics in a run file
REPORT_BYTES = 12 * MiB  # tables, six figures and the page with its 5 MB script, staged next to the old set while it is replaced
# Longest name written for a cell: ".<cell>~<8 hex>.json.<8 random>.tmp", the temporary of its run file when another
# measurement of the cell holds the plain name (layout.file_stems).
NAME_OVERHEAD = len("~12345678") + len("..json.") + 8 + len(".tmp")


def check_layout(folder: Path) -> None:
    """``runs/``, ``checkpoints/`` and ``.locks/`` are folders if they exist, report files are files."""
    for sub in ("runs", "checkpoints", ".locks"):
        path = folder / sub
        if os.path.lexists(path) and not path.is_dir():
            raise MnistbenchError(f"{path} exists but is not a folder: move it away")
    for name in REPORT_FILES:
        path = folder / name
        if path.is_dir() or (os.path.lexists(path) and not path.is_file()):
            raise MnistbenchError(f"{path} exists but is not a file: move it away, the report writes there")


def check_name_lengths(folder: Path, cell_ids: Iterable[str]) -> None:
    """Every file a cell or the report writes has a name (and a path) the file system accepts."""
    name_max = _pathconf(folder, "PC_NAME_MAX", 255)
    path_max = _pathconf(folder, "PC_PATH_MAX", 4096)
    base = len(os.fsencode(str(folder.resolve())))
    # ".report.<8>.tmp/.<name>.<8>.tmp", the staged report's temporaries; "checkpoints/.<cell>.json.<8>.tmp" per cell
    report = base + len("/.report.12345678.tmp/.") + max(map(len, REPORT_FILES)) + len(".12345678.tmp")
    if report >= path_max:
        raise MnistbenchError(f"{folder}: the report's paths would be {report} bytes, more than the {path_max} "
                              "the system allows: use a shorter --results-dir")
    for cell_id in cell_ids:
        longest = len(os.fsencode(cell_id)) + NAME_OVERHEAD
        if longest > name_max:
            raise MnistbenchError(
                f"cell {_short(cell_id)}: its files would have names of {longest} bytes, more than the {name_max} "
                f"that {folder} allows: make the spec's varying settings fewer or shorter"
            )
        if base + len("/checkpoints/") + longest >= path_max:
            raise MnistbenchError(
                f"{folder}: paths of cell {_short(cell_id)} would be {base + len('/checkpoints/') + longest} bytes, "
                f"more than the {path_max} the system allows: use a shorter --results-dir"
            )


def _short(cell_id: str) -> str:
    return cell_id if len(cell_id) <= 60 else cell_id[:59] + "…"


def _pathconf(folder: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default


def estimate_bytes(cells: list[tuple[int, int]], optimizer_states: int = 2) -> int:
    """Bytes a run writes at most: run files of ``cells`` ((parameters, epochs) each), two checkpoints, the report.

    A checkpoint holds the weights and up to ``optimizer_states`` tensors of the same size
    (Adam's two moments) in float32, plus 64 KiB of metadata; while one is replaced the old
    and the new exist together, hence two of the largest.
    """
    run_files = sum(RUN_FILE_BYTES + EPOCH_BYTES * epochs for _, epochs in cells)
    largest = max((parameters for parameters, _ in cells), default=0)
    checkpoint = 4 * largest * (1 + optimizer_states) + 64 * 1024
    return run_files + (2 * checkpoint if cells else 0) + REPORT_BYTES


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse to start when the folder's file system has less free space than ``needed``."""
    if os.environ.get("MNISTBENCH_SKIP_SPACE_CHECK") == "1":
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # nothing to measure with; the writes themselves still fail in one line
    if free < needed:
        raise MnistbenchError(
            f"{folder}: {free / MiB:.1f} MiB free, but this run writes up to about {needed / MiB:.1f} MiB "
            "(run files, checkpoints, the report): free some space or use another --results-dir"
        )


def check_before_training(folder: Path, cells: list) -> None:
    """Every folder check for the cells about to run (``spec.Cell``s): layout, name lengths, free space."""
    check_layout(folder)
    check_name_lengths(folder, [c.id for c in cells])
    sizes = [(_parameters(c.config), c.config.epochs) for c in cells]
    states = max((1 if c.config.optimizer == "sgd" else 2 for c in cells), default=0)
    check_free_space(folder, estimate_bytes(sizes, states))


def _parameters(config) -> int:
    """The cell's model's parameter count (built and checked once by the plan); 0 for one that cannot be built."""
    try:
        return describe_model(config.model, config.base_dir, config.model_sha256)["parameters"]
    except Exception:  # noqa: BLE001 - the cell itself reports why the model cannot be built
        return 0


# --------------------------------------------------------------------------- the run's models, checked once

# (model, base_dir, sha256) -> ``models.describe.describe``'s dict: filled by the checks before a run (``check_models``),
# so the driver describes a referenced model without running its code again (e.g. for the record of a cell whose
# process died).
DESCRIBED: dict[tuple[str, str, str | None], dict] = {}


def describe_model(name: str, base_dir: str = "", sha256: str | None = None) -> dict:
    """The model's description as every run record stores it (``models.describe.describe``), built once per process.

    ``sha256``: the hash of a referenced model's file the run was planned with (a changed file is an error). A
    referenced model is also checked to give 10 logits; any problem is one line naming the reference.
    """
    from ..models.describe import describe
    from ..models.factory import checked_model
    from ..train import torchstate

    key = (name, base_dir, sha256)
    if key not in DESCRIBED:
        with torchstate.kept():  # a factory's global side effects stay inside the check
            DESCRIBED[key] = describe(*checked_model(name, base_dir, sha256))
    return DESCRIBED[key]


def check_models(configs, timeout: float | None = None) -> dict[str, str | None]:
    """Before any training: load, build, check and describe each distinct model once; model -> SHA-256 of its file
    (None for a built-in model). Referenced models are checked in a child process (``isolation``), within ``timeout``."""
    from ..models.factory import load_model_source, parse_model_ref

    distinct = list({c.model: c for c in configs}.values())
    referenced = [c for c in distinct if not parse_model_ref(c.model).builtin]
    hashes: dict[str, str | None] = {}
    if referenced:
        for (model, base_dir, sha256), description in check_in_child(referenced, timeout).items():
            DESCRIBED[(model, base_dir, sha256)] = description
            hashes[model] = sha256
    for c in distinct:
        if c.model not in hashes:
            hashes[c.model] = load_model_source(c.model, c.base_dir).sha256
            describe_model(c.model, c.base_dir, hashes[c.model])
    return hashes


def check_models_here(configs) -> dict[tuple[str, str, str | None], dict]:
    """What a child process answers for ``check_models``: each model loaded, checked and described in this process."""
    from ..models.factory import load_model_source

    out = {}
    for c in configs:
        sha256 = load_model_source(c.model, c.base_dir).sha256
        out[(c.model, c.base_dir, sha256)] = describe_model(c.model, c.base_dir, sha256)
    return out


def _check_work(configs: list, send, should_stop) -> dict:  # noqa: ARG001 - a check sends no events
    return check_models_here(configs)


def check_in_child(configs: list, timeout: Optional[float]) -> dict:
    """``preflight.check_models_here`` for the referenced models, in a child process: (model, base_dir, sha256) -> description."""
    from .isolation import CHECK_TIMEOUT, ChildEnded, Job, run_in_child

    bound = CHECK_TIMEOUT if timeout is None else timeout * len(configs)  # each model gets the cell's bound
    names = ", ".join(brief(c.model) for c in configs)
    try:
        return run_in_child(Job(_check_work, (configs,)), lambda e: None, lambda: 0, bound)
    except ChildEnded as e:
        bound_text = f"{bound:g} s (the spec's cell_timeout per model, else {CHECK_TIMEOUT:g} s)"
        raise MnistbenchError(f"model {names}: checking it before the run: {e.reason('during the check', bound_text)}") from None
