"""Export to TensorBoard and MLflow, read back with each tool's own reader: every value at its epoch."""

import json
import math
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistbench.spec.keys import KEY_OMITTED_AT_DEFAULT
from mnistbench.cli import app
from mnistbench.report.export import METRICS, export_results
from records_factory import make_record, write_records

runner = CliRunner()


@pytest.fixture
def results(tmp_path):
    """Three cells of spec 'demo': one with a varied setting, one that diverged (NaN test loss in its last epoch)."""
    records = [
        make_record("lenet5", 0, test_accuracy=[0.95, 0.97, 0.985], test_loss=[0.2, 0.1, 0.05]),
        make_record("lenet5", 0, lr=0.01, test_accuracy=[0.9, 0.93], test_loss=[0.4, 0.3]),
        make_record("mlp-matched", 1, status="diverged", test_accuracy=[0.9, 0.1], test_loss=[0.3, 2.0]),
    ]
    return write_records(tmp_path / "demo", records), records


def expected(record, name):
    return [(e.epoch, float(getattr(e, METRICS[name]))) for e in record.epochs]


def same(a, b):
    """Equal pairs, where NaN equals NaN."""
    return len(a) == len(b) and all(s == t and (v == w or (math.isnan(v) and math.isnan(w))) for (s, v), (t, w) in zip(a, b))


def read_tensorboard(folder):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[dev]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_has_one_run_per_cell_with_every_epoch(results):
    folder, records = results
    summary = export_results(folder, "tensorboard")
    assert summary.out == folder / "tensorboard" and summary.written == [r.cell for r in records]
    assert sorted(p.name for p in summary.out.iterdir()) == sorted(r.cell for r in records)
    for r in records:
        scalars = read_tensorboard(summary.out / r.cell)
        assert set(scalars) == set(METRICS)
        for name in METRICS:  # TensorBoard stores scalars as float32
            assert same(scalars[name], [(step, float(np.float32(v))) for step, v in expected(r, name)]), (r.cell, name)
    diverged = read_tensorboard(summary.out / "mlp-matched_seed-1")["test/loss"]
    assert diverged[0] == (1, pytest.approx(0.3)) and diverged[1][0] == 2 and math.isnan(diverged[1][1])


def test_tensorboard_export_again_replaces_instead_of_repeating(results, tmp_path):
    folder, records = results
    out = tmp_path / "tb"
    export_results(folder, "tensorboard", out)
    export_results(folder, "tensorboard", out)
    for r in records:
        assert len(list((out / r.cell).glob("events.out.tfevents.*"))) == 1
        assert read_tensorboard(out / r.cell)["test/accuracy"] == [(s, float(np.float32(v))) for s, v in expected(r, "test/accuracy")]


@pytest.fixture
def mlflow_client(monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[dev]'")
    from mlflow.tracking import MlflowClient

    return lambda out: MlflowClient(tracking_uri=out.resolve().as_uri())


def runs_by_cell(client, spec="demo"):
    experiment = client.get_experiment_by_name(spec)
    return {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}


def test_mlflow_has_one_run_per_cell_with_params_and_metric_history(results, mlflow_client):
    folder, records = results
    summary = export_results(folder, "mlflow")
    assert summary.out == folder / "mlruns" and summary.location == (folder / "mlruns").resolve().as_uri()
    client = mlflow_client(summary.out)
    runs = runs_by_cell(client)
    assert sorted(runs) == sorted(r.cell for r in records)
    for r in records:
        run = runs[r.cell]
        # Loaded records carry every setting, those added after the file was written at their defaults.
        assert run.data.params == {k: str(v) for k, v in {**KEY_OMITTED_AT_DEFAULT, **r.config}.items()}
        assert run.data.tags["mnistbench.status"] == r.status and run.data.tags["mnistbench.model_parameters"] == str(r.model["parameters"])
        assert run.info.status == "FINISHED" and run.info.start_time == 1704067200000  # 2024-01-01T00:00:00+00:00
        for name in METRICS:
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
            assert same(history, expected(r, name)), (r.cell, name)
    assert runs["lenet5_seed-0_lr-0.01"].data.params["lr"] == "0.01"


def test_mlflow_export_again_keeps_unchanged_cells_and_replaces_rerun_ones(results, mlflow_client):
    folder, records = results
    export_results(folder, "mlflow")
    first = {cell: run.info.run_id for cell, run in runs_by_cell(mlflow_client(folder / "mlruns")).items()}
    again = export_results(folder, "mlflow")
    assert again.written == [] and again.unchanged == [r.cell for r in records]
    rerun = make_record("lenet5", 0, test_accuracy=[0.96, 0.99], test_loss=[0.15, 0.04])
    rerun.finished = "2024-01-02T00:00:00+00:00"
    write_records(folder, [rerun])
    third = export_results(folder, "mlflow")
    assert third.written == ["lenet5_seed-0"]
    client = mlflow_client(folder / "mlruns")
    runs = runs_by_cell(client)
    assert len(runs) == 3 and {c: runs[c].info.run_id for c in runs if c != "lenet5_seed-0"} == {
        c: i for c, i in first.items() if c != "lenet5_seed-0"}
    new = runs["lenet5_seed-0"]
    assert new.info.run_id != first["lenet5_seed-0"]
    assert sorted((m.step, m.value) for m in client.get_metric_history(new.info.run_id, "test/accuracy")) == [(1, 0.96), (2, 0.99)]
    assert client.get_run(first["lenet5_seed-0"]).info.lifecycle_stage == "deleted"


def test_export_command_prints_where_it_wrote(results, tmp_path):
    folder, _ = results
    result = runner.invoke(app, ["export", str(folder), "--to", "tensorboard", "--out", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"exported 3 cells to tensorboard: {tmp_path / 'tb'}", f"view with: tensorboard --logdir {tmp_path / 'tb'}"]


def one_line_error(args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2 and result.stdout == "" and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mnistbench: error: ")
    return result.stderr.strip()


@pytest.mark.parametrize("to, blocked, extra", [("tensorboard", "tensorboard", "tensorboard"), ("mlflow", "mlflow", "mlflow")])
def test_a_missing_extra_names_the_pip_install(results, monkeypatch, to, blocked, extra):
    # Importing the package or any of its modules now raises ImportError, as when it is not installed.
    for name in [blocked] + [m for m in sys.modules if m.startswith(blocked + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    message = one_line_error(["export", results[0], "--to", to])
    assert message.endswith(f"install 'mnistbench[{extra}]'")


def test_bad_folders_are_one_line_errors(tmp_path):
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    assert "no run files in" in one_line_error(["export", tmp_path / "empty", "--to", "tensorboard"])
    assert "no run files in" in one_line_error(["export", tmp_path / "missing", "--to", "mlflow"])
    folder = write_records(tmp_path / "demo", [make_record()])
    (tmp_path / "file").write_text("x")
    assert "is a file, expected a folder" in one_line_error(["export", folder, "--to", "tensorboard", "--out", tmp_path / "file"])
    broken = tmp_path / "broken"
    (broken / "runs").mkdir(parents=True)
    (broken / "runs" / "x.json").write_text(json.dumps({"schema": 1}))
    assert "not a valid run file" in one_line_error(["export", broken, "--to", "mlflow"])
