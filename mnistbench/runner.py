"""Run a spec: cells -> engine -> run records -> report, resumable and safe to interrupt.

One results folder per spec: ``<results>/<spec>/runs/<cell>.json`` (one per finished
cell), ``checkpoints/`` (while a cell is in progress), ``summary.*`` and plots.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from filelock import FileLock, Timeout

from .errors import Interrupted, MnistbenchError
from .results import RunRecord, load_record
from .spec import Cell, Spec


@dataclass
class Event:
    """What the runner tells its front end (progress bar or plain lines)."""

    kind: str  # "start", "skip", "cell", "epoch", "done", "report"
    cell: Optional[Cell] = None
    index: int = 0
    total: int = 0
    epoch: int = 0
    epochs: int = 0
    message: str = ""


@dataclass
class RunSummary:
    results_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    measured_seconds: float = 0.0  # summed training + evaluation time of the cells run


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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


def describe_model(name: str) -> dict:
    """Name, parameter count and counted FLOPs per sample, stored with every run of the model."""
    from .models import count_params, create_model, forward_flops, train_flops

    m = create_model(name)
    return {"name": name, "parameters": count_params(m), "forward_flops": forward_flops(m), "train_flops": train_flops(m)}


def achieved_rates(model: dict, outcome) -> dict:
    """Steady-state GFLOP/s of a finished cell against the matmul peak of its device and thread count."""
    from .roofline import matmul_peak_gflops, roofline

    steady = outcome.epochs[1:] or outcome.epochs  # the first epoch pays for warm-up
    return roofline(
        model["train_flops"],
        model["forward_flops"],
        statistics.median(e.train_samples_per_s for e in steady),
        statistics.median(e.eval_samples_per_s for e in steady),
        matmul_peak_gflops(outcome.device, outcome.threads),
    )


def finished_record(runs_dir: Path, cell: Cell, config_hash: str) -> Optional[RunRecord]:
    path = runs_dir / f"{cell.id}.json"
    if not path.is_file():
        return None
    try:
        record = load_record(path)
    except MnistbenchError:
        return None  # unreadable: run the cell again and replace it
    return record if record.config_hash == config_hash else None


def run_spec(
    spec: Spec,
    results_root: Path = Path("results"),
    data_dir: Optional[str] = None,
    force: bool = False,
    on_event: Callable[[Event], None] = lambda e: None,
    allow_download: bool = True,
) -> RunSummary:
    """Run every cell of ``spec`` not already finished with the same configuration, then write the report."""
    from .checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
    from .data import load_dataset
    from .engine import resolve_device, run_cell
    from .environment import environment
    from .report import write_report

    cells = spec.cells()
    # Every input is checked before anything is written: device, data, results folder.
    for device in {c.config.device for c in cells}:
        resolve_device(device)
    datasets = {name: load_dataset(name, data_dir, allow_download) for name in dict.fromkeys(c.config.dataset for c in cells)}
    folder = Path(results_root) / spec.name
    check_writable(folder)
    runs_dir = folder / "runs"
    summary = RunSummary(folder)
    model_info: dict[str, dict] = {}

    with results_lock(folder), StopFlag() as stop:
        on_event(Event("start", total=len(cells), message=str(folder)))
        try:
            for index, cell in enumerate(cells, start=1):
                config = cell.config
                dataset = datasets[config.dataset]
                config_hash = config.config_hash([f.sha256 for f in dataset.files])
                if not force and finished_record(runs_dir, cell, config_hash) is not None:
                    summary.skipped.append(cell.id)
                    on_event(Event("skip", cell, index, len(cells)))
                    continue
                if stop():
                    raise Interrupted(stop())
                if config.model not in model_info:
                    model_info[config.model] = describe_model(config.model)
                ckpt = checkpoint_path(folder, cell.id)
                resume = None if force else load_checkpoint(ckpt, config_hash)
                on_event(Event("cell", cell, index, len(cells), epoch=len(resume.epochs) if resume else 0, epochs=config.epochs))
                cell_started, cell_wall = _now(), time.perf_counter()

                done_epochs = list(resume.epochs) if resume else []

                def on_epoch(metrics, state):
                    done_epochs.append(metrics)
                    save_checkpoint(ckpt, config_hash, done_epochs, state())
                    on_event(Event("epoch", cell, index, len(cells), epoch=metrics.epoch, epochs=config.epochs,
                                   message=f"test acc {100 * metrics.test_accuracy:.2f}%  loss {metrics.test_loss:.4f}"))

                outcome = run_cell(config, dataset, on_epoch=on_epoch, resume=resume, should_stop=stop)
                resumed_from = len(resume.epochs) if resume else 0
                # Timed work of this invocation only, to set against this invocation's wall time.
                measured = sum(e.train_seconds + e.eval_seconds for e in outcome.epochs[resumed_from:])
                record = RunRecord(
                    spec=spec.name,
                    cell=cell.id,
                    config=config.model_dump(),
                    config_hash=config_hash,
                    status=outcome.status,
                    model=model_info[config.model],
                    data={
                        "dataset": config.dataset,
                        "official": dataset.official,
                        "files": [f.to_dict() for f in dataset.files],
                    },
                    epochs=outcome.epochs,
                    environment=environment(outcome.threads),
                    started=cell_started,
                    finished=_now(),
                    device=outcome.device,
                    time_to_target_s=outcome.time_to_target_s,
                    epochs_to_target=outcome.epochs_to_target,
                    peak_memory_bytes=outcome.peak_memory_bytes,
                    note=outcome.note,
                    extra={"cell_index": index,  # position in the spec: the first variant is the baseline
                           "resumed_from_epoch": resumed_from,
                           "roofline": achieved_rates(model_info[config.model], outcome),
                           "wall_seconds": time.perf_counter() - cell_wall,
                           "measured_seconds": measured},
                )
                record.save(runs_dir)
                ckpt.unlink(missing_ok=True)
                summary.ran.append(cell.id)
                summary.measured_seconds += measured
                if outcome.status == "diverged":
                    summary.diverged.append(cell.id)
                on_event(Event("done", cell, index, len(cells), message=outcome.status))
        finally:
            # Whatever stopped the loop, the tables describe every finished cell.
            if summary.ran or (any(runs_dir.glob("*.json")) and not (folder / "summary.md").exists()):
                write_report(folder, spec.name)
                on_event(Event("report", message=str(folder)))
            ckpt_dir = folder / "checkpoints"
            if ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
                ckpt_dir.rmdir()  # only cells in progress leave anything there
    return summary
