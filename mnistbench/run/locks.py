"""Who may write what in a results folder: one lock per cell, one for the report, and leftovers of killed writers.

Runs of different cells (shards of one spec) may share a folder; two runs of one cell may
not. A run holds the lock of every cell it selected until it ends, and rebuilds the report
under the report lock, so shards that end together rebuild it one after the other, each
from all the run files present. Locks live in ``<folder>/.locks/``; the operating system
releases them when a process dies, however it dies.
"""

from __future__ import annotations

import re
import resource
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from ..errors import MnistbenchError
from ..layout import STEM_MARK

LOCKS = ".locks"
REPORT_WAIT_S = 600.0  # how long a run waits for another run's report rebuild (seconds)
_TMP_SUFFIX = r"\.[^/.]+\.tmp"  # files.atomic_path: .<name>.<random characters>.tmp


@contextmanager
def cell_locks(folder: Path, cells: list[str]) -> Iterator[None]:
    """Hold the lock of each cell (by id) until the block ends; a cell another run holds is a clear error."""
    locks = folder / LOCKS
    try:
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MnistbenchError(f"cannot write in {folder}: {e.strerror}") from None
    _allow_open_files(len(cells) + 256)
    with ExitStack() as held:
        for cell in cells:
            lock = FileLock(str(locks / f"{cell}.lock"), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                raise MnistbenchError(
                    f"another mnistbench run is writing to {folder} (cell {cell}): wait for it to end, "
                    "run other cells (--shard, --cell), or use --results-dir"
                ) from None
            except OSError as e:  # e.g. the lock's path is a folder, or no room for it
                raise MnistbenchError(f"cannot lock {locks / (cell + '.lock')}: {e.strerror or e}") from None
            held.callback(lock.release)
        yield


@contextmanager
def report_lock(folder: Path, wait_s: float = REPORT_WAIT_S) -> Iterator[None]:
    """One report rebuild at a time per folder; others wait their turn (and then rebuild from every run file)."""
    if not folder.is_dir():  # nothing to rebuild: the caller says so, and nothing is created here
        yield
        return
    try:
        (folder / LOCKS).mkdir(exist_ok=True)
    except OSError as e:
        raise MnistbenchError(f"cannot write in {folder}: {e.strerror}") from None
    lock = FileLock(str(folder / LOCKS / "report.lock"), timeout=wait_s)
    try:
        lock.acquire()
    except Timeout:
        raise MnistbenchError(f"another mnistbench run has been rebuilding the report of {folder} for {wait_s:.0f} s") from None
    try:
        yield
    finally:
        lock.release()


def remove_cell_temporaries(folder: Path, cells: list[str]) -> None:
    """Temporary run files and checkpoints of these cells left by a killed run; call it holding their locks."""
    for sub, suffix in (("runs", ".json"), ("runs", ".safetensors"), ("checkpoints", ".pt")):
        if (folder / sub).is_dir():
            # The cell's own name, or the one marked for another measurement of it (layout.file_stems).
            mine = {re.escape(f".{cell}") + f"(?:{re.escape(STEM_MARK)}[0-9a-f]+)?" + re.escape(suffix) for cell in cells}
            _remove_matching(folder / sub, mine)


def remove_report_temporaries(folder: Path) -> None:
    """Temporary tables, figures and manifest left by a killed report rebuild; call it holding the report lock."""
    _remove_matching(folder, {r"\.[^/]+"})


def _remove_matching(folder: Path, prefixes: set[str]) -> None:
    if not prefixes:
        return
    pattern = re.compile(f"(?:{'|'.join(sorted(prefixes))}){_TMP_SUFFIX}")
    for tmp in folder.glob(".*.tmp"):
        if pattern.fullmatch(tmp.name):
            try:
                if tmp.is_dir() and not tmp.is_symlink():  # a report's staging folder (report.staging_folder)
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
            except OSError:
                pass


def _allow_open_files(needed: int) -> None:
    """Each held lock keeps a file open: raise the soft limit toward the hard one when a spec has many cells."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
        if target < needed:
            raise MnistbenchError(f"{needed} open files needed to lock the cells, the limit is {hard}: run the spec in shards (--shard)")
