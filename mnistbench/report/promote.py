"""A user's results folder joins the shipped reference on purpose only: complete, ``report --check``-clean, copied whole.

"Complete": every cell of the folder's spec has a run file, none failed, and the tables match the run
files. The copy keeps the run files (with their weights and recorded environment: the machine), the
tables, figures and manifest; it leaves out what belongs to one machine's work in progress
(checkpoints, locks, exports) and the comparison with the reference it replaces.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import MnistbenchError
from .groups import describe_devices
from ..layout import CHECKPOINTS, LOCKS
from .reference import REFERENCE, VS_JSON, VS_MD
from .build import check_report, write_report
from ..results import load_records

# Left out of the copy: work in progress, exports, and the old comparison.
LEFT_OUT = (CHECKPOINTS, LOCKS, "tensorboard", "mlruns", VS_MD, VS_JSON, ".*.tmp", ".lock", ".ray-probe-*")


@dataclass(frozen=True)
class Promotion:
    source: Path
    target: Path
    run_files: int
    machine: str
    replaced: bool


def find_spec_file(name: str, given: Optional[Path]) -> Path:
    if given is not None:
        return Path(given)
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (base / "bench" / f"{name}.yaml").is_file():
            return base / "bench" / f"{name}.yaml"
    raise MnistbenchError(f"cannot tell whether the folder holds every cell of spec '{name}': no bench/{name}.yaml "
                          "here; pass --spec FILE")


def check_complete(folder: Path, spec_file: Optional[Path]) -> tuple[str, int, str]:
    """(spec name, run files, machine words) of a folder fit to join the reference; else one line saying why not."""
    from ..spec.schema import load_spec

    records = load_records(folder)
    specs = sorted({r.spec for r in records})
    if len(specs) != 1:
        raise MnistbenchError(f"{folder} holds runs of {len(specs)} specs ({', '.join(specs) or 'none'}); promote one spec's folder")
    failed = sorted(r.cell for r in records if r.status == "failed")
    if failed:
        raise MnistbenchError(f"{folder}: {len(failed)} cells failed ({', '.join(failed[:3])}); run them again first")
    spec = load_spec(find_spec_file(specs[0], spec_file))
    missing = sorted({c.id for c in spec.cells()} - {r.cell for r in records})
    if missing:
        raise MnistbenchError(f"{folder} is incomplete: {len(missing)} of {len(spec.cells())} cells of spec "
                              f"'{spec.name}' have no run file ({', '.join(missing[:3])}); finish the run first")
    problems = check_report(folder)
    if problems:
        raise MnistbenchError(f"{folder}: {problems[0]}; `mnistbench report --check {folder}` must pass first")
    return specs[0], len(records), describe_devices(records)


def promote(folder: Path, reference_root: Path = Path(REFERENCE), spec_file: Optional[Path] = None,
            replace: bool = False) -> Promotion:
    """Copy ``folder`` into ``<reference_root>/<spec name>``; an existing reference is replaced only with ``replace``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MnistbenchError(f"no results folder {folder}")
    name, count, machine = check_complete(folder, spec_file)
    target = Path(reference_root) / name
    if target.resolve() == folder.resolve():
        raise MnistbenchError(f"{folder} is already the reference of spec '{name}'")
    existed = target.exists()
    if existed and not replace:
        raise MnistbenchError(f"{target} exists (the current reference of spec '{name}'); pass --replace to replace it")
    _copy_into_place(folder, target)
    return Promotion(folder, target, count, machine, existed)


def _copy_into_place(folder: Path, target: Path) -> None:
    """Copy beside the target first, then swap: a failed copy leaves the old reference as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = stage.with_name(stage.name + ".old")
    try:
        shutil.copytree(folder, stage / "copy", ignore=shutil.ignore_patterns(*LEFT_OUT))
        if (folder / VS_JSON).exists():  # its page showed the comparison left out: rebuilt from the same run files
            write_report(stage / "copy")
        problems = check_report(stage / "copy")
        if problems:
            raise MnistbenchError(f"the copy of {folder} does not check: {problems[0]}")
        if target.exists():
            target.rename(old)
        (stage / "copy").rename(target)
    except OSError as e:
        if old.exists() and not target.exists():
            old.rename(target)  # put the old reference back
        raise MnistbenchError(f"cannot copy {folder} to {target}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
