"""The command line, end to end: a tiny spec's files and tables, and a clear answer to every bad input."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_SPEC, make_dataset, synthetic_digits, write_idx, write_spec
from mnistbench.cli import app
from mnistbench.report.build import write_report
from cli_helpers import assert_one_line_error

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results folder written by a real run of the tiny spec on synthetic data."""
    root = tmp_path_factory.mktemp("e2e")
    data = make_dataset(root / "data")
    spec = write_spec(root / "tiny.yaml", TINY_SPEC)
    result = cli("run", spec, "--results-dir", root / "results", "--data-dir", data)
    assert result.exit_code == 0, result.output
    return root, spec, data, result.output


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


@pytest.mark.figures  # sets up the module's finished run, whose figures later tests compare
def test_a_run_writes_one_file_per_cell_and_the_tables(finished):
    root, _, _, output = finished
    out = root / "results" / "tiny"
    runs = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert runs == ["lenet5_seed-0.json", "lenet5_seed-1.json", "mlp-matched_seed-0.json", "mlp-matched_seed-1.json"]
    record = json.loads((out / "runs" / "lenet5_seed-1.json").read_text())
    assert record["config"]["model"] == "lenet5" and record["config"]["seed"] == 1 and record["model"]["parameters"] == 44_426
    assert len(record["epochs"]) == 2 and set(record["epochs"][0]) >= {"train_loss", "test_accuracy", "train_samples_per_s"}
    assert {f["file"] for f in record["data"]["files"]} == {
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    env = record["environment"]
    for key in ("mnistbench", "git_commit", "python", "torch", "torch_cuda", "cpu", "gpu", "threads"):
        assert key in env
    assert env["threads"] == 1 and record["started"] <= record["finished"]
    assert str(root) not in json.dumps(record)  # file names, never absolute paths
    summary = (out / "summary.md").read_text()
    assert "| lenet5" in summary and "44,426" in summary and "NOT the official file" in summary
    csv_header = (out / "summary.csv").read_text().splitlines()[0]
    assert csv_header.startswith("model,parameters,epochs,seeds")
    assert "4 cells run (4 finished, 0 diverged, 0 failed), 0 skipped" in output


@pytest.mark.figures
def test_report_rebuilds_identical_tables_from_the_run_files_alone(finished, tmp_path):
    root = finished[0]
    out = root / "results" / "tiny"
    before = {n: (out / n).read_bytes() for n in ("summary.csv", "summary.md")}
    for n in before:
        (out / n).unlink()
    result = cli("report", out)
    assert result.exit_code == 0, result.output
    assert {n: (out / n).read_bytes() for n in before} == before


def test_running_again_skips_finished_cells_and_reruns_changed_ones(finished, tmp_path):
    root, spec, data, _ = finished
    results = tmp_path / "results"
    import shutil

    shutil.copytree(root / "results", results)
    again = cli("run", spec, "--results-dir", results, "--data-dir", data)
    assert again.exit_code == 0 and "0 cells run (0 finished, 0 diverged, 0 failed), 4 skipped" in again.output
    changed = write_spec(tmp_path / "tiny.yaml", TINY_SPEC.replace("seed: [0, 1]", "seed: [0, 1, 2]"))
    more = cli("run", changed, "--results-dir", results, "--data-dir", data)
    assert more.exit_code == 0 and "2 cells run (2 finished, 0 diverged, 0 failed), 4 skipped" in more.output
    forced = cli("run", spec, "--results-dir", results, "--data-dir", data, "--force")
    assert "4 cells run (4 finished, 0 diverged, 0 failed), 0 skipped" in forced.output


def test_dry_run_prints_the_cells_and_writes_nothing(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC)
    result = cli("run", spec, "--dry-run", "--results-dir", tmp_path / "results")
    assert result.exit_code == 0 and "4 cells" in result.output and "mlp-matched_seed-1" in result.output
    assert not (tmp_path / "results").exists()


def test_validate_and_models_and_data(tiny_data):
    assert "ok, spec 'cpu', 9 cells" in cli("validate", "bench/cpu.yaml").output
    models = cli("models", "--detail").output
    assert "44,426" in models and "469,160" in models and "30,840" in models
    data = cli("data", "--data-dir", tiny_data, "--no-download")
    assert data.exit_code == 0 and "256 training and 128 test samples" in data.output


# --------------------------------------------------------------------------- bad input


def corrupt(name: str, transform):
    def apply(data: Path):
        path = data / name
        path.write_bytes(gzip.compress(transform(gzip.decompress(path.read_bytes()))))
    return apply


def rewrite(name: str, array):
    return lambda data: write_idx(data / name, array)


SPEC_CASES = {  # case: (text in TINY_SPEC, replacement, words the error must say)
    "unknown key": ("epochs: 2", "epoch: 2", "epoch: unknown key"),
    "wrong type": ("epochs: 2", "epochs: two", "epochs: Input should be a valid integer"),
    "unknown model": ("[lenet5, mlp-matched]", "[lenet5, vgg]", "unknown model 'vgg' (known: lenet5, custom-mlp, mlp-matched"),
    "unknown dataset": ("dataset: mnist", "dataset: cifar", "unknown dataset 'cifar'"),
    "unknown optimizer": ("optimizer: adam", "optimizer: rmsprop", "optimizer: Input should be 'sgd', 'adam', 'adamw', 'adadelta' or 'muon'"),
    "unknown schedule": ("schedule: onecycle", "schedule: exp", "schedule: Input should be 'none', 'step', 'cosine' or 'onecycle'"),
    "epochs out of range": ("epochs: 2", "epochs: 0", "epochs: Input should be greater than 0"),
    "batch size out of range": ("batch_size: 32", "batch_size: 0", "batch_size: Input should be greater than 0"),
    "lr out of range": ("lr: 3.0e-3", "lr: -1.0", "lr: Input should be greater than 0"),
    "seed out of range": ("seed: [0, 1]", "seed: [0, -3]", "matrix.seed: Input should be greater than or equal to 0"),
    "empty matrix": ("seed: [0, 1]", "seed: []", "matrix.seed: empty list"),
    "yaml syntax": ("seed: [0, 1]", "seed: [0, 1", "YAML syntax error at line"),
    "cuda without gpu": ("device: cpu", "device: cuda", "device 'cuda' asked for, but PyTorch sees no CUDA GPU"),
}
DATA_CASES = {
    "truncated idx": (corrupt("t10k-images-idx3-ubyte.gz", lambda b: b[:-100]), "t10k-images-idx3-ubyte.gz: truncated"),
    "wrong magic": (corrupt("train-labels-idx1-ubyte.gz", lambda b: b"\x00\x00\x0d\x01" + b[4:]), "wrong magic number"),
    "wrong dimensions": (rewrite("train-images-idx3-ubyte", synthetic_digits(256, 0)[0][:, :, :27]), "wrong dimensions"),
    "labels outside 0-9": (rewrite("t10k-labels-idx1-ubyte", np.full(128, 10, np.uint8)), "label 10 outside 0-9"),
    "data folder missing": (lambda data: [p.unlink() for p in data.iterdir()], "not found in"),
}


@pytest.mark.parametrize("case", list(SPEC_CASES) + list(DATA_CASES) + ["spec missing", "spec is a folder", "spec not utf-8", "results not writable"])
def test_bad_input_is_one_line_exit_2_and_leaves_earlier_results_untouched(case, finished, tmp_path, monkeypatch):
    root = finished[0]
    results = root / "results"
    before = snapshot(results)
    data = make_dataset(tmp_path / "data")
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC)
    results_dir = results
    if case in SPEC_CASES:
        old, new, words = SPEC_CASES[case]
        write_spec(spec, TINY_SPEC.replace(old, new))
        if case == "cuda without gpu":
            monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    elif case in DATA_CASES:
        damage, words = DATA_CASES[case]
        damage(data)
    elif case == "spec missing":
        spec, words = tmp_path / "nope.yaml", "spec file not found"
    elif case == "spec is a folder":
        spec, words = tmp_path, "is a folder"
    elif case == "spec not utf-8":
        spec.write_bytes(b"model: \xff\xfe\n")
        words = "cannot read spec"
    else:
        results_dir = tmp_path / "a-file"
        results_dir.write_text("not a folder")
        words = "not writable"
    result = cli("run", spec, "--results-dir", results_dir, "--data-dir", data, "--no-download")
    assert_one_line_error(result, words)
    assert snapshot(results) == before


