"""Run a spec: plan (devices, data, keys, cells selected) -> execute the cells not yet done -> report.

One results folder per spec: ``<results>/<spec>/runs/<cell>.json`` (one per cell),
``checkpoints/`` (while a cell is in progress), ``summary.*``, plots and ``manifest.json``.
A cell counts as done when a run file of its measurement (its key, on this machine kind)
holds a finished or diverged run, whatever that file is called; a failed cell is tried
again. A run never writes over a record of another measurement: that cell's record goes
to ``<cell>~<suffix>.json`` instead (``results.run_file_for``), and ``--force`` replaces
only records of the same measurement. An executor decides where the
cells run (``executors.py``: in this process, or on Ray); a selection (``--shard I/N``,
``--cell ID``) lets several runs share one folder, each holding the locks of its own cells.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

from .cell import CellTask
from ..data.datasets import Dataset, check_holdout, content_hashes, load_dataset
from ..errors import Interrupted, MnistbenchError
from .events import Event, OnEvent
from .executors import Executor, Sequential, Work
from ..files import write_atomic
from .locks import cell_locks, remove_cell_temporaries, remove_report_temporaries, report_lock
from .preflight import check_before_training, check_layout, check_models, check_name_lengths
from ..layout import runs_dir
from ..results import Machine, Measurement, RunRecord, finite_or_none, load_record, machine_of, run_file_for, run_files
from ..spec.selection import Selection
from ..spec.schema import Spec

DONE = ("finished", "diverged")


@dataclass
class Plan:
    """Everything checked before the first epoch: the selected tasks, their data, the folder."""

    folder: Path
    tasks: list[CellTask]
    datasets: dict[str, Dataset]
    selection: Selection = Selection()


@dataclass
class RunSummary:
    results_dir: Path
    ran: list[RunRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # run files --force writes over (same measurement)
    skipped_tasks: list[tuple[CellTask, RunRecord]] = field(default_factory=list, repr=False)
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
    executor: Optional[Executor] = None,
    selection: Selection = Selection(),
    before_report: Optional[Callable[[Path], None]] = None,
) -> RunSummary:
    """Run every selected cell of ``spec`` not already done with the same key, then rebuild the report;
    ``before_report(folder)`` runs just before that when the cells ended normally (the comparison with the reference,
    which the report's page shows)."""
    started = time.perf_counter()
    with executor or Sequential() as executor:
        plan = plan_run(spec, Path(results_root), data_dir, allow_download, force, executor.device_type, selection,
                        executor.threads)
        summary = RunSummary(plan.folder)
        ids = [t.cell.id for t in plan.tasks]
        with cell_locks(plan.folder, ids), StopFlag() as stop:
            remove_cell_temporaries(plan.folder, ids)
            todo = remaining(plan, force, summary)
            on_event(Event("start", total=len(plan.tasks), message=str(plan.folder), todo=tuple(t.cell for t in todo)))
            for task, record in summary.skipped_tasks:
                on_event(Event("skip", task.cell, task.index, task.total, message=record.cell))
            for name in summary.replaced:
                on_event(Event("warning", message=f"--force: {name} (this configuration on this machine) is replaced "
                                                  "when its cell finishes"))
            work = Work(todo, plan.datasets, plan.folder, spec.resources, spec.cell_timeout)
            try:
                for record in executor.run(work, on_event, stop):
                    summary.ran.append(record)
            except BaseException as stopped:
                # Whatever stopped the cells, the tables describe the run files present; the first error is the one reported.
                try:
                    finish(plan, summary, started, on_event)
                except MnistbenchError as e:
                    if not isinstance(stopped, MnistbenchError):  # a full disk is said once, by the error itself
                        on_event(Event("warning", message=f"tables not rebuilt: {e}"))
                raise
            finish(plan, summary, started, on_event, before_report)
    return summary


def check_step_budget(cell, dataset: Dataset) -> None:
    """A cell's ``max_steps`` ends in its last epoch over the training samples it has (one line otherwise)."""
    problem = cell.config.step_budget_problem(len(dataset.train) - cell.config.validation)
    if problem:
        raise MnistbenchError(f"cell {cell.id}: {problem}")


def plan_run(
    spec: Spec, root: Path, data_dir, allow_download: bool, force: bool = False, device_type=None, selection: Selection = Selection(),
    threads_for=None,
) -> Plan:
    """Select cells, check models, load data, resolve devices, threads and keys, check the folder: bad input fails
    before any training. ``device_type`` and ``threads_for``: the executor's (``Executor.device_type``, ``.threads``)."""
    cells = spec.cells()
    chosen = selection.pick(cells)
    model_sha256s = check_models([cells[k].config for k in chosen], spec.cell_timeout)
    dirs = data_dirs_for(data_dir, [c.config.dataset for c in cells])
    used = list(dict.fromkeys(cells[k].config.dataset for k in chosen))
    datasets = {name: load_dataset(name, dirs.get(name), allow_download) for name in used}
    for k in chosen:
        check_holdout(datasets[cells[k].config.dataset], cells[k].config.validation)
        check_step_budget(cells[k], datasets[cells[k].config.dataset])
    device_type = device_type or Sequential().device_type
    devices = {name: device_type(name) for name in dict.fromkeys(cells[k].config.device for k in chosen)}
    threads_for = threads_for or Sequential().threads
    machines = {kind: machine_here(kind) for kind in dict.fromkeys(devices.values())}
    folder = results_folder(root, spec.name)
    tasks = []
    for k in chosen:
        cell = cells[k]
        config = cell.config.resolved(devices[cell.config.device], model_sha256s[cell.config.model])
        resolved = cell.__class__(cell.id, config)
        dataset = datasets[cell.config.dataset]
        threads = threads_for(config, spec.resources)
        key = config.key(content_hashes(dataset), threads)
        # The key this cell had before content hashing and resolved threads: records written then still count.
        legacy = config.key([f.sha256 for f in dataset.files])
        measurement = Measurement(key, machines[config.device], threads, legacy)
        tasks.append(CellTask(spec.name, resolved, key, k + 1, len(cells), folder, force, threads=threads, measurement=measurement))
    check_layout(folder)
    check_name_lengths(folder, [t.cell.id for t in tasks])  # before any lock file is named after a cell
    return Plan(folder, tasks, datasets, selection)


def remaining(plan: Plan, force: bool, summary: RunSummary) -> list[CellTask]:
    """The tasks not yet done, read from the folder under the cells' locks, each with the run file it may write
    (``results.run_file_for``: never another measurement's); the others go to ``summary.skipped``.

    Every run file is read, also with --force (a bad one would otherwise stop the report after training),
    and the folder is checked for what the remaining cells will write, before anything is said or trained.
    """
    present = present_runs(plan.folder)
    todo = []
    for task in plan.tasks:
        measurement = task.measurement or Measurement(task.key, machine_here(task.cell.config.device))
        done = [] if force else [r for r in present.values() if r.status in DONE and measurement.holds(r)]
        if done:
            summary.skipped.append(task.cell.id)
            summary.skipped_tasks.append((task, done[0]))
            continue
        path = run_file_for(runs_dir(plan.folder), task.cell.id, measurement, present)
        if force and path.name in present and present[path.name].status in DONE:
            summary.replaced.append(f"{runs_dir(plan.folder).name}/{path.name}")
        todo.append(dataclasses.replace(task, stem=path.stem))
    check_before_training(plan.folder, [t.cell for t in todo])
    return todo


def machine_here(device_type: str) -> Machine:
    """The machine kind this process measures on with ``device_type`` (a Ray run: the driver's, see docs/results.md)."""
    from ..environment import environment

    return machine_of(device_type, environment())


def data_dirs_for(data_dir, datasets: list[str]) -> dict[str, str | os.PathLike]:
    """``--data-dir`` per dataset: a mapping as given, or one bare folder when the spec uses one dataset."""
    if data_dir is None:
        return {}
    if isinstance(data_dir, Mapping):
        from ..data.catalog import DATASETS

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


def present_runs(folder: Path) -> dict[str, RunRecord]:
    """Every run file already in the folder, by file name; a bad file stops the run here."""
    runs = runs_dir(folder)
    if not runs.is_dir():
        return {}
    present: dict[str, RunRecord] = {}
    for path in run_files(folder):
        try:
            present[path.name] = load_record(path)
        except MnistbenchError as e:
            raise MnistbenchError(f"{e}: move it out of {runs} or delete it, then run again") from None
    return present


def finished_runs(folder: Path) -> dict[str, RunRecord]:
    """The run files already in the folder, by key (finished or diverged only); a bad file stops the run here."""
    done: dict[str, RunRecord] = {}
    for record in present_runs(folder).values():
        if record.status in DONE:
            done.setdefault(record.key, record)
    return done


def finish(plan: Plan, summary: RunSummary, started: float, on_event: OnEvent,
           before_report: Optional[Callable[[Path], None]] = None) -> None:
    """Rebuild the report from the run files present (whatever stopped the cells) and tidy the folder, one run at a time."""
    from ..report.build import write_report

    folder = plan.folder
    summary.wall_seconds = time.perf_counter() - started
    with report_lock(folder):
        remove_report_temporaries(folder)
        if (folder / "runs").is_dir() and run_files(folder):
            if before_report is not None:
                before_report(folder)
            write_report(folder)
            on_event(Event("report", message=str(folder)))
        if summary.ran:
            write_last_run(folder, summary, plan.selection.label)
    ckpt_dir = folder / "checkpoints"
    # Only cells in progress leave anything there; a shard leaves the folder to the cells of other shards.
    try:
        if plan.selection == Selection() and ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
            ckpt_dir.rmdir()
    except OSError:
        pass  # an empty folder left behind is harmless


def write_last_run(folder: Path, summary: RunSummary, label: str = "") -> None:
    """``last_run.json`` (``last_run.<shard>.json`` for a shard): this invocation's wall time against the time it measured."""
    from ..report.groups import harness_overhead

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
    write_atomic(folder / (f"last_run.{label}.json" if label else "last_run.json"), json.dumps(payload, indent=2) + "\n")


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MnistbenchError(f"results folder {folder} is not writable: {e.strerror}") from None


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


def describe_run(summary) -> dict:
    """A finished ``run``: the cells it ran (status, note, final test accuracy and loss), those it skipped, the times.

    A non-finite value (the loss of a diverged run) is null, so the document is strict JSON.
    """
    cells = [{"cell": r.cell, "status": r.status, "note": r.note, "epochs": len(r.epochs),
              "final_test_accuracy": finite_or_none(r.final.test_accuracy) if r.epochs else None,
              "final_test_loss": finite_or_none(r.final.test_loss) if r.epochs else None} for r in summary.ran]
    return {
        "results_dir": str(summary.results_dir),
        "ran": len(summary.ran),
        "finished": summary.cells("finished"),
        "diverged": summary.cells("diverged"),
        "failed": summary.cells("failed"),
        "skipped": list(summary.skipped),
        "wall_seconds": summary.wall_seconds,
        "measured_seconds": summary.measured_seconds,
        "cells": cells,
    }
