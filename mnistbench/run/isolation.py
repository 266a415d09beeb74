"""A user's model runs in a child process, so that its code cannot take the run down or change the next cell's world.

Code given by reference (``./nets.py:build``, ``pkg.mod:Net``, an entry point) may call ``sys.exit``
or ``os._exit``, hang, raise ``KeyboardInterrupt`` or change PyTorch's global settings. Its check
before the run (``check_in_child``) and each of its cells (``run_cell``) therefore run in a child
process; the child calls the same ``cell.execute`` (checkpoints, run file, weights), its events
come back through a queue so the progress display goes on, and whatever ends or stalls the
child, the driver records the cell ``failed`` with the reason and goes on with the next one.

Children come from a fork server that has imported torch and mnistbench once (``spawn`` where
there is none), so a child starts in a fraction of a second after the first. A child runs in the
driver's working folder, ``sys.path`` and environment; it stops at the next batch on SIGINT/SIGTERM
(like the driver, which asks it to when only the driver got the signal) and when the driver is gone.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from ..errors import Interrupted, MnistbenchError, reason

# Imports of torch and the engine wait for the functions that need them: start_fork_server() runs without them.

CHECK_TIMEOUT = 600.0  # seconds for the check of the referenced models before a run, when the spec sets no cell_timeout
STOP_GRACE = 10.0  # seconds a child asked to stop gets to finish its batch and leave, before it is killed
PRELOAD = ["mnistbench.run.cell"]  # imported once by the fork server (torch, the engine), never a user's code


def needed(spec) -> bool:
    """Whether a run of ``spec`` starts child processes: it names a model by reference or bounds its cells' time."""
    from ..models.factory import parse_model_ref

    return spec.cell_timeout is not None or any(not parse_model_ref(c.config.model).builtin for c in spec.cells())


def start_fork_server() -> None:
    """Start the fork server now (it imports torch while the driver plans the run), where there is one."""
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        from multiprocessing import forkserver

        context()
        forkserver.ensure_running()


def context():
    """A fork server's context where there is one (POSIX), else spawn: both start children without the driver's threads."""
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


@dataclass(frozen=True)
class Surroundings:
    """What a child takes from the driver at the time of the call: where relative paths, imports and settings resolve."""

    cwd: str
    path: list[str]
    environ: dict[str, str]

    @classmethod
    def here(cls) -> "Surroundings":
        return cls(os.getcwd(), list(sys.path), dict(os.environ))

    def enter(self) -> None:
        os.chdir(self.cwd)
        sys.path[:] = self.path
        os.environ.clear()
        os.environ.update(self.environ)


class ChildStop:
    """A child's ``should_stop``: the signal that asked it to stop, or SIGTERM once the driver is gone (the child's
    parent, the driver or its fork server, which ends with the driver, has changed)."""

    def __init__(self) -> None:
        self.parent, self.signum = os.getppid(), 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.signum = self.signum or signum

    def __call__(self) -> int:
        if not self.signum and os.getppid() != self.parent:
            self.signum = signal.SIGTERM  # orphaned: nobody would read what it sends
        return self.signum


@dataclass
class Job:
    """What a child runs: ``work(send, should_stop)`` in the driver's surroundings; its answer goes back as one message."""

    work: Callable
    args: tuple
    surroundings: Surroundings = field(default_factory=Surroundings.here)


def _child_main(job: Job, messages) -> None:
    job.surroundings.enter()
    stop = ChildStop()
    messages.put(("ready", time.monotonic()))
    try:
        answer = ("result", job.work(*job.args, lambda event: messages.put(("event", event)), stop))
    except Interrupted as e:
        answer = ("interrupted", e.signum)
    except MnistbenchError as e:
        answer = ("error", str(e))
    except BaseException as e:  # noqa: BLE001 - anything else leaving the work is the user's code, said in one line
        answer = ("raised", reason(e))
    messages.put(answer)
    messages.close()
    messages.join_thread()  # everything reaches the driver before the process ends


