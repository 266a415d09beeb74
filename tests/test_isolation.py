"""A user's model cannot take the run down: sys.exit, os._exit, KeyboardInterrupt, a hang or a changed global setting
in its code fails its own cell (with the reason in the run file), the other cells finish, and the exit code says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_dataset, write_spec
from mnistbench.run.cell import CellTask, execute
from mnistbench.run.preflight import check_models_here
from mnistbench.cli import app
from mnistbench.data.datasets import load_dataset
from mnistbench.errors import Interrupted, MnistbenchError
from mnistbench.models.factory import load_model_source
from mnistbench.spec.schema import Cell, load_spec

ROOT = Path(__file__).resolve().parent.parent

# Each factory's model misbehaves in training only (batches of more than 2): the check before the run passes.
NETS = '''\
import os, sys, time
import torch
from torch import nn


class Net(nn.Module):
    fault = staticmethod(lambda: None)

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        if self.training and x.shape[0] > 2:
            self.fault()
        return self.fc(x.float().flatten(1))


def _with(fault):
    net = Net()
    net.fault = fault
    return net


def exits():
    return _with(lambda: sys.exit(0))


def os_exits():
    return _with(lambda: os._exit(1))


def interrupts():
    return _with(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))


def sleeps():
    return _with(lambda: time.sleep(120))


def float64():
    torch.set_default_dtype(torch.float64)
    return Net().float()


def sleeps_when_built():
    time.sleep(120)
    return Net()
'''

SPEC = """\
name: faults
device: cpu
epochs: 1
batch_size: 64
eval_batch_size: 128
threads: 1
matrix:
  model: {models}
