"""Where things live inside one results folder: the one owner of those paths.

```
<folder>/runs/<stem>.json          a cell's run record (results.py)
<folder>/runs/<stem>.safetensors   the weights that record evaluated last (saved with it)
<folder>/checkpoints/<cell>.pt     while a cell is in progress
```
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
