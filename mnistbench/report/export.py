"""A results folder's per-epoch metrics as TensorBoard event files or MLflow runs.

Reads the run files only (``runs/*.json``), never trains. Each cell becomes one TensorBoard run
folder or one MLflow run; the step of every value is its epoch (1, 2, ...). Values are written
as recorded, NaN and infinity included: a NaN marks the epoch a diverged run blew up.
Exporting again replaces what an earlier export wrote for the same cells.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import MnistbenchError
from ..results import RunRecord, load_records

# Exported name -> EpochMetrics field; the same names in TensorBoard and MLflow.
METRICS = {
    "train/loss": "train_loss",
    "train/accuracy": "train_accuracy",
    "test/loss": "test_loss",
    "test/accuracy": "test_accuracy",
    "lr": "lr",
    "train/samples_per_s": "train_samples_per_s",
}

FORMATS = ("tensorboard", "mlflow")
DEFAULT_FOLDER = {"tensorboard": "tensorboard", "mlflow": "mlruns"}


@dataclass
class ExportSummary:
    """What an export did: where it wrote, and which cells it wrote or found already exported."""

    format: str
    out: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def location(self) -> str:
        """What to point the viewer at: the log folder, or MLflow's tracking URI."""
        return self.out.resolve().as_uri() if self.format == "mlflow" else str(self.out)


def metric_series(record: RunRecord) -> dict[str, list[tuple[int, float]]]:
    """Every exported metric of a run as (epoch, value) pairs in epoch order."""
    return {name: [(e.epoch, float(getattr(e, attr))) for e in record.epochs] for name, attr in METRICS.items()}


def export_results(results_dir: Path, to: str, out: Path | None = None) -> ExportSummary:
    """Export every run file of ``results_dir`` to ``to`` ("tensorboard" or "mlflow") under ``out``.

    ``out`` defaults to ``results_dir/tensorboard`` or ``results_dir/mlruns``. Raises
    MnistbenchError for an unknown format, a folder without run files, or a missing extra.
    """
    if to not in FORMATS:
        raise MnistbenchError(f"unknown export format '{to}' (known: {', '.join(FORMATS)})")
    records = load_records(results_dir)
    if not records:
        raise MnistbenchError(f"no run files in {results_dir} (expected {Path(results_dir) / 'runs'}/*.json)")
    out = Path(out) if out is not None else Path(results_dir) / DEFAULT_FOLDER[to]
    if out.exists() and not out.is_dir():
        raise MnistbenchError(f"--out {out} is a file, expected a folder")
    summary = ExportSummary(to, out)
    try:
        (to_tensorboard if to == "tensorboard" else to_mlflow)(records, out, summary)
    except OSError as e:
        raise MnistbenchError(f"cannot write to {out}: {e.strerror or e}") from None
    return summary


def _missing_extra(extra: str, package: str) -> MnistbenchError:
    return MnistbenchError(f"exporting to {extra} needs the {package} package: pip install 'mnistbench[{extra}]'")


# --------------------------------------------------------------------------- TensorBoard


def to_tensorboard(records: list[RunRecord], out: Path, summary: ExportSummary) -> None:
    """One run folder per cell, ``out/<cell>/``, holding one event file of scalars.

    Written with the tensorboard package's own event writer and protocol buffers (what torch's SummaryWriter
    uses underneath), so the report stage imports no torch."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise _missing_extra("tensorboard", "tensorboard") from None

    for record in records:
        folder = out / record.cell
        # A second event file would repeat every point; the earlier export's files make way.
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        writer = EventFileWriter(str(folder))
        try:
            for name, points in metric_series(record).items():
                for epoch, value in points:
                    scalar = Summary(value=[Summary.Value(tag=name, simple_value=value)])
                    writer.add_event(Event(summary=scalar, wall_time=time.time(), step=epoch))
        finally:
            writer.close()
        summary.written.append(record.cell)


# --------------------------------------------------------------------------- MLflow

# Tags that tie an MLflow run to the run file it came from.
CELL_TAG = "mnistbench.cell"
SOURCE_TAG = "mnistbench.source"  # config hash and finish time: the same value means the same run file


def to_mlflow(records: list[RunRecord], out: Path, summary: ExportSummary) -> None:
    """One MLflow run per cell in a file store at ``out``, in an experiment named after the spec.

    Params are the cell's configuration; metrics are logged per epoch (step = epoch). A cell
    already exported from the same run file is left alone; one exported from an earlier run
    file of that cell is deleted and exported again.
    """
    # mlflow phones home unless told not to; and since 3.x its file store is opt-in.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise _missing_extra("mlflow", "mlflow-skinny") from None

    try:
        out.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=out.resolve().as_uri())
        for record in records:
            if _export_run(client, record):
                summary.written.append(record.cell)
            else:
                summary.unchanged.append(record.cell)
    except MlflowException as e:
        raise MnistbenchError(f"MLflow store {out}: {e.message}") from None


def _export_run(client, record: RunRecord) -> bool:
    """Log one record as a run; False when the same run file was already exported."""
    from mlflow.entities import Metric, Param

    experiment = client.get_experiment_by_name(record.spec)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(record.spec)
    source = f"{record.config_hash} {record.finished}"
    earlier = [r for r in _all_runs(client, experiment_id) if r.data.tags.get(CELL_TAG) == record.cell]
    if any(r.data.tags.get(SOURCE_TAG) == source for r in earlier):
        return False
    for r in earlier:
        client.delete_run(r.info.run_id)

    tags = {
        CELL_TAG: record.cell,
        SOURCE_TAG: source,
        "mnistbench.spec": record.spec,
        "mnistbench.status": record.status,
        "mnistbench.device": record.device,
        "mnistbench.model_parameters": record.model.get("parameters"),
        "mnistbench.git_commit": record.environment.get("git_commit"),
    }
    tags = {k: str(v) for k, v in tags.items() if v is not None}
    run = client.create_run(experiment_id, start_time=_ms(record.started), tags=tags, run_name=record.cell)
    run_id = run.info.run_id
    logged_at = _ms(record.finished)
    params = [Param(k, str(v)) for k, v in record.config.items()]
    metrics = [Metric(name, value, logged_at, epoch) for name, points in metric_series(record).items() for epoch, value in points]
    for i in range(0, len(params), 100):  # MLflow's per-request limits: 100 params, 1000 metrics
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    client.set_terminated(run_id, "FINISHED", end_time=logged_at)
    return True


def _all_runs(client, experiment_id: str) -> list:
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _ms(iso_time: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 time as run files store it."""
    return int(datetime.fromisoformat(iso_time).timestamp() * 1000)
