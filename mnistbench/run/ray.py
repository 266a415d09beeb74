"""The Ray executor: one Ray task per cell on a local cluster or an existing one (docs/scale-out.md).

Ray is imported here alone, and only when the Ray executor is used, so ``import mnistbench``
and ``mnistbench --help`` never load it. Faults of the cluster end in one line: a lost worker
node's cells are run again elsewhere (``max_retries``) or recorded failed; a lost head (or the
node of the progress actor, pinned to the driver's) ends the run with ``ClusterLost``, which the
CLI turns into one line with the resume command, after the tables are rebuilt from what finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import secrets
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from .cell import CellTask, build_record, execute
from ..data.datasets import Dataset
from ..errors import ClusterLost, Interrupted, MnistbenchError, reason
from .events import Event, OnEvent
from .executors import Work, portable
from ..files import write_atomic
from ..layout import weights_file
from ..results import RunRecord, now
from .sink import EventSink
from ..spec.schema import CellConfig, Resources

RAY_EXTRA = "pip install 'mnistbench[ray]'"
DEFAULT_MAX_RETRIES = 3  # Ray re-runs a cell whose worker or node was lost up to this many times
HEAD_CHECK_EVERY = 2.0  # seconds between checks that the head (its GCS port) still answers
HEAD_LOST_AFTER = 3  # failed checks in a row: the head is lost (Ray itself ends the driver after 60 s without it)
SINK_TIMEOUT = 10.0  # seconds a drain of the progress actor may take before it counts as lost


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
        raise MnistbenchError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


class RayExecutor:
    """One Ray task per cell on a local cluster (no address) or an existing one (``auto``, ``ray://...``, ``host:port``)."""

    def __init__(self, address: Optional[str] = None, max_retries: int = DEFAULT_MAX_RETRIES):
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise MnistbenchError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}")
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
            with captured_stderr() as said:
                try:
                    if self.address:
                        ray.init(address=self.address, **quiet)
                    else:
                        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
                except (ConnectionError, ValueError, RuntimeError) as e:
                    failed = e
                else:
                    failed = None
            if failed is not None:
                raise MnistbenchError(connect_error(self.address, failed, said.text)) from None
            sys.stderr.write(said.text)  # what Ray said on the way in, when it worked
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
        SharedProbe.remove_stale(work.folder)
        probe = SharedProbe.create(work.folder)
        pending: dict = {}
        head = HeadWatch.of(ray, self.address)
        try:
            data = {name: ray.put(portable(ds)) for name, ds in work.datasets.items()}
            sink = pinned_sink(ray)
            drain(ray, sink, head)  # alive before any task sends to it, so no event waits in a worker that may die
            remote = {gpu: remote_function(ray, ray_task, gpu) for gpu in (False, True)}
            pending = {
                remote[options[t.index]["num_gpus"] > 0].options(**options[t.index]).remote(
                    _absolute(t), data[t.cell.config.dataset], sink, probe): t
                for t in work.tasks
            }
            tally = Tally({t.index: t for t in work.tasks})
            while pending:
                if should_stop():
                    raise Interrupted(should_stop())
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.25)
                tally.forward(drain(ray, sink, head), on_event)
                tally.stop_overdue(ray, pending, work.cell_timeout)
                for ref in ready:
                    task = pending.pop(ref)
                    record = self._collect(ray, ref, task, work, sink, tally, on_event, head)
                    tally.finished(task, record, on_event)
                    yield record
        except ClusterLost:
            # Nothing left to cancel or shut down: Ray's shutdown at exit would wait on the lost head until Ray ends the process.
            pending, self._started = {}, False
            import atexit

            atexit.unregister(ray.shutdown)
            raise
        finally:
            self._cancel(ray, pending)
            probe.remove()

    def _collect(self, ray, ref, task: CellTask, work: Work, sink, tally: "Tally", on_event: OnEvent, head: "HeadWatch") -> RunRecord:
        """The record a task returned (written here when the task saw no shared folder), or a failed one for a lost cell."""
        try:
            record, written, sent, weights = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # execute() raises only what stops a sequential run too
            cause = e.cause if isinstance(e.cause, BaseException) else e
            if isinstance(cause, MnistbenchError):
                raise MnistbenchError(f"cell {task.cell.id}: {cause}") from None
            raise MnistbenchError(f"cell {task.cell.id} stopped on a Ray worker: {reason(cause)}") from None
        except ray.exceptions.RayError as e:  # the worker or node was lost more than max_retries times
            head.check(force=True)  # unless the head itself is gone: then the run ends here
            why = f"{type(e).__name__}: lost its Ray worker or node {self.max_retries + 1} times"
            if task.index in tally.overdue:
                why = f"did not finish within cell_timeout {work.cell_timeout:g} s; its Ray task was cancelled"
            record = build_record(task, work.datasets[task.cell.config.dataset], None, [], why, 0, now(), time.perf_counter())
            record.extra.update({"executor": "ray", "ray": {"lost": True}})
            written, sent, weights = False, 0, None
        if not written:  # under the name the run chose for it (task.stem): never another measurement's file
            run_file = task.run_file(work.folder)
            if weights is not None:
                write_atomic(weights_file(run_file), weights)
            record.save(run_file.parent, run_file.stem)
        deadline = time.monotonic() + 5.0  # the task's last events may still be on their way to the sink
        while tally.received.get(task.index, 0) < sent and time.monotonic() < deadline:
            tally.forward(drain(ray, sink, head), on_event)
        return record

    @staticmethod
    def _cancel(ray, pending: dict) -> None:
        """Ask unfinished tasks to stop (a running cell keeps its last checkpoint) and give them a moment to."""
        if not pending:
            return
        for ref in pending:
            ray.cancel(ref)
        ray.wait(list(pending), num_returns=len(pending), timeout=10)


