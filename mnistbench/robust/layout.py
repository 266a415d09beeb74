"""Where the robustness evaluation writes inside a results folder (beside the folder's own runs/ and report)."""

from __future__ import annotations

from pathlib import Path

ROBUSTNESS = "robustness"


def robustness_dir(folder: Path) -> Path:
    return Path(folder) / ROBUSTNESS


def result_file(folder: Path, run_file: Path) -> Path:
    """One run's figures: ``<folder>/robustness/runs/<run stem>.json``."""
    return robustness_dir(folder) / "runs" / Path(run_file).with_suffix(".json").name
