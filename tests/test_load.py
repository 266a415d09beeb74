"""Honest under load: each cell records the machine's load and its epoch spread; the report flags throughput measured
under load, and `compare --fail-on 'throughput…'` refuses to judge it instead of calling noise a regression."""

from __future__ import annotations

import json
from itertools import count

import pytest
from typer.testing import CliRunner

from conftest import make_dataset, write_spec
from records_factory import make_record, write_records
from mnistbench.train import load
from mnistbench.cli import EXIT_NOT_JUDGED, app
from mnistbench.train.load import CpuReading, LoadMonitor, between, throughput_flags
from mnistbench.report.build import write_report
from mnistbench.results import load_records
from mnistbench.run.cell import execute
from mnistbench.run.runner import plan_run
from mnistbench.spec.schema import load_spec

runner = CliRunner()

SPEC = """\
name: loaded
dataset: mnist
device: cpu
epochs: 2
batch_size: 64
optimizer: adam
lr: 3.0e-3
threads: 1
matrix:
  model: [mlp-matched]
  seed: [0]
"""


def fake_cpu(others_share: float, steal_share: float = 0.0, load1: float = 1.0):
    """A CPU-time reader for a machine where other processes take ``others_share`` of all cores' time."""
    ticks = count()

    def read() -> CpuReading:
        k = next(ticks)  # every reading is 100 s of all cores' time later; this process used 10 s of it
        return CpuReading(total=100.0 * k, busy=(10.0 + 100 * others_share) * k, steal=100 * steal_share * k,
                          own=10.0 * k, load1=load1)
    return read


def run_under(tmp_path, name: str, read) -> tuple:
    data = tmp_path / "data"
    if not data.is_dir():
        make_dataset(data, n_train=128, n_test=64)
    spec = load_spec(write_spec(tmp_path / "loaded.yaml", SPEC))
    root = tmp_path / name
    plan = plan_run(spec, root, str(data), allow_download=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(load, "read_cpu", read)
        [execute(task, plan.datasets["mnist"]) for task in plan.tasks]
    write_report(plan.folder, plots=False)  # the tables only: figures are not what is tested here
    return plan.folder


@pytest.fixture(scope="module")
def quiet_and_busy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load")
    return run_under(tmp, "quiet", fake_cpu(0.0)), run_under(tmp, "busy", fake_cpu(0.6, steal_share=0.08, load1=3.0))


def test_between_two_readings_gives_other_processes_share_and_steal():
    a = CpuReading(total=1000.0, busy=300.0, steal=10.0, own=100.0, load1=0.5)
    b = CpuReading(total=1200.0, busy=420.0, steal=30.0, own=150.0, load1=2.5)
    sample = between(a, b)
    assert sample.others_cpu_share == pytest.approx((120 - 50) / 200)  # busy time that was not this process's
    assert sample.steal_share == pytest.approx(20 / 200) and sample.load_avg_1m == 2.5


def test_a_machine_whose_cpu_times_cannot_be_read_is_recorded_as_unknown():
    def broken() -> CpuReading:
        raise OSError("no /proc")

    monitor = LoadMonitor(broken)
    monitor.epoch()
    summary = monitor.summary(threads=2)
    assert summary["others_cpu_share"] is None and summary["per_epoch"] == []
    assert throughput_flags(summary, [100.0, 100.0]) == []


def test_each_cell_records_its_load_and_epoch_spread(quiet_and_busy):
    quiet, busy = quiet_and_busy
    [calm] = load_records(quiet)
    [loaded] = load_records(busy)
    assert calm.extra["load"]["others_cpu_share"] == 0.0 and calm.extra["load"]["steal_share"] == 0.0
    assert loaded.extra["load"]["others_cpu_share"] == pytest.approx(0.6)
    assert loaded.extra["load"]["steal_share"] == pytest.approx(0.08)
    assert loaded.extra["load"]["load_avg_1m_max"] == 3.0 and loaded.extra["load"]["threads"] == 1
    assert len(loaded.extra["load"]["per_epoch"]) == 2
    assert loaded.extra["throughput_spread"] == {"max_over_min": 1.0, "cv": 0.0, "epochs": 1}  # one steady epoch


def test_throughput_measured_under_load_is_flagged_in_the_summary(quiet_and_busy):
    quiet, busy = quiet_and_busy
    assert "⚠" not in (quiet / "summary.md").read_text()
    summary = (busy / "summary.md").read_text()
    assert "**⚠ Throughput measured under load or with a wide spread**" in summary
    assert ("- mlp-matched: mlp-matched_seed-0: other processes used 60% of the CPU time, "
            "8% of the CPU time stolen by the hypervisor") in summary
    assert "other processes used 60%" in (busy / "summary.csv").read_text()


def test_compare_refuses_to_judge_throughput_measured_under_load(quiet_and_busy):
    quiet, busy = quiet_and_busy
    result = runner.invoke(app, ["compare", str(quiet), str(busy), "--fail-on", "throughput<0.9"])
    assert result.exit_code == EXIT_NOT_JUDGED == 4
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        "mnistbench: error: throughput not judged for mlp-matched: measured under load")
    assert "**⚠ Throughput not judged**" in result.stdout and "`throughput<0.9`: not judged" in result.stdout
    doc = json.loads(runner.invoke(app, ["compare", str(quiet), str(busy), "--json", "--fail-on", "throughput<0.9"]).stdout)
    assert doc["refused"] == 1 and doc["regressions"] == 0 and doc["checks"][0]["refused"]
    assert doc["matched"][0]["throughput_flags"][0].startswith("B mlp-matched_seed-0: other processes used 60%")


