"""Run ONE cell: resume from its checkpoint, train it, write its run file.

The same function serves every executor, so a cell behaves the same whether the
sequential loop or a worker runs it. A cell that raises is recorded ``failed`` with
a one-line reason instead of stopping the matrix; a full disk or a signal still
stops the run (they would stop every cell after it too).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..train import torchstate
from .checkpoint import checkpoint_for, load_checkpoint, save_checkpoint, set_aside
from ..data.datasets import Dataset, content_hashes
from ..train.engine import CellOutcome, ResumeError, ResumeState, run_cell
from ..environment import environment
from .events import Event, OnEvent
from ..layout import run_file
from ..train.load import LoadMonitor, throughput_spread
from ..train.native import status as native_status
from ..train.roofline import achieved_rates
from ..errors import Interrupted, MnistbenchError, reason
from .preflight import describe_model
from ..results import EpochMetrics, Measurement, RunRecord, data_identity, derive_status, now
from ..spec.schema import Cell
from ..weights import save_weights, weights_bytes


@dataclass
class CellTask:
    """One cell to run: its spec, its place in the matrix, its key and where its files go."""

    spec: str
    cell: Cell  # with the device resolved
    key: str
    index: int
    total: int
    folder: Path
    force: bool = False
    extra: dict = field(default_factory=dict)  # stored in the record (e.g. the executor's node)
    threads: Optional[int] = None  # the CPU threads it runs with (the key's), resolved when the spec leaves them to torch
    measurement: Optional[Measurement] = None  # its key on this machine; None: the key alone (tests)
    stem: str = ""  # its files' name (``results.run_file_for``, chosen under the cell's lock); "" for the cell's id

    @property
    def suffix(self) -> str:
        return self.measurement.suffix if self.measurement else self.key[:8]

    def run_file(self, folder: Path) -> Path:
        return run_file(folder, self.stem or self.cell.id)




def _raised_by_code(e: BaseException, should_stop) -> str:
    """A ``SystemExit`` or ``KeyboardInterrupt`` from the cell's code is the cell's failure, not the run's end.

    Under a stop flag (``should_stop``) a real Ctrl-C never raises: it sets the flag. Without one (a Ray
    task, which ``ray.cancel`` stops with a KeyboardInterrupt) a KeyboardInterrupt still stops the task.
    """
    if isinstance(e, KeyboardInterrupt) and should_stop is None:
        raise e
    if should_stop is not None and should_stop():
        raise Interrupted(should_stop()) from None
    return f"the model's code raised {reason(e)}"


def execute(task: CellTask, dataset: Dataset, on_event: OnEvent = lambda e: None, should_stop=None) -> RunRecord:
    """Train the cell (resuming from its checkpoint), write ``runs/<stem>.json`` atomically and return the record."""
    cell, folder = task.cell, task.folder
    ckpt = checkpoint_for(folder, cell.id, task.key, task.suffix)
    # Threads left to torch run with the count the key was made with, wherever the cell runs.
    config = cell.config if cell.config.threads or not task.threads else cell.config.model_copy(update={"threads": task.threads})
    resume, message = (None, "") if task.force else load_checkpoint(ckpt, task.key, cell.config.epochs)
    if message:
        on_event(Event("warning", cell, task.index, task.total, message=message))
    on_event(Event("cell", cell, task.index, task.total, epoch=len(resume.epochs) if resume else 0, epochs=cell.config.epochs))
    started, wall = now(), time.perf_counter()
    done: list[EpochMetrics] = list(resume.epochs) if resume else []
    load = LoadMonitor()  # the machine's load during this cell's epochs (docs/statistics.md)

    def on_epoch(metrics: EpochMetrics, state: Callable[[], ResumeState]) -> None:
        load.epoch()
        done.append(metrics)
        save_checkpoint(ckpt, task.key, state())
        on_event(Event("epoch", cell, task.index, task.total, epoch=metrics.epoch, epochs=cell.config.epochs,
                       message=f"test acc {100 * metrics.test_accuracy:.2f}%  loss {metrics.test_loss:.4f}"))

    outcome, failure = None, ""
    with torchstate.kept() as state:  # what the cell's code changes in PyTorch's global settings ends with the cell
        try:
            try:
                outcome = run_cell(config, dataset, on_epoch, resume, should_stop)
            except ResumeError as e:
                on_event(Event("warning", cell, task.index, task.total, message=set_aside(ckpt, str(e))))
                resume, done[:] = None, []
                outcome = run_cell(config, dataset, on_epoch, None, should_stop)
        except (Interrupted, MnistbenchError):
            raise  # a signal, a full disk, bad input: the run stops, the checkpoint stays
        except (KeyboardInterrupt, SystemExit) as e:
            failure = _raised_by_code(e, should_stop)
        except OSError as e:  # an OS error outside our own writes (e.g. torch.compile's cache): the run stops in one line
            where = f" ({e.filename})" if e.filename else ""
            raise MnistbenchError(f"cell {cell.id}: {e.strerror or e}{where}") from None
        except Exception as e:  # noqa: BLE001 - any failure of the cell itself is recorded, and the matrix goes on
            failure = reason(e)
    if state.changed:
        task = dataclasses.replace(task, extra={**task.extra, "torch_settings_restored": state.changed})
        on_event(Event("warning", cell, task.index, task.total,
                       message=f"{cell.id} changed PyTorch's global {', '.join(state.changed)}; restored for the next cell"))
    record = build_record(task, dataset, outcome, done, failure, len(resume.epochs) if resume else 0, started, wall,
                          load.summary(outcome.threads if outcome else cell.config.threads))
    save_result(record, outcome, task.run_file(folder))
    if record.status != "failed":
        ckpt.unlink(missing_ok=True)  # a failed cell keeps its checkpoint, so a retry resumes
    on_event(Event("done", cell, task.index, task.total, message=record.status + (f" ({record.note})" if record.note else "")))
    return record


def save_result(record: RunRecord, outcome: Optional[CellOutcome], path: Path) -> Path:
    """The weights (when the cell trained) and then the run file ``path`` that names their hash; ``path``."""
    if outcome is not None and outcome.weights is not None and record.status != "failed":
        record.extra["weights"] = save_weights(path, weights_bytes(outcome.weights))
    return record.save(path.parent, path.stem)


def cell_environment(outcome: Optional[CellOutcome]) -> dict:
    """The environment record, with the thread count and determinism settings the cell ran with, and on the CPU
    whether the engine's C kernels were in use (train/native.py)."""
    env = environment(outcome.threads if outcome else None)
    if outcome is not None and outcome.determinism is not None:
        env["determinism"] = outcome.determinism
    if outcome is not None and outcome.device == "cpu":
        env["native_kernels"] = native_status()
    return env


