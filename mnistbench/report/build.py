"""Write a results folder's report as one consistent set: tables, figures, then ``manifest.json``.

The manifest names the run files the set was built from (with their SHA-256) and the
files of the set (with theirs). The whole new set is written into a staging folder first;
then the old manifest is removed, the new files are renamed into place and the new manifest
comes last. A folder whose manifest is missing or disagrees with what is on disk holds
tables that may not match its run files: ``mnistbench report --check`` says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import MnistbenchError
from ..files import write_atomic
from .groups import Report, build_report
from ..results import run_files
from .tables import csv_text, roofline_csv_text, summary_markdown

MANIFEST = "manifest.json"
FIGURES = ("learning_curves", "final_error", "throughput", "roofline")
PAGE_FILES = ("index.html", "plotly.min.js")  # the browsable page and the Plotly script beside it (mnistbench/report/site)
# Every file a report or a run writes at the top of a results folder (plots as PNG and SVG).
REPORT_FILES = ("summary.csv", "roofline.csv", "summary.md", *(f"{f}.{ext}" for f in FIGURES for ext in ("png", "svg")), *PAGE_FILES, MANIFEST,
                "last_run.json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_report(results_dir: Path, plots: bool = True, page: bool | None = None) -> list[Path]:
    """Rebuild ``summary.csv``, ``summary.md``, the plots, the page (``index.html``, by default with the plots) and the
    manifest from the run files alone.

    Every file is first written into a staging folder inside ``results_dir``; only when all
    of them are complete do they replace the old set (by renames, the manifest last). A full
    disk or another OS error therefore leaves the old set as it was, manifest included.
    Returns the paths written. The output depends on the run files only, so running it twice
    gives identical tables (and, with the same matplotlib, identical figures).
    """
    results_dir = Path(results_dir)
    page = plots if page is None else page
    report = build_report(results_dir)
    with staging_folder(results_dir) as stage:
        staged = render_report(stage, report, plots, source=results_dir if page else None)
        write_manifest(stage, report, staged, runs_dir=results_dir / "runs", page_inputs=results_dir if page else None)
        commit_report(stage, results_dir, [p.name for p in staged])
    return [results_dir / p.name for p in staged] + [results_dir / MANIFEST]


@contextmanager
def staging_folder(results_dir: Path) -> Iterator[Path]:
    """A fresh ``.report.<random>.tmp`` folder in ``results_dir``, removed afterwards whatever happens."""
    try:
        stage = Path(tempfile.mkdtemp(prefix=".report.", suffix=".tmp", dir=results_dir))
    except OSError as e:
        raise MnistbenchError(f"cannot write the report in {results_dir}: {e.strerror or e}") from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def render_report(stage: Path, report: Report, plots: bool, source: Path | None = None) -> list[Path]:
    """Write the tables and figures into ``stage``, and the page when ``source`` (the results folder, whose other
    results the page shows) is given; return their paths (the manifest is not among them)."""
    csv_path, md_path = stage / "summary.csv", stage / "summary.md"
    write_atomic(csv_path, csv_text(report))
    roofline = roofline_csv_text(report)
    if roofline is not None:  # runs recorded before the memory roof have no roofline to write
        write_atomic(stage / "roofline.csv", roofline)
    figures: list[Path] = []
    if plots:
        from .plots import write_plots

        figures = write_plots(stage, report)
    write_atomic(md_path, summary_markdown(report, [p.name for p in figures]))
    if source is not None:
        from .site import write_page

        figures += write_page(stage, report, source)
    return [csv_path] + ([stage / "roofline.csv"] if roofline is not None else []) + [md_path] + figures


def commit_report(stage: Path, results_dir: Path, names: list[str]) -> None:
    """Move a complete staged set into place: the old manifest goes first, the new one comes last."""
    try:
        (results_dir / MANIFEST).unlink(missing_ok=True)
        for name in names:
            os.replace(stage / name, results_dir / name)
        os.replace(stage / MANIFEST, results_dir / MANIFEST)
    except OSError as e:  # the manifest is missing, so `report --check` calls the set stale until a rebuild
        raise MnistbenchError(f"cannot update the report in {results_dir}: {e.strerror or e}; run `mnistbench report` again") from None


def write_manifest(results_dir: Path, report: Report, outputs: list[Path], runs_dir: Path | None = None,
                   page_inputs: Path | None = None) -> None:
    """``manifest.json`` in ``results_dir``: the run files the set was built from and the set's files, with SHA-256;
    with ``page_inputs`` (the results folder), also the other results its page shows (inference, robustness, ...)."""
    runs_dir = runs_dir or results_dir / "runs"
    try:
        payload = {
            "about": "the run files these tables and figures were built from; checked by `mnistbench report --check`",
            "run_files": {name: _sha256(runs_dir / name) for name in report.run_files},
            "outputs": {p.name: _sha256(p) for p in outputs},
            "warnings": report.warnings,
        }
        if page_inputs is not None:
            from .site import page_input_files

            payload["page_inputs"] = {name: _sha256(page_inputs / name) for name in page_input_files(page_inputs)}
    except OSError as e:
        raise MnistbenchError(f"cannot read {e.filename} for the manifest: {e.strerror or e}") from None
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
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return [f"{path.name} is not a valid manifest"]
    present = {p.name: p for p in run_files(results_dir)}
    problems = [f"run file {n} is not in the tables" for n in sorted(set(present) - set(recorded))]
    problems += [f"run file {n} is in the tables but no longer present" for n in sorted(set(recorded) - set(present))]
    problems += [f"run file {n} changed after the tables were built" for n in sorted(set(present) & set(recorded))
                 if _sha256_or_none(present[n]) != recorded[n]]
    for name, digest in sorted(outputs.items()):
        out = results_dir / name
        if "/" in name or not out.is_file():
            problems.append(f"{name} is missing")
        elif _sha256_or_none(out) != digest:
            problems.append(f"{name} is not the one built with the others")
    return problems + _page_problems(results_dir, manifest.get("page_inputs"))


def _page_problems(results_dir: Path, recorded: object) -> list[str]:
    """Results shown on the page (inference, robustness, the comparison) that appeared, changed or went since it was built."""
    if not isinstance(recorded, dict):
        return []  # a manifest from before the page, or of a report built without figures
    from .site import page_input_files

    present = set(page_input_files(results_dir))
    problems = [f"{n} is not on the page (index.html)" for n in sorted(present - set(recorded))]
    problems += [f"{n} is on the page but no longer present" for n in sorted(set(recorded) - present)]
    return problems + [f"{n} changed after the page was built" for n in sorted(present & set(recorded))
                       if _sha256_or_none(results_dir / n) != recorded[n]]


def _sha256_or_none(path: Path) -> str | None:
    """The file's SHA-256, or None when it cannot be read (a folder, no permission): it then matches no manifest."""
    try:
        return _sha256(path)
    except OSError:
        return None
