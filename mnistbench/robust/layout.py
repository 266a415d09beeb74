"""Where the robustness evaluation writes inside a results folder (beside the folder's own runs/ and report)."""

from __future__ import annotations

from pathlib import Path

ROBUSTNESS = "robustness"
# Not "runs": tools that look for a results folder's run files (runs/*.json) must not mistake these for them.
PER_RUN = "per-run"


def robustness_dir(folder: Path) -> Path:
    return Path(folder) / ROBUSTNESS


def result_file(folder: Path, run_file: Path) -> Path:
    """One run's figures: ``<folder>/robustness/per-run/<run stem>.json``."""
    return robustness_dir(folder) / PER_RUN / Path(run_file).with_suffix(".json").name