def build_record(
    task: CellTask, dataset: Dataset, outcome: Optional[CellOutcome], done: list[EpochMetrics], failure: str,
    resumed_from: int, started: str, wall_start: float, load: Optional[dict] = None,
) -> RunRecord:
    """The run record of a cell; its status follows from the metrics (and the failure, if any), however it got there."""
    config = task.cell.config
    model = describe_model(config.model, config.base_dir, config.model_sha256)
    epochs = outcome.epochs if outcome is not None else done
    status, note = derive_status(epochs, failure)
    # Timed work of this invocation only, to set against this invocation's wall time.
    measured = sum(e.train_seconds + e.eval_seconds for e in epochs[resumed_from:])
    extra = {"cell_index": task.index,  # position in the spec: the first variant is the baseline
             "resumed_from_epoch": resumed_from,
             "wall_seconds": time.perf_counter() - wall_start,
             "measured_seconds": measured, **task.extra}
    if config.max_steps is not None:  # the samples of a whole epoch: what a report needs to count a cut one
        extra["epoch_samples"] = len(dataset.train) - config.validation
    if load is not None:
        extra["load"] = load  # this invocation's epochs only: a resumed cell measured the others elsewhere
    spread = throughput_spread([e.train_samples_per_s for e in epochs])
    if spread is not None:
        extra["throughput_spread"] = spread
    if outcome is not None and outcome.epochs:
        extra["roofline"] = achieved_rates(model, outcome, config)  # the 0.1 name: rates, roofs and bytes per sample
    if outcome is not None and outcome.peak_rss_bytes is not None:
        extra["peak_rss_bytes"] = outcome.peak_rss_bytes  # the process's peak RSS over the cell (CPU runs)
    sha256s = content_hashes(dataset)
    return RunRecord(
        spec=task.spec,
        cell=task.cell.id,
        config=config.model_dump(),
        config_hash=task.key,
        key=task.key,
        status=status,
        model=model,
        data={"dataset": config.dataset, "identity": data_identity(sha256s), "official": dataset.official,
              "files": [f.to_dict() for f in dataset.files]},
        epochs=epochs,
        environment=cell_environment(outcome),
        started=started,
        finished=now(),
        device=outcome.device if outcome else config.device,
        time_to_target_s=outcome.time_to_target_s if outcome else None,
        epochs_to_target=outcome.epochs_to_target if outcome else None,
        wall_to_target_s=outcome.wall_to_target_s if outcome else None,
        peak_memory_bytes=outcome.peak_memory_bytes if outcome else None,
        note=note,
        extra=extra,
    )
