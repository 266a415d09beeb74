"""Front ends for runner events: a rich progress bar in a terminal, plain lines elsewhere; both tell the time."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .events import Event
from ..report.words import counted


def clock_words(seconds: Optional[float]) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``?`` before anything is measured."""
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class Eta:
    """Elapsed time and what is left, per cell and overall, from the epochs timed so far.

    An epoch's time is the wall time between two events of its cell. A cell's estimate: its own model's
    median epoch time × its epochs left (any model's median before its own is known), plus the median time a
    finished cell spent outside its epochs (building, saving). Overall: the sum over the cells not done,
    divided by how many cells have run at once so far (1 sequentially, more on Ray).
    """

    now: Callable[[], float] = time.monotonic
    started: float = 0.0
    left: dict = field(default_factory=dict)  # cell id -> [model, epochs left]
    last: dict = field(default_factory=dict)  # cell id -> time of its last event
    cell_started: dict = field(default_factory=dict)  # cell id -> time it started
    per_model: dict = field(default_factory=dict)  # model -> epoch seconds
    in_epochs: dict = field(default_factory=dict)  # cell id -> seconds of its timed epochs
    overheads: list = field(default_factory=list)  # per finished cell: its seconds outside its epochs
    measured: float = 0.0

    def start(self, e: Event) -> None:
        self.started = self.now()
        self.left = {c.id: [c.config.model, c.config.epochs] for c in e.todo}

    def cell(self, e: Event) -> None:
        self.left[e.cell.id] = [e.cell.config.model, e.epochs - e.epoch]
        self.last[e.cell.id] = self.cell_started[e.cell.id] = self.now()

    def epoch(self, e: Event) -> None:
        now, cid = self.now(), e.cell.id
        if cid in self.last:
            seconds = now - self.last[cid]
            self.per_model.setdefault(e.cell.config.model, []).append(seconds)
            self.in_epochs[cid] = self.in_epochs.get(cid, 0.0) + seconds
            self.measured += seconds
        self.last[cid] = now
        self.left[cid] = [e.cell.config.model, e.epochs - e.epoch]

    def done(self, e: Event) -> None:
        cid = e.cell.id
        self.left.pop(cid, None)
        if cid in self.cell_started:
            overhead = max(0.0, self.now() - self.cell_started[cid] - self.in_epochs.pop(cid, 0.0))
            self.overheads.append(overhead)
            self.measured += overhead

    def _epoch_seconds(self, model: str) -> Optional[float]:
        mine = self.per_model.get(model)
        every = [x for xs in self.per_model.values() for x in xs]
        return statistics.median(mine or every) if every else None

    def cell_left(self, cell_id: str) -> Optional[float]:
        model, epochs = self.left.get(cell_id, (None, 0))
        each = self._epoch_seconds(model) if model else None
        if each is None:
            return None
        return each * epochs + (statistics.median(self.overheads) if self.overheads else 0.0)

    def cell_elapsed(self, cell_id: str) -> float:
        return self.now() - self.cell_started.get(cell_id, self.now())

    def elapsed(self) -> float:
        return self.now() - self.started

    def overall_left(self) -> Optional[float]:
        costs = [self.cell_left(c) for c in self.left]
        if any(c is None for c in costs):
            return None
        at_once = max(1.0, self.measured / self.elapsed()) if self.elapsed() > 0 else 1.0
        return sum(costs) / at_once

    def words(self, cell_id: Optional[str] = None) -> str:
        """``cell 12s, ~41s left; all 2m10s, ~5m00s left``."""
        overall = f"all {clock_words(self.elapsed())}, ~{clock_words(self.overall_left())} left"
        if cell_id is None:
            return overall
        return f"cell {clock_words(self.cell_elapsed(cell_id))}, ~{clock_words(self.cell_left(cell_id))} left; {overall}"


