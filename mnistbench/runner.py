"""Run a spec: plan (devices, data, keys, what is finished) -> run each remaining cell -> report.

One results folder per spec: ``<results>/<spec>/runs/<cell>.json`` (one per cell),
``checkpoints/`` (while a cell is in progress), ``summary.*``, plots and ``manifest.json``.
A cell counts as done when a run file with its key holds a finished or diverged run,
whatever that file is called; a failed cell is tried again.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Optional

from filelock import FileLock, Timeout

from .cell import CellTask, Event, OnEvent, check_models, execute
from .data import Dataset, check_holdout, load_dataset
from .errors import Interrupted, MnistbenchError
from .files import write_atomic
from .preflight import check_before_training
from .results import RunRecord, load_record, run_files
from .spec import Spec

DONE = ("finished", "diverged")


@dataclass
class Plan:
    """Everything checked before the first epoch: the tasks, their data, the folder and what it already holds."""

    folder: Path
    tasks: list[CellTask]
    datasets: dict[str, Dataset]
    done: dict[str, RunRecord]  # key -> a finished or diverged record already in the folder


@dataclass
class RunSummary:
    results_dir: Path
    ran: list[RunRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def cells(self, status: str) -> list[str]:
        return [r.cell for r in self.ran if r.status == status]

    @property
    def measured_seconds(self) -> float:
        return sum(r.extra.get("measured_seconds", 0.0) for r in self.ran)


def run_spec(
    spec: Spec,
    results_root: Path = Path("results"),
    data_dir: Optional[str | os.PathLike | Mapping[str, str | os.PathLike]] = None,
    force: bool = False,
    on_event: OnEvent = lambda e: None,
    allow_download: bool = True,
) -> RunSummary:
    """Run every cell of ``spec`` not already done with the same key, then rebuild the report."""
    started = time.perf_counter()
    plan = plan_run(spec, Path(results_root), data_dir, allow_download, force)
    summary = RunSummary(plan.folder)
    with results_lock(plan.folder), StopFlag() as stop:
        remove_temporaries(plan.folder)
        on_event(Event("start", total=len(plan.tasks), message=str(plan.folder)))
        try:
            for task in plan.tasks:
                if task.key in plan.done:
                    summary.skipped.append(task.cell.id)
                    on_event(Event("skip", task.cell, task.index, task.total, message=plan.done[task.key].cell))
                    continue
                if stop():
                    raise Interrupted(stop())
                summary.ran.append(execute(task, plan.datasets[task.cell.config.dataset], on_event, stop))
        except BaseException as stopped:
            # Whatever stopped the loop, the tables describe the run files present; the first error is the one reported.
            summary.wall_seconds = time.perf_counter() - started
            try:
                finish(plan.folder, summary, on_event)
            except MnistbenchError as e:
                if not isinstance(stopped, MnistbenchError):  # a full disk is said once, by the error itself
                    on_event(Event("warning", message=f"tables not rebuilt: {e}"))
            raise
        summary.wall_seconds = time.perf_counter() - started
        finish(plan.folder, summary, on_event)
    return summary


def plan_run(spec: Spec, root: Path, data_dir, allow_download: bool, force: bool) -> Plan:
    """Resolve devices, models and data and read the folder, so that bad input fails before any training."""
    from .engine import resolve_device

    cells = spec.cells()
    devices = {name: resolve_device(name).type for name in dict.fromkeys(c.config.device for c in cells)}
    model_sha256s = check_models([c.config for c in cells])
    dirs = data_dirs_for(data_dir, [c.config.dataset for c in cells])
    datasets = {name: load_dataset(name, dirs.get(name), allow_download) for name in dict.fromkeys(c.config.dataset for c in cells)}
    for cell in cells:
        check_holdout(datasets[cell.config.dataset], cell.config.validation)
    folder = results_folder(root, spec.name)
    present = finished_runs(folder)  # read even with --force: a bad run file would stop the report after training
    done = {} if force else present
    tasks = []
    for index, cell in enumerate(cells, start=1):
        resolved = cell.__class__(cell.id, cell.config.resolved(devices[cell.config.device], model_sha256s[cell.config.model]))
        key = resolved.config.key([f.sha256 for f in datasets[cell.config.dataset].files])
        tasks.append(CellTask(spec.name, resolved, key, index, len(cells), folder, force))
    check_before_training(folder, [t.cell for t in tasks if t.key not in done])
    return Plan(folder, tasks, datasets, done)


def data_dirs_for(data_dir, datasets: list[str]) -> dict[str, str | os.PathLike]:
    """``--data-dir`` per dataset: a mapping as given, or one bare folder when the spec uses one dataset."""
    if data_dir is None:
        return {}
    if isinstance(data_dir, Mapping):
        from .data import DATASETS

        for name in data_dir:
            if name is not None and name not in DATASETS:
                raise MnistbenchError(f"--data-dir {name}=...: {DATASETS.unknown_message(name)}")
        bare = data_dir.get(None)  # type: ignore[call-overload]
        named = {k: v for k, v in data_dir.items() if k is not None}
    else:
        bare, named = data_dir, {}
    used = list(dict.fromkeys(datasets))
    if bare is not None:
        if len(used) > 1:
            raise MnistbenchError(
                f"--data-dir {bare}: this spec uses {len(used)} datasets ({', '.join(used)}); "
                "name the one the folder holds, e.g. --data-dir fashion-mnist=PATH"
            )
        named.setdefault(used[0], bare)
    return named


def results_folder(root: Path, name: str) -> Path:
    """``root/name``, checked to be a plain folder inside ``root`` that can be written."""
    folder = root / name
    if name in (".", "..") or "/" in name or os.sep in name or not (root.resolve() / name).resolve().is_relative_to(root.resolve()):
        raise MnistbenchError(f"spec name {name!r} is not a plain folder name inside {root}")
    check_writable(folder)
    runs = folder / "runs"
    if runs.exists() and not runs.is_dir():
        raise MnistbenchError(f"{runs} exists but is not a folder: move it away")
    return folder


def finished_runs(folder: Path) -> dict[str, RunRecord]:
    """The run files already in the folder, by key (finished or diverged only); a bad file stops the run here."""
    runs = folder / "runs"
    if not runs.is_dir():
        return {}
    done: dict[str, RunRecord] = {}
    for path in run_files(folder):
        try:
            record = load_record(path)
        except MnistbenchError as e:
            raise MnistbenchError(f"{e}: move it out of {runs} or delete it, then run again") from None
        if record.status in DONE:
            done.setdefault(record.key, record)
    return done


def finish(folder: Path, summary: RunSummary, on_event: OnEvent) -> None:
    """Rebuild the report from the run files present (whatever stopped the loop) and tidy the folder."""
    from .report import write_report

    if (folder / "runs").is_dir() and run_files(folder):
        write_report(folder)
        on_event(Event("report", message=str(folder)))
    if summary.ran:
        write_last_run(folder, summary)
    ckpt_dir = folder / "checkpoints"
    try:
        if ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
            ckpt_dir.rmdir()  # only cells in progress leave anything there
    except OSError:
        pass  # an empty folder left behind is harmless


def write_last_run(folder: Path, summary: RunSummary) -> None:
    """``last_run.json``: this invocation's wall time against the time it measured."""
    from .groups import harness_overhead

    overhead = harness_overhead(summary.ran)
    payload = {
        "cells_run": len(summary.ran),
        "cells_skipped": len(summary.skipped),
        "cells_failed": len(summary.cells("failed")),
        "wall_seconds": round(summary.wall_seconds, 3),
        "measured_seconds": round(summary.measured_seconds, 3),
        "harness_overhead_fraction": None if overhead is None else round(overhead[1], 4),
        "note": "wall: from planning the run to the end of the report; measured: summed training and evaluation "
        "time of the cells it ran; harness overhead: the cells' wall time outside measured work (README)",
    }
    write_atomic(folder / "last_run.json", json.dumps(payload, indent=2) + "\n")


