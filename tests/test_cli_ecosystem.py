"""The command line's fit with other tools: --version, python -m, completion, env, and --json on models and data."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mnistbench import __version__
from mnistbench.cli import app
from mnistbench.environment import git_commit

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def python_m(*args, env=None):
    """``python -m mnistbench ARGS`` in a real process, so stdout holds exactly what the command printed."""
    return subprocess.run([sys.executable, "-m", "mnistbench", *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def test_version_prints_the_version_and_the_commit():
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"mnistbench {__version__} (commit {git_commit() or 'unknown'})\n"
    assert re.fullmatch(r"mnistbench 0\.1\.0 \(commit ([0-9a-f]{12}(\+dirty)?|unknown)\)\n", result.stdout)


def test_python_m_mnistbench_is_the_same_command():
    proc = python_m("--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: mnistbench [OPTIONS] COMMAND [ARGS]..." in proc.stdout
    for command in ("models", "validate", "run", "report", "data", "env", "export"):
        assert re.search(rf"│ {command} ", proc.stdout), command
    version = python_m("--version")
    assert version.returncode == 0 and version.stdout == cli("--version").stdout and version.stderr == ""


def test_version_and_help_do_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mnistbench.cli import app\n"
        "assert CliRunner().invoke(app, ['--version']).exit_code == 0\n"
        "assert CliRunner().invoke(app, ['export', '--help']).exit_code == 0\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "False", proc.stderr


def test_shell_completion_completes_commands_and_choices():
    # What bash asks the program when the user presses TAB after `mnistbench e` and after `--to `.
    commands = python_m(env={"_MNISTBENCH_COMPLETE": "complete_bash", "COMP_WORDS": "mnistbench e", "COMP_CWORD": "1"})
    assert commands.returncode == 0 and commands.stdout.split() == ["env", "export"]
    formats = python_m(env={"_MNISTBENCH_COMPLETE": "complete_bash", "COMP_WORDS": "mnistbench export r --to ", "COMP_CWORD": "4"})
    assert formats.stdout.split() == ["tensorboard", "mlflow"]
    # `--show-completion` detects the shell from the parent process (make runs recipes with /bin/sh), so the
    # bash script is asked for the way bash's own hook asks for it.
    shown = python_m(env={"_MNISTBENCH_COMPLETE": "source_bash"})
    assert "complete -o default -F _mnistbench_completion mnistbench" in shown.stdout, shown.stderr


def test_env_json_is_one_document_with_the_run_record_keys():
    proc = python_m("env", "--json")
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)  # the whole of stdout parses: nothing else was printed there
    assert env["mnistbench"] == __version__ and env["git_commit"] == git_commit()
    for key, kind in {"python": str, "torch": str, "os": str, "machine": str, "cpu": str, "cpu_count": int, "threads": int,
                      "host": str, "python_implementation": str, "packages": dict, "os_details": dict,
                      "cpu_capability": str, "interop_threads": int, "determinism": dict}.items():
        assert isinstance(env[key], kind), key
    for key in ("torch_cuda", "cudnn", "gpu", "container", "cpu_flags", "onednn", "mkl"):
        assert key in env
    assert set(env["packages"]) == {"torch", "torchvision", "numpy", "typer", "rich", "pyyaml", "pydantic", "tabulate",
                                    "matplotlib", "scipy", "filelock"}
    import torch

    assert env["packages"]["torch"] == torch.__version__.split("+")[0]
    assert set(env["determinism"]) == {"deterministic_algorithms", "float32_matmul_precision", "cudnn_deterministic",
                                       "cudnn_benchmark", "cuda_matmul_allow_tf32", "cudnn_allow_tf32"}


def test_env_text_names_every_group():
    result = cli("env")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"mnistbench             {__version__}"
    for group in ("packages", "os_details", "determinism"):
        assert group in lines
    assert any(re.fullmatch(r"  torch +\S+", line) for line in lines)


def test_models_json_lists_the_registry_with_exact_parameter_counts():
    result = cli("models", "--json")
    assert result.exit_code == 0
    models = json.loads(result.stdout)["models"]
    assert [(m["name"], m["parameters"]) for m in models] == [("lenet5", 44_426), ("custom-mlp", 469_160), ("mlp-matched", 44_350),
                                                                ("examples-net", 1_199_882)]
    assert all(isinstance(m["forward_flops"], int) and m["forward_flops"] > 0 and m["description"] for m in models)
    assert "layers" not in models[0]
    detailed = json.loads(cli("models", "--json", "--detail").stdout)["models"]
    for m in detailed:
        assert sum(l["parameters"] for l in m["layers"]) == m["parameters"]
        assert all(l["weights"] + l["biases"] == l["parameters"] for l in m["layers"])
    assert detailed[2]["layers"] == [  # mlp-matched: 784-54-30-10
        {"layer": "fc1", "kind": "Linear", "weights": 784 * 54, "biases": 54, "parameters": 42_390},
        {"layer": "fc2", "kind": "Linear", "weights": 54 * 30, "biases": 30, "parameters": 1_650},
        {"layer": "fc3", "kind": "Linear", "weights": 30 * 10, "biases": 10, "parameters": 310},
    ]


def test_data_json_describes_the_files(tiny_data):
    result = cli("data", "--data-dir", tiny_data, "--no-download", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {k: doc[k] for k in ("dataset", "title", "folder", "train_samples", "test_samples", "official")} == {
        "dataset": "mnist", "title": "MNIST", "folder": str(tiny_data), "train_samples": 256, "test_samples": 128, "official": False}
    assert [f["role"] for f in doc["files"]] == ["train-images", "train-labels", "test-images", "test-labels"]
    for f in doc["files"]:
        blob = (tiny_data / f["file"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(blob).hexdigest() and f["md5"] == hashlib.md5(blob).hexdigest()
        assert f["official"] is False  # synthetic files are not the official ones


def test_data_json_error_is_one_line_on_stderr_and_nothing_on_stdout(tmp_path):
    proc = python_m("data", "--data-dir", tmp_path, "--no-download", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("mnistbench: error: MNIST file train-images-idx3-ubyte(.gz) not found")
