"""Progress tells the time: per cell and overall, the time elapsed and an estimate of what is left."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from mnistbench.run.events import Event
from mnistbench.run.progress import Eta, PlainProgress, RichProgress, clock_words
from mnistbench.spec.schema import Cell, CellConfig


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _cells():
    return [Cell("lenet5_seed-0", CellConfig(model="lenet5", epochs=3, device="cpu")),
            Cell("mlp-matched_seed-0", CellConfig(model="mlp-matched", epochs=2, device="cpu"))]


def _play(front, clock, seconds_per_epoch):
    """Run the events of two cells through a front end; lenet5 epochs take 10 s, mlp-matched ones 2 s."""
    cells = _cells()
    with front:
        front(Event("start", total=3, message="results/x", todo=tuple(cells)))
        front(Event("skip", Cell("lenet5_seed-1", cells[0].config), 1, 3, message="lenet5_seed-1"))
        for i, cell in enumerate(cells, start=2):
            front(Event("cell", cell, i, 3, epoch=0, epochs=cell.config.epochs))
            for epoch in range(1, cell.config.epochs + 1):
                clock.t += seconds_per_epoch[cell.config.model]
                front(Event("epoch", cell, i, 3, epoch=epoch, epochs=cell.config.epochs, message="acc 90%"))
            front(Event("done", cell, i, 3, message="finished"))


def test_plain_lines_say_elapsed_and_left_per_cell_and_overall():
    clock, stream = Clock(), io.StringIO()
    _play(PlainProgress(stream, Eta(now=clock)), clock, {"lenet5": 10, "mlp-matched": 2})
    lines = stream.getvalue().splitlines()
    # After lenet5's first epoch: its own 2 epochs left at 10 s; mlp-matched's 2 epochs estimated at lenet5's pace.
    assert lines[3] == "[2/3] lenet5_seed-0 epoch 1/3: acc 90% (cell 10s, ~20s left; all 10s, ~40s left)"
    assert lines[6] == "[2/3] lenet5_seed-0: finished (all 30s, ~20s left)"
    # Once mlp-matched has its own epoch time, the estimate uses it.
    assert lines[8] == "[3/3] mlp-matched_seed-0 epoch 1/2: acc 90% (cell 2s, ~2s left; all 32s, ~2s left)"
    assert lines[-1] == "[3/3] mlp-matched_seed-0: finished (all 34s, ~0s left)"


def test_nothing_measured_yet_is_a_question_mark_and_durations_read_as_clock_words():
    eta = Eta(now=Clock())
    eta.start(Event("start", total=1, todo=tuple(_cells()[:1])))
    assert eta.overall_left() is None and eta.words() == "all 0s, ~? left"
    assert [clock_words(s) for s in (None, 5.4, 65, 3725)] == ["?", "5s", "1m05s", "1h02m"]


def test_epochs_run_at_once_shorten_the_overall_estimate():
    """Under Ray two cells train together: their epochs add up to twice the wall time, so what is left halves."""
    clock = Clock()
    eta = Eta(now=clock)
    a, b = (Cell(f"lenet5_seed-{s}", CellConfig(model="lenet5", epochs=3, device="cpu")) for s in (0, 1))
    eta.start(Event("start", total=2, todo=(a, b)))
    for c in (a, b):
        eta.cell(Event("cell", c, epochs=3))
    clock.t = 10
    for c in (a, b):
        eta.epoch(Event("epoch", c, epoch=1, epochs=3))
    assert eta.cell_left(a.id) == 20 and eta.overall_left() == 20  # 40 s of epochs left, two at a time


def test_the_rich_bars_carry_what_is_left():
    clock = Clock()
    front = RichProgress(Eta(now=clock))
    front.progress.console.file = io.StringIO()
    _play(front, clock, {"lenet5": 10, "mlp-matched": 2})
    [cells] = front.progress.tasks
    assert cells.completed == 3 and cells.fields["left"] == "~0s left"


def test_time_a_cell_spends_outside_its_epochs_counts_for_the_cells_to_come():
    clock = Clock()
    eta = Eta(now=clock)
    a, b = (Cell(f"lenet5_seed-{s}", CellConfig(model="lenet5", epochs=2, device="cpu")) for s in (0, 1))
    eta.start(Event("start", total=2, todo=(a, b)))
    eta.cell(Event("cell", a, epochs=2))
    for epoch in (1, 2):
        clock.t += 10
        eta.epoch(Event("epoch", a, epoch=epoch, epochs=2))
    clock.t += 5  # evaluating, saving the weights and the run file
    eta.done(Event("done", a))
    assert eta.cell_left(b.id) == 2 * 10 + 5 and eta.overall_left() == 25


def test_drawing_progress_imports_no_torch():
    code = "import sys, mnistbench.run.progress; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