def test_unloaded_runs_are_judged_as_before(quiet_and_busy):
    quiet, _ = quiet_and_busy
    result = runner.invoke(app, ["compare", str(quiet), str(quiet), "--fail-on", "throughput<0.9"])
    assert result.exit_code == 0 and result.stderr == "" and "not judged" not in result.stdout


def test_a_regression_elsewhere_still_exits_1_and_accuracy_is_judged_under_load(tmp_path):
    a = write_records(tmp_path / "a", [make_record("lenet5", s, 0.99) for s in range(3)])
    loaded = [make_record("lenet5", s, 0.95) for s in range(3)]
    for r in loaded:
        r.extra["load"] = {"cpu_count": 2, "others_cpu_share": 0.5, "steal_share": None, "load_avg_1m_max": 3.0}
    b = write_records(tmp_path / "b", loaded)
    result = runner.invoke(app, ["compare", str(a), str(b), "--fail-on", "accuracy<-0.2", "--fail-on", "throughput<0.9"])
    assert result.exit_code == 1  # a real regression (accuracy does not depend on the load) wins over a refusal
    assert "mnistbench: regression: lenet5: accuracy B − A" in result.stderr
    assert "mnistbench: error: throughput not judged for lenet5" in result.stderr


@pytest.mark.parametrize("load_info, speeds, expected", [
    (None, [500.0, 1000.0, 1100.0, 1050.0], []),  # an old record, steady epochs within 2x
    (None, [500.0, 1000.0, 3000.0, 1050.0], ["epoch throughputs spread 3.0×"]),  # the warm-up epoch is left out
    ({"others_cpu_share": 0.10, "steal_share": 0.05}, [1000.0, 1000.0], []),  # at the thresholds: not flagged
    ({"others_cpu_share": None, "load_avg_1m_max": 2.6, "cpu_count": 2}, [1000.0, 1000.0], ["load average 2.6 on 2 CPUs"]),
    ({"others_cpu_share": 0.0, "load_avg_1m_max": 2.6, "cpu_count": 2}, [1000.0, 1000.0], []),  # CPU share measured: it decides
])
def test_the_flag_thresholds(load_info, speeds, expected):
    assert throughput_flags(load_info, speeds) == expected


def test_a_report_of_records_from_before_the_load_was_measured_flags_only_a_wide_spread(tmp_path):
    folder = write_records(tmp_path / "old", [make_record("lenet5", 0, epochs=3, train_samples_per_s=[600.0, 2000.0, 400.0])])
    write_report(folder, plots=False)
    assert "lenet5_seed-0: epoch throughputs spread 5.0×" in (folder / "summary.md").read_text()