class PlainProgress:
    """One line per cell and epoch: readable in CI logs and files."""

    def __init__(self, stream=None, eta: Optional[Eta] = None):
        self.stream = stream or sys.stdout
        self.eta = eta or Eta()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def __call__(self, e: Event) -> None:
        _tell(self.eta, e)
        if e.kind == "start":
            line = f"running {counted(e.total, 'cell')} -> {e.message}"
        elif e.kind == "skip":
            same = "" if e.message == e.cell.id else f" (as {e.message})"
            line = f"[{e.index}/{e.total}] {e.cell.id}: already done with this configuration{same}, skipped"
        elif e.kind == "warning":
            print(f"mnistbench: warning: {e.message}", file=sys.stderr, flush=True)
            return
        elif e.kind == "cell":
            resumed = f" (resuming after epoch {e.epoch})" if e.epoch else ""
            line = f"[{e.index}/{e.total}] {e.cell.id}: {counted(e.epochs, 'epoch')}{resumed}"
        elif e.kind == "epoch":
            line = f"[{e.index}/{e.total}] {e.cell.id} epoch {e.epoch}/{e.epochs}: {e.message} ({self.eta.words(e.cell.id)})"
        elif e.kind == "done":
            line = f"[{e.index}/{e.total}] {e.cell.id}: {e.message} ({self.eta.words()})"
        elif e.kind == "status":
            line = f"cells: {e.message}"
        else:
            line = f"tables written to {e.message}"
        print(line, file=self.stream, flush=True)


def _tell(eta: Eta, e: Event) -> None:
    """Feed the time estimate the events that move it."""
    step = {"start": eta.start, "cell": eta.cell, "epoch": eta.epoch, "done": eta.done}.get(e.kind)
    if step is not None and (e.kind == "start" or e.cell is not None):
        step(e)


class RichProgress:
    """Bars for the cells of the matrix and for the epochs of each cell running (several under Ray)."""

    def __init__(self, eta: Optional[Eta] = None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[left]}"), TextColumn("{task.fields[info]}"),
        )
        self.eta = eta or Eta()
        self.cells = None
        self.epochs: dict[int, object] = {}  # cell index -> its epochs bar

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, e: Event) -> None:
        _tell(self.eta, e)
        self._show(e)
        if self.cells is not None:  # what is left moves with every event
            self.progress.update(self.cells, left=f"~{clock_words(self.eta.overall_left())} left")
            for task in self.progress.tasks:
                if "cell" in task.fields:  # an epochs bar
                    self.progress.update(task.id, left=f"~{clock_words(self.eta.cell_left(task.fields['cell']))} left")

    def _show(self, e: Event) -> None:
        p = self.progress
        if e.kind == "start":
            self.cells = p.add_task("cells", total=e.total, info=e.message, left="")
        elif e.kind == "skip":
            p.console.print(f"{e.cell.id}: already done, skipped")
            p.advance(self.cells)
        elif e.kind == "warning":
            p.console.print(f"mnistbench: warning: {e.message}", markup=False)
        elif e.kind == "cell":
            if e.index in self.epochs:  # the same cell started again (a lost Ray worker)
                p.remove_task(self.epochs.pop(e.index))
            self.epochs[e.index] = p.add_task(f"  {e.cell.id}", total=e.epochs, completed=e.epoch, info="", left="",
                                              cell=e.cell.id)
        elif e.kind == "epoch":
            if e.index in self.epochs:
                p.update(self.epochs[e.index], completed=e.epoch, info=e.message)
        elif e.kind == "done":
            p.console.print(f"{e.cell.id}: {e.message}")
            p.advance(self.cells)
            if e.index in self.epochs:
                p.remove_task(self.epochs.pop(e.index))
        elif e.kind == "status":
            p.update(self.cells, info=e.message)
        elif e.kind == "report":
            p.console.print(f"tables written to {e.message}")


def progress_for(stream=None):
    stream = stream or sys.stdout
    return RichProgress() if stream.isatty() else PlainProgress(stream)
