"""Write a folder's robustness summary: summary.md, summary.json (every run's figures) and the figures."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import write_atomic
from .figures import write_figures
from .layout import robustness_dir
from .markdown import render
from .readme import shift_sentence


def write_summary(folder: Path, results: list[dict]) -> list[Path]:
    out = robustness_dir(folder)
    md, js = out / "summary.md", out / "summary.json"
    text = render(Path(folder).name, results) + "\n## In one sentence\n\n" + shift_sentence(results) + "\n"
    write_atomic(md, text)
    write_atomic(js, json.dumps({"runs": results}, indent=1) + "\n")
    return [md, js, *write_figures(out, results)]


def load_summary(folder: Path) -> list[dict]:
    """The runs' figures of a folder's robustness/summary.json (for the README sentence from committed results)."""
    from ..errors import MnistbenchError

    path = robustness_dir(folder) / "summary.json"
    try:
        return json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError) as e:
        raise MnistbenchError(f"{path}: no robustness summary ({e}); run: mnistbench robust {folder}") from None


def readme_block(folder) -> str:
    """The paragraph for the README, from ``folder``'s committed robustness/summary.json."""
    return shift_sentence(load_summary(folder))