"""


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def project(tmp_path: Path, models: list[str], extra: str = "") -> tuple[Path, Path]:
    (tmp_path / "nets.py").write_text(NETS)
    spec = write_spec(tmp_path / "faults.yaml", SPEC.format(models=json.dumps(models)) + extra)
    return spec, make_dataset(tmp_path / "data")


def records(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((results / "faults" / "runs").glob("*.json"))}


def in_process_task(tmp_path: Path, model: str) -> tuple[CellTask, object]:
    """A cell of a referenced model, run by ``execute`` in this process (as a Ray worker runs it)."""
    spec, data = project(tmp_path, [model])
    cell = load_spec(spec).cells()[0]
    config = cell.config.resolved("cpu", load_model_source(model, str(tmp_path)).sha256)
    return CellTask("faults", Cell(cell.id, config), "k" * 64, 1, 1, tmp_path / "results" / "faults"), load_dataset("mnist", data, False)


# --------------------------------------------------------------------------- in this process: execute's guards


def test_sys_exit_in_forward_fails_the_cell_with_the_reason(tmp_path):
    task, dataset = in_process_task(tmp_path, "./nets.py:exits")
    record = execute(task, dataset, should_stop=lambda: 0)
    assert record.status == "failed" and record.note == "the model's code raised SystemExit: 0"
    assert (task.folder / "runs" / "exits_seed-0.json").is_file()


def test_keyboard_interrupt_from_code_fails_the_cell_but_a_real_stop_still_stops(tmp_path):
    task, dataset = in_process_task(tmp_path, "./nets.py:interrupts")
    assert execute(task, dataset, should_stop=lambda: 0).note == "the model's code raised KeyboardInterrupt"
    with pytest.raises(KeyboardInterrupt):  # no stop flag (a Ray task, which ray.cancel stops this way): not the cell's
        execute(task, dataset, should_stop=None)
    with pytest.raises(Interrupted):  # a signal had asked the run to stop: the run stops
        execute(task, dataset, should_stop=lambda: signal.SIGINT)


def test_a_changed_default_dtype_is_restored_after_the_cell_and_the_check(tmp_path):
    task, dataset = in_process_task(tmp_path, "./nets.py:float64")
    events = []
    record = execute(task, dataset, events.append, should_stop=lambda: 0)
    assert torch.get_default_dtype() == torch.float32
    assert record.extra["torch_settings_restored"] == ["default_dtype"]
    assert any(e.kind == "warning" and "changed PyTorch's global default_dtype; restored" in e.message for e in events)
    check_models_here([load_spec(tmp_path / "faults.yaml").cells()[0].config])
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("value", ["0", "-1", "true", "'10'", ".nan", "1e12"])
def test_a_bad_cell_timeout_is_a_one_line_spec_error(tmp_path, value):
    with pytest.raises(MnistbenchError, match=r"cell_timeout: seconds, a number above 0"):
        load_spec(write_spec(tmp_path / "s.yaml", SPEC.format(models='["lenet5"]') + f"cell_timeout: {value}\n"))
    assert load_spec(write_spec(tmp_path / "t.yaml", SPEC.format(models='["lenet5"]') + "cell_timeout: 2.5\n")).cell_timeout == 2.5


# --------------------------------------------------------------------------- through the CLI: cells in child processes


def test_os_exit_and_sys_exit_in_a_model_fail_their_cells_and_the_others_finish(tmp_path):
    spec, data = project(tmp_path, ["./nets.py:os_exits", "./nets.py:exits", "mlp-matched"])
    result = cli("run", spec, "--results-dir", tmp_path / "results", "--data-dir", data)
    assert result.exit_code == 3, result.output
    runs = records(tmp_path / "results")
    assert {k: r["status"] for k, r in runs.items()} == {"os_exits_seed-0": "failed", "exits_seed-0": "failed",
                                                        "mlp-matched_seed-0": "finished"}
    assert runs["os_exits_seed-0"]["note"].startswith("its process ended with exit code 1 before the cell finished")
    assert runs["exits_seed-0"]["note"] == "the model's code raised SystemExit: 0"
    assert runs["exits_seed-0"]["extra"]["isolation"] == "process" and "isolation" not in runs["mlp-matched_seed-0"]["extra"]
    assert "2 failed" in result.output and "os_exits_seed-0" in (tmp_path / "results" / "faults" / "summary.md").read_text()


@pytest.mark.slow
def test_every_fault_fails_only_its_own_cell_within_the_cell_timeout(tmp_path):
    models = ["lenet5", "./nets.py:interrupts", "./nets.py:sleeps", "./nets.py:float64", "./nets.py:os_exits", "mlp-matched"]
    spec, data = project(tmp_path, models, "cell_timeout: 10\n")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mnistbench.cli", "run", str(spec), "--results-dir", str(tmp_path / "results"),
                           "--data-dir", str(data)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - started < 120  # the sleeping model did not hold the run for its 120 s
    runs = records(tmp_path / "results")
    assert {k: r["status"] for k, r in runs.items()} == {
        "lenet5_seed-0": "finished", "interrupts_seed-0": "failed", "sleeps_seed-0": "failed", "float64_seed-0": "finished",
        "os_exits_seed-0": "failed", "mlp-matched_seed-0": "finished"}
    assert runs["sleeps_seed-0"]["note"] == "did not finish within cell_timeout 10 s; its process was stopped"
    assert runs["interrupts_seed-0"]["note"] == "the model's code raised KeyboardInterrupt"
    # Its own float64 stayed in its process: the cells after it ran as in a run without it.
    alone = tmp_path / "alone"
    assert cli("run", write_spec(tmp_path / "alone.yaml", SPEC.format(models='["mlp-matched"]')), "--results-dir", alone,
               "--data-dir", data).exit_code == 0
    metrics = lambda r: [(e["train_loss"], e["test_accuracy"]) for e in r["epochs"]]  # noqa: E731
    assert metrics(runs["mlp-matched_seed-0"]) == metrics(json.loads((alone / "faults" / "runs" / "mlp-matched_seed-0.json").read_text()))
    assert "3 cells failed (interrupts_seed-0, sleeps_seed-0, os_exits_seed-0)" in proc.stderr


@pytest.mark.slow
def test_a_model_that_hangs_when_built_is_a_one_line_error_before_the_run(tmp_path):
    spec, data = project(tmp_path, ["./nets.py:sleeps_when_built"], "cell_timeout: 3\n")
    result = cli("run", spec, "--results-dir", tmp_path / "results", "--data-dir", data)
    assert result.exit_code == 2
    assert result.output.strip() == ("mnistbench: error: model './nets.py:sleeps_when_built': checking it before the run: did not "
                                     "finish within 3 s (the spec's cell_timeout per model, else 600 s); its process was stopped")


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_still_stops_an_isolated_cell_with_130_and_it_resumes(tmp_path):
    spec, data = project(tmp_path, ["lenet5"], "cell_timeout: 600\n")
    spec.write_text(spec.read_text().replace("epochs: 1", "epochs: 3"))
    proc = subprocess.Popen([sys.executable, "-m", "mnistbench.cli", "run", str(spec), "--results-dir", str(tmp_path / "results"),
                             "--data-dir", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    for line in proc.stdout:  # the first epoch is saved by the child: stop now, as a Ctrl-C in the terminal would
        if "epoch 1/3" in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopped by SIGINT; finished cells and epochs are saved. Resume with: mnistbench run" in err
    resumed = cli("run", spec, "--results-dir", tmp_path / "results", "--data-dir", data)
    assert resumed.exit_code == 0 and "resuming after epoch" in resumed.output
    assert records(tmp_path / "results")["lenet5_seed-0"]["extra"]["resumed_from_epoch"] >= 1
