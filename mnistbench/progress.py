"""Front ends for runner events: a rich progress bar in a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys

from .cell import Event
from .words import counted


class PlainProgress:
    """One line per cell and epoch: readable in CI logs and files."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def __call__(self, e: Event) -> None:
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
            line = f"[{e.index}/{e.total}] {e.cell.id} epoch {e.epoch}/{e.epochs}: {e.message}"
        elif e.kind == "done":
            line = f"[{e.index}/{e.total}] {e.cell.id}: {e.message}"
        elif e.kind == "status":
            line = f"cells: {e.message}"
        else:
            line = f"tables written to {e.message}"
        print(line, file=self.stream, flush=True)


class RichProgress:
    """Bars for the cells of the matrix and for the epochs of each cell running (several under Ray)."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.cells = None
        self.epochs: dict[int, object] = {}  # cell index -> its epochs bar

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, e: Event) -> None:
        p = self.progress
        if e.kind == "start":
            self.cells = p.add_task("cells", total=e.total, info=e.message)
        elif e.kind == "skip":
            p.console.print(f"{e.cell.id}: already done, skipped")
            p.advance(self.cells)
        elif e.kind == "warning":
            p.console.print(f"mnistbench: warning: {e.message}", markup=False)
        elif e.kind == "cell":
            if e.index in self.epochs:  # the same cell started again (a lost Ray worker)
                p.remove_task(self.epochs.pop(e.index))
            self.epochs[e.index] = p.add_task(f"  {e.cell.id}", total=e.epochs, completed=e.epoch, info="")
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
