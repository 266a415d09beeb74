"""Write a results folder's report as one consistent set: tables, figures, then ``manifest.json``.

The manifest names the run files the set was built from (with their SHA-256) and the
files of the set (with theirs). It is removed before anything is rewritten and written
last, so a folder whose manifest is missing or disagrees with what is on disk holds
tables that may not match its run files: ``mnistbench report --check`` says so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import MnistbenchError
from .files import write_atomic
from .groups import Report, build_report
from .results import run_files
from .tables import csv_text, markdown

MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_report(results_dir: Path, plots: bool = True) -> list[Path]:
    """Rebuild ``summary.csv``, ``summary.md``, the plots and the manifest from the run files alone.

    Returns the paths written. The output depends on the run files only, so running it twice
    gives identical tables (and, with the same matplotlib, identical figures).
    """
    results_dir = Path(results_dir)
    report = build_report(results_dir)
    manifest = results_dir / MANIFEST
    try:
        manifest.unlink(missing_ok=True)
    except OSError as e:
        raise MnistbenchError(f"cannot remove {manifest}: {e.strerror}") from None
    written = [results_dir / "summary.csv", results_dir / "summary.md"]
    write_atomic(written[0], csv_text(report))
    figures: list[Path] = []
    if plots:
        from .plots import write_plots

        figures = write_plots(results_dir, report)
    write_atomic(written[1], markdown(report, [p.name for p in figures]))
    write_manifest(results_dir, report, written + figures)
    return written + figures + [manifest]


def write_manifest(results_dir: Path, report: Report, outputs: list[Path]) -> None:
    payload = {
        "about": "the run files these tables and figures were built from; checked by `mnistbench report --check`",
        "run_files": {name: _sha256(results_dir / "runs" / name) for name in report.run_files},
        "outputs": {p.name: _sha256(p) for p in outputs},
        "warnings": report.warnings,
    }
    write_atomic(results_dir / MANIFEST, json.dumps(payload, indent=2) + "\n")


def check_report(results_dir: Path) -> list[str]:
    """What is out of date in a folder's report (empty when tables, figures and run files agree)."""
    results_dir = Path(results_dir)
    path = results_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        recorded, outputs = dict(manifest["run_files"]), dict(manifest["outputs"])
    except FileNotFoundError:
        return [f"{path.name} is missing: the report was never finished or is being rewritten"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{path.name} is not a valid manifest"]
    present = {p.name: p for p in run_files(results_dir)}
    problems = [f"run file {n} is not in the tables" for n in sorted(set(present) - set(recorded))]
    problems += [f"run file {n} is in the tables but no longer present" for n in sorted(set(recorded) - set(present))]
    problems += [f"run file {n} changed after the tables were built" for n in sorted(set(present) & set(recorded))
                 if _sha256(present[n]) != recorded[n]]
    for name, digest in sorted(outputs.items()):
        out = results_dir / name
        if "/" in name or not out.is_file():
            problems.append(f"{name} is missing")
        elif _sha256(out) != digest:
            problems.append(f"{name} is not the one built with the others")
    return problems