def remove_temporaries(folder: Path) -> None:
    """Temporary files and report staging folders of a run killed mid-write (``.<name>.<random>.tmp``); safe under the folder lock."""
    import shutil

    for sub in (folder, folder / "runs", folder / "checkpoints"):
        if sub.is_dir():
            for tmp in sub.glob(".*.tmp"):
                try:
                    if tmp.is_dir() and not tmp.is_symlink():
                        shutil.rmtree(tmp)
                    else:
                        tmp.unlink()
                except OSError:
                    pass


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MnistbenchError(f"results folder {folder} is not writable: {e.strerror}") from None


@contextmanager
def results_lock(folder: Path) -> Iterator[None]:
    """One run per results folder at a time; a second gets a clear error instead of interleaved files."""
    lock = FileLock(str(folder / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise MnistbenchError(f"another mnistbench run is writing to {folder}: wait for it to end, or use --results-dir") from None
    except OSError as e:  # e.g. .lock is a folder, or no room for it
        raise MnistbenchError(f"cannot lock {folder / '.lock'}: {e.strerror or e}") from None
    try:
        yield
    finally:
        lock.release()


class StopFlag:
    """SIGINT/SIGTERM: the first asks the run to stop after what is finished; a second ends the process at once."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def __call__(self) -> int:
        return self.signum

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.signum:
            os._exit(128 + signum)  # every file is written atomically, so stopping here corrupts nothing
        self.signum = signum

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self.signum and exc[0] is None:
            raise Interrupted(self.signum)  # a signal during the report still ends the run with 130/143
