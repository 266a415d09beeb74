"""Where cells run: one after another from this process, or as Ray tasks on a cluster (``ray.py``).

Every executor calls ``cell.execute`` for every cell (one code path: resume from the
checkpoint, train with per-epoch checkpoints, write the run file atomically); they only
decide where it runs. The sequential one runs a cell of a built-in model in this process
and a cell of a referenced model (or any cell, with a ``cell_timeout``) in a child process
(``isolation.py``). Ray is imported by ``ray.py`` alone, and only when it is used,
so ``import mnistbench`` and ``mnistbench --help`` never load it (docs/scale-out.md).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol

from .cell import CellTask, execute
from ..data.datasets import Dataset, Split
from ..errors import Interrupted
from .events import OnEvent
from ..results import RunRecord, now
from ..spec.schema import CellConfig, Resources


@dataclass
class Work:
    """What an executor is given: the cells still to run, their data, their folder and the spec's resources."""

    tasks: list[CellTask]
    datasets: dict[str, Dataset]
    folder: Path
    resources: Resources = field(default_factory=Resources)
    cell_timeout: Optional[float] = None  # seconds; a cell past it is stopped and recorded failed


class Executor(Protocol):
    def device_type(self, name: str) -> str: ...

    def threads(self, config: CellConfig, resources: Resources) -> int: ...

    def run(self, work: Work, on_event: OnEvent, should_stop: Callable[[], int]) -> Iterator[RunRecord]: ...

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc) -> None: ...


class Sequential:
    """Every cell in this process, in spec order: the default, and the one for CPU throughput figures."""

    def __enter__(self) -> "Sequential":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def device_type(self, name: str) -> str:
        from ..train.engine import resolve_device

        return resolve_device(name).type

    def threads(self, config: CellConfig, resources: Resources) -> int:  # noqa: ARG002
        """The CPU threads a cell runs with here: its own setting, else torch's default in this process."""
        import torch

        return config.threads or torch.get_num_threads()

    def run(self, work: Work, on_event: OnEvent, should_stop: Callable[[], int]) -> Iterator[RunRecord]:
        for task in work.tasks:
            if should_stop():
                raise Interrupted(should_stop())
            dataset = work.datasets[task.cell.config.dataset]
            if isolated(task, work.cell_timeout):
                yield run_cell(task, dataset, on_event, should_stop, work.cell_timeout)
            else:
                yield execute(task, dataset, on_event, should_stop)


def isolated(task: CellTask, cell_timeout: Optional[float]) -> bool:
    """Whether a cell runs in a child process: a referenced model's code always; any cell when its time is bounded."""
    from ..models.factory import parse_model_ref

    return cell_timeout is not None or not parse_model_ref(task.cell.config.model).builtin


def portable(ds: Dataset) -> Dataset:
    """The dataset as shipped to another process: raw splits only, without this process's normalized copies."""
    return dataclasses.replace(ds, train=Split(ds.train.images, ds.train.labels), test=Split(ds.test.images, ds.test.labels))


def _cell_work(task, dataset, send, should_stop):
    return execute(task, dataset, send, should_stop)


def run_cell(task, dataset, on_event: Callable, should_stop: Callable[[], int], timeout: Optional[float]):
    """One cell (a ``CellTask``) in a child process: its ``RunRecord``; a child that ends without a record, or runs past
    ``timeout``, gives a failed one."""
    from ..layout import runs_dir
    from .cell import build_record
    from .events import Event
    from .isolation import ChildEnded, Job, run_in_child

    task = _tagged(task)
    started, wall = now(), time.perf_counter()
    try:
        return run_in_child(Job(_cell_work, (task, portable(dataset))), on_event, should_stop, timeout)
    except ChildEnded as e:
        why = e.reason("before the cell finished", f"cell_timeout {timeout or 0:g} s")
    record = build_record(task, dataset, None, [], why, 0, started, wall)
    record.save(runs_dir(task.folder))
    on_event(Event("done", task.cell, task.index, task.total, message=f"failed ({why})"))
    return record


def _tagged(task):
    return dataclasses.replace(task, extra={**task.extra, "isolation": "process"})