def _absolute(task: CellTask) -> CellTask:
    """Workers need not share the driver's working folder."""
    return dataclasses.replace(task, folder=task.folder.resolve())


@dataclass(frozen=True)
class SharedProbe:
    """A file the driver writes in the results folder; a task that reads it back shares the folder (``sees``).

    Its name says which driver wrote it (host and process), so a later run removes the probes of drivers that are gone.
    """

    path: str
    token: str

    PREFIX = ".ray-probe-"

    @classmethod
    def create(cls, folder: Path) -> "SharedProbe":
        token = secrets.token_hex(8)
        path = folder.resolve() / f"{cls.PREFIX}{_host()}-{os.getpid()}-{token}"
        write_atomic(path, token)
        return cls(str(path), token)

    def sees(self) -> bool:
        try:
            return Path(self.path).read_text() == self.token
        except (OSError, UnicodeDecodeError):
            return False

    def remove(self) -> None:
        Path(self.path).unlink(missing_ok=True)

    @classmethod
    def remove_stale(cls, folder: Path) -> None:
        """Probes left by drivers that ended without removing theirs (killed, or an older version's): gone from this
        host's process table, or written on another host more than ``STALE_PROBE_DAYS`` ago."""
        for path in folder.resolve().glob(f"{cls.PREFIX}*"):
            host, _, rest = path.name[len(cls.PREFIX):].rpartition("-")[0].rpartition("-")
            pid = int(rest) if rest.isdigit() else None
            if pid is None or not host:
                stale = True
            elif host == _host():
                stale = not _alive(pid)
            else:
                stale = time.time() - path.stat().st_mtime > STALE_PROBE_DAYS * 86400
            if stale:
                path.unlink(missing_ok=True)


STALE_PROBE_DAYS = 7


def _host() -> str:
    import re

    return re.sub(r"[^A-Za-z0-9.]+", ".", socket.gethostname())[:64] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pinned_sink(ray):
    """The progress actor, on the driver's own node: a lost worker node cannot take it (and the run) with it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        here = {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}
    except Exception:  # noqa: BLE001 - a Ray Client driver has no node of its own: the actor goes where Ray puts it
        here = {}
    return ray.remote(num_cpus=0, **here)(EventSink).remote()


def drain(ray, sink, head: "HeadWatch") -> list:
    """The events the progress actor holds; a sink that does not answer means the driver's node or the head is gone."""
    head.check()
    try:
        return ray.get(sink.drain.remote(), timeout=SINK_TIMEOUT)
    except ray.exceptions.RayError as e:
        head.check(force=True)
        raise ClusterLost(f"lost the run's progress actor on the driver's Ray node ({type(e).__name__})") from None


