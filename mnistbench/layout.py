"""Where things live inside one results folder: the one owner of those paths.

```
<folder>/runs/<stem>.json          a cell's run record (results.py)
<folder>/runs/<stem>.safetensors   the weights that record evaluated last (saved with it)
<folder>/checkpoints/<stem>.pt     while a cell is in progress
```

A stem is the cell's id, or ``<cell id>~<8 hex digits>`` for another measurement of a cell whose
plain name a different configuration, data, thread count or machine already holds
(``results.run_file_for``, ``checkpoint.checkpoint_for``): two measurements never share a file.
"""

from __future__ import annotations

from pathlib import Path

RUNS = "runs"
CHECKPOINTS = "checkpoints"
LOCKS = ".locks"
WEIGHTS_SUFFIX = ".safetensors"


def runs_dir(folder: Path) -> Path:
    return Path(folder) / RUNS


def weights_file(run_file: Path) -> Path:
    """The weights saved beside a run file: same folder, same stem."""
    return Path(run_file).with_suffix(WEIGHTS_SUFFIX)


STEM_MARK = "~"


def file_stems(cell: str, suffix: str) -> list[str]:
    """The names a cell's files may take, in order: its id, then its id marked with its measurement's suffix."""
    return [cell, f"{cell}{STEM_MARK}{suffix}"]


def run_file(folder: Path, stem: str) -> Path:
    return runs_dir(folder) / f"{stem}.json"


def is_cell_file(name: str, cell: str) -> bool:
    """Whether a run file's name is one a run gives ``cell``'s record (not a copy under another name)."""
    stem = Path(name).stem
    return stem == cell or stem.startswith(cell + STEM_MARK)
