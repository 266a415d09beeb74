"""`--json` on `run` and `validate`: one JSON document on stdout and nothing else; progress and messages on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_SPEC, make_dataset, write_spec
from records_factory import make_record

from mnistbench.run.runner import describe_run
from mnistbench.run.runner import RunSummary

ROOT = Path(__file__).resolve().parent.parent


def python_m(*args, cwd=ROOT):
    """A real process, so stdout holds exactly what the command printed (progress lines included, if any)."""
    return subprocess.run([sys.executable, "-m", "mnistbench", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_validate_json_is_one_document_with_each_spec():
    proc = python_m("validate", "bench/cpu.yaml", "bench/options-cpu.yaml", "--json")
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout) == {"specs": [
        {"path": "bench/cpu.yaml", "spec": "cpu", "cells": 9, "axes": ["model", "seed"]},
        {"path": "bench/options-cpu.yaml", "spec": "options-cpu", "cells": 42,
         "axes": ["model", "seed", "channels_last", "compile", "precision", "threads", "batch_size"]},
    ]}


def test_validate_json_with_a_bad_spec_prints_nothing_on_stdout(tmp_path):
    bad = write_spec(tmp_path / "bad.yaml", "epochs: 1\nmatrix:\n  model: [lenet6]\n")
    proc = python_m("validate", "bench/cpu.yaml", bad, "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "unknown model 'lenet6'" in proc.stderr and "Traceback" not in proc.stderr


def test_dry_run_json_lists_every_cell_with_its_configuration(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC)
    proc = python_m("run", spec, "--dry-run", "--json", "--results-dir", tmp_path / "results")
    assert proc.returncode == 0 and proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert doc["spec"] == "tiny"
    assert [c["id"] for c in doc["cells"]] == ["lenet5_seed-0", "lenet5_seed-1", "mlp-matched_seed-0", "mlp-matched_seed-1"]
    config = doc["cells"][1]["config"]
    assert {k: config[k] for k in ("model", "seed", "device", "epochs", "batch_size", "lr", "threads")} == {
        "model": "lenet5", "seed": 1, "device": "cpu", "epochs": 2, "batch_size": 32, "lr": 3.0e-3, "threads": 1}
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_run_json_puts_the_summary_on_stdout_and_the_progress_on_stderr(tmp_path):
    data = make_dataset(tmp_path / "data")
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC.replace("seed: [0, 1]", "seed: [0]"))
    proc = python_m("run", spec, "--json", "--results-dir", tmp_path / "results", "--data-dir", data, "--no-download")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the whole of stdout is the one document
    assert doc["results_dir"] == str(tmp_path / "results" / "tiny")
    assert (doc["ran"], doc["finished"], doc["diverged"], doc["failed"], doc["skipped"]) == (
        2, ["lenet5_seed-0", "mlp-matched_seed-0"], [], [], [])
    assert [(c["cell"], c["status"], c["epochs"]) for c in doc["cells"]] == [("lenet5_seed-0", "finished", 2),
                                                                            ("mlp-matched_seed-0", "finished", 2)]
    saved = json.loads((tmp_path / "results" / "tiny" / "runs" / "lenet5_seed-0.json").read_text())
    assert doc["cells"][0]["final_test_accuracy"] == saved["epochs"][-1]["test_accuracy"]
    assert doc["wall_seconds"] > 0 and 0 < doc["measured_seconds"] <= doc["wall_seconds"]
    assert "running 2 cells -> " in proc.stderr and "[2/2] mlp-matched_seed-0 epoch 2/2:" in proc.stderr


def test_run_summary_of_a_diverged_cell_is_strict_json():
    diverged = make_record("lenet5", 0, status="diverged")
    summary = RunSummary(Path("results/demo"), ran=[make_record("custom-mlp", 0), diverged], skipped=["mlp-matched_seed-0"],
                         wall_seconds=3.5)
    doc = json.loads(json.dumps(describe_run(summary), allow_nan=False))
    assert (doc["finished"], doc["diverged"], doc["skipped"]) == (["custom-mlp_seed-0"], ["lenet5_seed-0"], ["mlp-matched_seed-0"])
    assert doc["cells"][1] == {"cell": "lenet5_seed-0", "status": "diverged", "note": diverged.note, "epochs": 5,
                               "final_test_accuracy": diverged.final.test_accuracy, "final_test_loss": None}