@dataclass
class HeadWatch:
    """Whether the cluster's head (its GCS port) still answers: without it Ray ends the driver after 60 s, in its own
    words; found lost first, the run ends in one line, with the tables rebuilt and the resume command."""

    address: Optional[tuple[str, int]]
    failures: int = 0
    last: float = 0.0

    @classmethod
    def of(cls, ray, address: Optional[str]) -> "HeadWatch":
        """The head as the driver was given it (``host:port``), else as Ray reports it; unwatched if it does not answer now."""
        try:
            given = address if address and ":" in address and "://" not in address else None
            host, _, port = (given or ray.get_runtime_context().gcs_address).rpartition(":")
            watch = cls((host, int(port)))
            with socket.create_connection(watch.address, timeout=2.0):
                return watch
        except Exception:  # noqa: BLE001 - a Ray Client driver, or a head this host cannot dial: Ray watches it alone
            return cls(None)

    def check(self, force: bool = False) -> None:
        """Raise ``ClusterLost`` after ``HEAD_LOST_AFTER`` failed connections in a row (all of them now, with ``force``)."""
        if self.address is None or (not force and time.monotonic() - self.last < HEAD_CHECK_EVERY):
            return
        for attempt in range(HEAD_LOST_AFTER if force else 1):
            self.last = time.monotonic()
            try:
                with socket.create_connection(self.address, timeout=2.0):
                    self.failures = 0
                    return
            except OSError:
                self.failures += 1
            if self.failures >= HEAD_LOST_AFTER:
                raise ClusterLost(f"lost the Ray cluster: its head at {self.address[0]}:{self.address[1]} stopped answering")
            if force:
                time.sleep(1.0)


class Captured:
    text = ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[Captured]:
    """What is written to file descriptor 2 inside the block (Ray's C++ core writes there), held back for a look."""
    out = Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            out.text = held.read().decode(errors="replace")


AUTH_WORDS = ("invalidauthtoken", "unauthenticated", "authentication token", "auth token")


def connect_error(address: Optional[str], error: Exception, said: str) -> str:
    """The one line for a cluster that could not be started or joined; a refused token is named as such."""
    where = address or "a local cluster"
    if any(w in (said + str(error)).lower() for w in AUTH_WORDS):
        if os.environ.get("RAY_AUTH_MODE") != "token":
            hint = "the cluster wants a token: set RAY_AUTH_MODE=token and give this driver the cluster's token"
        else:
            hint = "this driver's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token) is not the cluster's"
        return f"Ray at {where} refused this driver's authentication (InvalidAuthToken): {hint} (docs/scale-out.md)"
    first = (str(error).splitlines() or [type(error).__name__])[0][:200]
    return f"cannot start or reach Ray at {where}: {first}"


@dataclass
class Tally:
    """Cells done, running, failed and restarted, told to the front end as they change."""

    tasks: dict  # cell index -> CellTask
    received: dict = field(default_factory=dict)  # cell index -> events received from its current attempt
    started: set = field(default_factory=set)
    since: dict = field(default_factory=dict)  # cell index -> when its current attempt started (monotonic clock)
    overdue: set = field(default_factory=set)  # cells stopped for running past cell_timeout
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
            if event.kind == "cell":
                self.since[index] = time.monotonic()
            if event.kind != "done":  # told by the driver once it holds the record
                on_event(event)

    def stop_overdue(self, ray, pending: dict, cell_timeout: Optional[float]) -> None:
        """Cancel (force) the tasks whose current attempt has run past ``cell_timeout``; they are recorded failed."""
        if cell_timeout is None:
            return
        now = time.monotonic()
        for ref, task in pending.items():
            if task.index not in self.overdue and now - self.since.get(task.index, now) > cell_timeout:
                self.overdue.add(task.index)
                ray.cancel(ref, force=True)

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
