"""Where cells run: one after another in this process, or as Ray tasks on a cluster.

Both executors call ``cell.execute`` for every cell (one code path: resume from the
checkpoint, train with per-epoch checkpoints, write the run file atomically); they only
decide where it runs. Ray is imported here alone, and only when the Ray executor is used,
so ``import mnistbench`` and ``mnistbench --help`` never load it (docs/scale-out.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol

from .cell import CellTask, Event, OnEvent, build_record, execute
from .data import Dataset, Split
from .errors import Interrupted, MnistbenchError
from .files import write_atomic
from .layout import weights_file
from .results import RunRecord
from .sink import EventSink
from .spec import CellConfig, Resources

RAY_EXTRA = "pip install 'mnistbench[ray]'"
DEFAULT_MAX_RETRIES = 3  # Ray re-runs a cell whose worker or node was lost up to this many times


@dataclass
class Work:
    """What an executor is given: the cells still to run, their data, their folder and the spec's resources."""

    tasks: list[CellTask]
    datasets: dict[str, Dataset]
    folder: Path
    resources: Resources = field(default_factory=Resources)


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
        from .engine import resolve_device

        return resolve_device(name).type

    def threads(self, config: CellConfig, resources: Resources) -> int:  # noqa: ARG002
        """The CPU threads a cell runs with here: its own setting, else torch's default in this process."""
        import torch

        return config.threads or torch.get_num_threads()

    def run(self, work: Work, on_event: OnEvent, should_stop: Callable[[], int]) -> Iterator[RunRecord]:
        for task in work.tasks:
            if should_stop():
                raise Interrupted(should_stop())
            yield execute(task, work.datasets[task.cell.config.dataset], on_event, should_stop)


def ray_options(config: CellConfig, resources: Resources, max_retries: int = DEFAULT_MAX_RETRIES) -> dict:
    """A cell's Ray task options: the spec's ``resources``, else its threads (or 1) CPUs and, for CUDA, one GPU."""
    cuda = config.device == "cuda"
    cpus = resources.cpus if resources.cpus is not None else float(config.threads or 1)
    gpus = resources.gpus if resources.gpus is not None else (1.0 if cuda else 0.0)
    if cuda and not gpus:
        raise MnistbenchError("resources.gpus: 0 would leave the cuda cells without a GPU (Ray hides every GPU from a task given none)")
    return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": max_retries, "retry_exceptions": False}


def remote_function(ray, function: Callable, gpu: bool):
    """``function`` as a Ray task; one given a GPU runs in a fresh worker process, since CUDA reads
    ``CUDA_VISIBLE_DEVICES`` once per process (Ray's own default, lost when GPUs are set per task)."""
    return ray.remote(max_calls=1)(function) if gpu else ray.remote(function)


def import_ray(local: bool):
    """Ray, or a one-line error naming the extra. A local cluster binds to the loopback interface only."""
    if local and "ray" not in sys.modules:
        # Read by Ray when it is imported: without it a local cluster listens on every interface.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise MnistbenchError(f"--engine ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