def test_a_bad_spec_fails_the_same_way_from_a_real_shell(tmp_path):
    spec = write_spec(tmp_path / "bad.yaml", "epochs: 1\nmatrix:\n  model: [lenet6]\n")
    proc = subprocess.run([sys.executable, "-m", "mnistbench.cli", "validate", str(spec)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and "unknown model 'lenet6'" in proc.stderr


def test_help_and_validate_do_not_import_torch():
    # Keeps `mnistbench --help` and `mnistbench validate` instant: torch loads only where a command needs it.
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mnistbench.cli import app\n"
        "r = CliRunner().invoke(app, ['validate', 'bench/cpu.yaml'])\n"
        "assert r.exit_code == 0, r.output\n"
        "CliRunner().invoke(app, ['--help'])\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert proc.stdout.strip() == "False", proc.stderr


def test_the_old_engine_option_still_picks_the_executor_with_a_one_line_warning():
    result = CliRunner().invoke(app, ["run", "bench/smoke.yaml", "--dry-run", "--engine", "sequential"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "mnistbench: warning: --engine is deprecated: use --executor (the engine is the training loop)"
    assert "--engine" not in CliRunner().invoke(app, ["run", "--help"]).output


@pytest.mark.parametrize("args, words", [
    (["export", "x", "--to", "nope"], "Invalid value for '--to': 'nope' is not one of 'tensorboard', 'mlflow'."),
    (["run", "x", "--executor", "dask"], "Invalid value for '--executor': 'dask' is not one of 'sequential', 'ray'."),
    (["run", "x", "--max-retries", "-1"], "Invalid value for '--max-retries'"),
    (["run", "x", "--bogus"], "No such option: --bogus"),
    (["nope"], "No such command 'nope'"),
])
def test_a_bad_choice_or_option_is_one_line_exit_2(args, words):
    assert_one_line_error(CliRunner().invoke(app, args), words)
