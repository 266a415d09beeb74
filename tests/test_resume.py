"""Interrupted runs lose nothing: checkpoints, resume, signals, SIGKILL, locks."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_dataset, write_spec
from mnistbench.errors import Interrupted, MnistbenchError
from mnistbench.run.locks import cell_locks
from mnistbench.run.runner import run_spec
from mnistbench.spec.schema import load_spec

SPEC = """\
name: resumable
device: cpu
epochs: 3
batch_size: 64
eval_batch_size: 256
lr: 3.0e-3
schedule: onecycle
threads: 1
matrix:
  model: [lenet5, mlp-matched]
  seed: [0, 1]
"""
METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr")


def epochs_of(results: Path) -> dict[str, list[tuple]]:
    out = {}
    for p in sorted((results / "runs").glob("*.json")):
        out[p.stem] = [tuple(e[k] for k in METRICS) for e in json.loads(p.read_text())["epochs"]]
    return out


def accuracy_columns(results: Path) -> list[dict]:
    keep = ("model", "parameters", "epochs", "seeds", "final_test_acc_mean", "final_test_acc_std", "best_test_acc_max", "final_test_loss_mean")
    rows = csv.DictReader(io.StringIO((results / "summary.csv").read_text()))
    return [{k: r[k] for k in keep} for r in rows]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = make_dataset(root / "data", n_train=2048, n_test=512)
    spec_path = write_spec(root / "resumable.yaml", SPEC)
    reference = root / "reference"
    run_spec(load_spec(spec_path), reference, data)
    return root, data, spec_path, reference / "resumable"


def test_a_cell_interrupted_mid_run_resumes_to_exactly_the_uninterrupted_metrics(setup, tmp_path):
    _, data, spec_path, reference = setup
    spec = load_spec(spec_path)

    def interrupt_after_first_epoch_of_second_cell(event):
        if event.kind == "epoch" and event.index == 2 and event.epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C: the run stops at the next batch

    with pytest.raises(Interrupted) as e:
        run_spec(spec, tmp_path, data, on_event=interrupt_after_first_epoch_of_second_cell)
    assert e.value.exit_code == 130
    out = tmp_path / "resumable"
    assert [p.stem for p in (out / "runs").glob("*.json")] == ["lenet5_seed-0"]  # the finished cell is saved
    assert (out / "checkpoints" / "lenet5_seed-1.pt").is_file()  # and the unfinished one's first epoch
    assert "| lenet5 " in (out / "summary.md").read_text()  # tables cover what finished

    events = []
    summary = run_spec(spec, tmp_path, data, on_event=events.append)
    resumed = [e for e in events if e.kind == "cell" and e.cell.id == "lenet5_seed-1"]
    assert resumed[0].epoch == 1 and summary.skipped == ["lenet5_seed-0"]
    assert epochs_of(out) == epochs_of(reference)
    assert not list((out / "checkpoints").glob("*.pt"))


def test_a_second_run_of_a_cell_in_the_same_folder_gets_a_clear_error(setup, tmp_path):
    _, data, spec_path, _ = setup
    (tmp_path / "resumable").mkdir()
    with cell_locks(tmp_path / "resumable", ["mlp-matched_seed-0"]):  # as another run holding that one cell
        with pytest.raises(MnistbenchError, match=r"another mnistbench run is writing to .* \(cell mlp-matched_seed-0\)"):
            run_spec(load_spec(spec_path), tmp_path, data)
    assert not (tmp_path / "resumable" / "runs").exists()  # refused before any cell ran


def _start(spec_path, results, data):
    return subprocess.Popen(
        [sys.executable, "-m", "mnistbench.cli", "run", str(spec_path), "--results-dir", str(results), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("condition never met")


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun_gives_the_uninterrupted_tables(setup, tmp_path):
    _, data, spec_path, reference = setup
    out = tmp_path / "resumable"
    kill_points = [
        ("during an epoch (first checkpoint written)", lambda: any((out / "checkpoints").glob("*.pt"))),
        ("between cells (a run file written)", lambda: len(list((out / "runs").glob("*.json"))) >= 2),
        ("while tables are written (last run file written)", lambda: len(list((out / "runs").glob("*.json"))) >= 4),
    ]
    for _, condition in kill_points:
        proc = _start(spec_path, tmp_path, data)
        if _wait_for(condition, proc):
            proc.kill()
        proc.wait()
        for p in out.rglob("*.json"):  # whatever was written is whole
            json.loads(p.read_text())
    final = _start(spec_path, tmp_path, data)
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    assert epochs_of(out) == epochs_of(reference)
    assert accuracy_columns(out) == accuracy_columns(reference)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_sigterm_stops_with_143_and_says_how_to_resume(setup, tmp_path):
    _, data, spec_path, _ = setup
    out = tmp_path / "resumable"
    proc = _start(spec_path, tmp_path, data)
    assert _wait_for(lambda: any((out / "checkpoints").glob("*.pt")), proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "Traceback" not in stderr and "Resume with: mnistbench run" in stderr


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_leaves_every_file_whole(setup, tmp_path):
    _, data, spec_path, _ = setup
    out = tmp_path / "resumable"
    proc = _start(spec_path, tmp_path, data)
    assert _wait_for(lambda: any((out / "checkpoints").glob("*.pt")), proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    for p in out.rglob("*.json"):  # a temporary file may be left; no file in place is partial
        json.loads(p.read_text())
    resumed = _start(spec_path, tmp_path, data)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