class RayExecutor:
    """One Ray task per cell on a local cluster (no address) or an existing one (``auto``, ``ray://...``, ``host:port``)."""

    def __init__(self, address: Optional[str] = None, max_retries: int = DEFAULT_MAX_RETRIES):
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise MnistbenchError(f"--engine ray needs Ray, which is not installed: {RAY_EXTRA}")
        self.address, self.max_retries = address, max_retries
        self._ray = None
        self._started = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def connect(self):
        """Start or join the cluster once; a session already open in this process (tests) is used as it is."""
        if self._ray is not None:
            return self._ray
        ray = import_ray(local=self.address is None)
        if not ray.is_initialized():
            quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
            try:
                if self.address:
                    ray.init(address=self.address, **quiet)
                else:
                    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise MnistbenchError(f"cannot start or reach Ray at {self.address or 'a local cluster'}: {str(e).splitlines()[0][:200]}") from None
            self._started = True
        self._ray = ray
        return ray

    def device_type(self, name: str) -> str:
        """``auto`` is CUDA when the cluster has GPUs: a task reserves one, and sees only that one."""
        if name == "cpu":
            return "cpu"
        ray = self.connect()
        gpus = ray.cluster_resources().get("GPU", 0)
        deadline = time.monotonic() + (60 if name == "cuda" and self.address else 0)
        while not gpus and time.monotonic() < deadline:  # GPU nodes of a cluster just started may still be joining
            time.sleep(2)
            gpus = ray.cluster_resources().get("GPU", 0)
        if name == "cuda" and not gpus:
            raise MnistbenchError("device 'cuda' asked for, but the Ray cluster has no GPU (use device: cpu or auto)")
        return "cuda" if gpus else "cpu"

    def threads(self, config: CellConfig, resources: Resources) -> int:
        """The CPU threads a cell runs with on a worker: its own setting, else one per CPU its task reserves."""
        return config.threads or max(1, int(resources.cpus or 1))

    def run(self, work: Work, on_event: OnEvent, should_stop: Callable[[], int]) -> Iterator[RunRecord]:
        if not work.tasks:
            return
        options = {t.index: ray_options(t.cell.config, work.resources, self.max_retries) for t in work.tasks}
        ray = self.connect()
        probe = SharedProbe.create(work.folder)
        data = {name: ray.put(_portable(ds)) for name, ds in work.datasets.items()}
        sink = ray.remote(num_cpus=0)(EventSink).remote()
        ray.get(sink.drain.remote())  # alive before any task sends to it, so no event waits in a worker that may die
        remote = {gpu: remote_function(ray, ray_task, gpu) for gpu in (False, True)}
        pending = {
            remote[options[t.index]["num_gpus"] > 0].options(**options[t.index]).remote(
                _absolute(t), data[t.cell.config.dataset], sink, probe): t
            for t in work.tasks
        }
        tally = Tally({t.index: t for t in work.tasks})
        try:
            while pending:
                if should_stop():
                    raise Interrupted(should_stop())
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.25)
                tally.forward(ray.get(sink.drain.remote()), on_event)
                for ref in ready:
                    task = pending.pop(ref)
                    record = self._collect(ray, ref, task, work, sink, tally, on_event)
                    tally.finished(task, record, on_event)
                    yield record
        finally:
            self._cancel(ray, pending)
            probe.remove()

    def _collect(self, ray, ref, task: CellTask, work: Work, sink, tally: "Tally", on_event: OnEvent) -> RunRecord:
        """The record a task returned (written here when the task saw no shared folder), or a failed one for a lost cell."""
        try:
            record, written, sent, weights = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # execute() raises only what stops a sequential run too
            cause = e.cause if isinstance(e.cause, BaseException) else e
            if isinstance(cause, MnistbenchError):
                raise MnistbenchError(f"cell {task.cell.id}: {cause}") from None
            raise MnistbenchError(f"cell {task.cell.id} stopped on a Ray worker: {type(cause).__name__}: {str(cause).splitlines()[0][:200]}") from None
        except ray.exceptions.RayError as e:  # the worker or node was lost more than max_retries times
            reason = f"{type(e).__name__}: lost its Ray worker or node {self.max_retries + 1} times"
            record = build_record(task, work.datasets[task.cell.config.dataset], None, [], reason, 0, _now(), time.perf_counter())
            record.extra.update({"executor": "ray", "ray": {"lost": True}})
            written, sent, weights = False, 0, None
        if not written:  # under the name the run chose for it (task.stem): never another measurement's file
            run_file = task.run_file(work.folder)
            if weights is not None:
                write_atomic(weights_file(run_file), weights)
            record.save(run_file.parent, run_file.stem)
        deadline = time.monotonic() + 5.0  # the task's last events may still be on their way to the sink
        while tally.received.get(task.index, 0) < sent and time.monotonic() < deadline:
            tally.forward(ray.get(sink.drain.remote()), on_event)
        return record

    @staticmethod
    def _cancel(ray, pending: dict) -> None:
        """Ask unfinished tasks to stop (a running cell keeps its last checkpoint) and give them a moment to."""
        if not pending:
            return
        for ref in pending:
            ray.cancel(ref)
        ray.wait(list(pending), num_returns=len(pending), timeout=10)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _absolute(task: CellTask) -> CellTask:
    """Workers need not share the driver's working folder."""
    return dataclasses.replace(task, folder=task.folder.resolve())