class ChildEnded(Exception):
    """The child gave no answer: it raised what it could not report, ended (``code``) or ran past its bound (``timed_out``)."""

    def __init__(self, raised: str = "", code: Optional[int] = None, timed_out: bool = False) -> None:
        super().__init__(raised or str(code))
        self.raised, self.code, self.timed_out = raised, code, timed_out

    def reason(self, during: str, bound: str) -> str:
        """One line: what ended the child ``during`` (e.g. "before the cell finished"), with ``bound`` naming its time limit."""
        if self.timed_out:
            return f"did not finish within {bound}; its process was stopped"
        if self.raised:
            return f"the model's code raised {self.raised}"
        if self.code is not None and self.code < 0:
            return f"its process was killed by {signal.Signals(-self.code).name} {during}"
        return f"its process ended with exit code {self.code} {during} (os._exit or a crash in the model's code)"


def run_in_child(job: Job, on_event: Callable, should_stop: Callable[[], int], timeout: Optional[float]) -> Any:
    """Run ``job`` in a child process and return its result; its events go to ``on_event`` as they come.

    ``timeout`` counts from the child's start of work (not its process start). Raises what the child raised
    (``MnistbenchError``, ``Interrupted``), or ``ChildEnded`` with the reason it gave no answer.
    """
    ctx = context()
    messages = ctx.Queue()
    child = ctx.Process(target=_child_main, args=(job, messages), daemon=True)
    with _main_left_out():
        child.start()
    try:
        return _answer(child, messages, on_event, should_stop, timeout)
    finally:
        _end(child)
        messages.close()
        messages.cancel_join_thread()


@contextlib.contextmanager
def _main_left_out() -> Iterator[None]:
    """Start a child without the driver's ``__main__``: its work is in mnistbench, and multiprocessing would otherwise
    run the caller's script (or pytest's) again in every child."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _answer(child, messages, on_event: Callable, should_stop: Callable[[], int], timeout: Optional[float]) -> Any:
    deadline, asked = None, 0.0
    while True:
        if should_stop() and not asked:
            asked = time.monotonic()
            _signal(child, should_stop())  # the child stops at its next batch, keeping its checkpoint
        try:
            kind, payload = messages.get(timeout=0.2)
        except queue.Empty:
            if not child.is_alive():
                last = _last_words(messages, on_event)
                if last is not None:
                    return _finish(*last)
                raise ChildEnded(code=child.exitcode)
            if asked and time.monotonic() - asked > STOP_GRACE:
                raise Interrupted(should_stop())
            if deadline is not None and time.monotonic() > deadline:
                raise ChildEnded(timed_out=True)
            continue
        if kind == "ready":
            deadline = None if timeout is None else time.monotonic() + timeout
        elif kind == "event":
            on_event(payload)
        else:
            return _finish(kind, payload)


def _last_words(messages, on_event: Callable) -> Optional[tuple]:
    """What a child sent just before it ended: its answer, if any (its events are passed on)."""
    while True:
        try:
            kind, payload = messages.get(timeout=0.5)
        except (queue.Empty, EOFError, OSError):
            return None
        if kind == "event":
            on_event(payload)
        elif kind != "ready":
            return kind, payload


def _finish(kind: str, payload) -> Any:
    if kind == "result":
        return payload
    if kind == "interrupted":
        raise Interrupted(payload)
    if kind == "error":
        raise MnistbenchError(payload)
    raise ChildEnded(raised=payload)


def _signal(child, signum: int) -> None:
    try:
        os.kill(child.pid, signum)
    except (ProcessLookupError, TypeError):
        pass


def _end(child) -> None:
    """The child gone for good: asked to leave, then killed."""
    child.join(timeout=2.0)
    if child.is_alive():
        child.kill()
        child.join(timeout=5.0)