def _portable(ds: Dataset) -> Dataset:
    """The dataset as shipped to workers once: raw splits only, without this process's normalized copies."""
    return dataclasses.replace(ds, train=Split(ds.train.images, ds.train.labels), test=Split(ds.test.images, ds.test.labels))


@dataclass(frozen=True)
class SharedProbe:
    """A file the driver writes in the results folder; a task that reads it back shares the folder (``sees``)."""

    path: str
    token: str

    @classmethod
    def create(cls, folder: Path) -> "SharedProbe":
        token = secrets.token_hex(8)
        path = folder.resolve() / f".ray-probe-{token}"
        write_atomic(path, token)
        return cls(str(path), token)

    def sees(self) -> bool:
        try:
            return Path(self.path).read_text() == self.token
        except (OSError, UnicodeDecodeError):
            return False

    def remove(self) -> None:
        Path(self.path).unlink(missing_ok=True)


@dataclass
class Tally:
    """Cells done, running, failed and restarted, told to the front end as they change."""

    tasks: dict  # cell index -> CellTask
    received: dict = field(default_factory=dict)  # cell index -> events received from its current attempt
    started: set = field(default_factory=set)
    done: int = 0
    failed: int = 0
    retried: int = 0

    def forward(self, drained: list, on_event: OnEvent) -> None:
        """Events from the sink to the front end; a retry as a warning and a status line."""
        for what, index, payload in drained:
            if what == "retry":
                task = self.tasks[index]
                self.retried += 1
                self.received[index] = 0  # count the new attempt's events only
                on_event(Event("warning", task.cell, index, task.total,
                               message=f"{task.cell.id}: its Ray worker or node was lost; running it again (attempt {payload})"))
                self.tell(on_event)
                continue
            event = pickle.loads(payload)  # noqa: S301 - sent by this run's own tasks
            self.received[index] = self.received.get(index, 0) + 1
            self.started.add(index)
            if event.kind != "done":  # told by the driver once it holds the record
                on_event(event)

    def finished(self, task: CellTask, record: RunRecord, on_event: OnEvent) -> None:
        self.done += 1
        self.failed += record.status == "failed"
        self.started.add(task.index)
        on_event(Event("done", task.cell, task.index, task.total, message=record.status + (f" ({record.note})" if record.note else "")))
        self.tell(on_event)

    def tell(self, on_event: OnEvent) -> None:
        running = max(len(self.started) - self.done, 0)
        on_event(Event("status", message=f"{self.done}/{len(self.tasks)} done, {running} running, {self.failed} failed, {self.retried} retried"))


# ----------------------------------------------------------------------------- inside a Ray worker

def ray_task(task: CellTask, dataset: Dataset, sink, probe: SharedProbe) -> tuple[RunRecord, bool, int, Optional[bytes]]:
    """Run one cell on a Ray worker with ``cell.execute``: (its record, whether it is in the shared folder, events sent,
    the weights' bytes when the driver writes the files).

    Without a shared folder the cell runs in a scratch folder on the node (a retry on the same
    node resumes from its checkpoint there, one on another node restarts the cell) and the
    driver writes the record it returns. Nothing here waits on Ray: a task blocked in
    ``ray.get`` lends its CPUs to another task, which would then share this cell's cores.
    """
    import ray

    shared = probe.sees()
    scratch = None if shared else scratch_folder(task.folder)
    ctx = ray.get_runtime_context()
    placement = {"node_id": ctx.get_node_id(), "worker_pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                 "shared_folder": shared, "resources": ctx.get_assigned_resources()}
    task = dataclasses.replace(task, folder=scratch or task.folder, extra={**task.extra, "executor": "ray", "ray": placement})
    sent = 0

    def send(event: Event) -> None:
        nonlocal sent
        sink.put.remote(event.kind, event.index, pickle.dumps(event))
        sent += 1

    record = execute(task, dataset, send)
    weights = None
    if scratch is not None:  # the driver writes both files
        run_file = task.run_file(scratch)
        kept = weights_file(run_file)
        if kept.exists():
            weights = kept.read_bytes()
            kept.unlink()
        run_file.unlink(missing_ok=True)
    return record, shared, sent, weights


def scratch_folder(folder: Path) -> Path:
    """A node-local stand-in for a results folder the node cannot see; the same one for every run into that folder."""
    import hashlib

    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "mnistbench-ray" / f"{folder.name}-{digest}"
