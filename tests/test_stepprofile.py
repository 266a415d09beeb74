"""`mnistbench profile-step`: every phase of every configuration timed on real training steps, and one-line errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_dataset
from mnistbench.cli import app
from mnistbench.train.stepprofile import PHASES, VARIANTS
from cli_helpers import assert_one_line_error

runner = CliRunner()
FAST = ("--steps", "5", "--warmup", "1", "--device", "cpu")


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def reject_constant(name: str):
    raise ValueError(f"non-finite number {name} in strict JSON")


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """One --json run and one table run with --out, both on the tiny synthetic data (256 training samples)."""
    root = tmp_path_factory.mktemp("profile")
    data = make_dataset(root / "data")
    as_json = cli("profile-step", "--data-dir", data, *FAST, "--json")
    assert as_json.exit_code == 0, as_json.output
    as_table = cli("profile-step", "--data-dir", data, *FAST, "--out", root / "out")
    assert as_table.exit_code == 0, as_table.output
    return json.loads(as_json.stdout), as_table.stdout, root / "out"


def test_every_configuration_times_every_phase_with_finite_non_negative_microseconds(profiled):
    doc = profiled[0]
    assert (doc["model"], doc["batch_size"], doc["steps"], doc["warmup"], doc["device"]) == ("lenet5", 64, 5, 1, "cpu")
    assert doc["torch"] == torch.__version__ and doc["train_samples"] == 256 and doc["phases"] == list(PHASES)
    assert doc["environment"]["torch"] == torch.__version__ and "threads" in doc["environment"]
    configs = {c["name"]: c for c in doc["configurations"]}
    assert list(configs) == [v.name for v in VARIANTS]
    pinned = configs["pinned host buffers"]
    assert pinned["skipped"] == "n/a: no CUDA device" and "median_us" not in pinned
    measured = [c for c in configs.values() if c["skipped"] is None]
    assert len(measured) == len(VARIANTS) - 1
    for c in measured:
        for key in ("median_us", "mean_us", "share"):
            assert list(c[key]) == list(PHASES), (c["name"], key)
            assert all(math.isfinite(v) and v >= 0 for v in c[key].values()), (c["name"], key, c[key])
        assert c["median_us"]["forward"] > 0 and c["median_us"]["backward"] > 0 and c["median_us"]["step"] > 0
        # Each step's phases add up to its total, so their means add up to the mean step exactly. Medians need not (the
        # median of sums is not the sum of medians: with 5 steps on a busy machine they were 4.5x apart).
        assert sum(c["mean_us"].values()) == pytest.approx(c["step_mean_us"], rel=1e-9)
        assert math.isfinite(c["step_median_us"]) and c["step_median_us"] > 0
        assert sum(c["share"].values()) == pytest.approx(1.0)


def test_the_configurations_train_the_same_model_the_same_way(profiled):
    configs = {c["name"]: c for c in profiled[0]["configurations"]}
    base = configs["baseline"]
    assert (base["adam"], base["set_to_none"], base["batches"]) == ("for-loop", True, "tensor")
    # Zeroed gradients plus the new ones are the new ones: the same steps bit for bit.
    assert configs["zero_grad(set_to_none=False)"]["train_loss"] == base["train_loss"]
    # The batched update and the engine's flat one do the loop's arithmetic: the same steps bit for bit too.
    assert configs["foreach Adam"]["train_loss"] == configs["flat Adam (the engine's)"]["train_loss"] == base["train_loss"]
    for name in ("foreach Adam", "fused Adam"):  # the same update, up to rounding
        assert configs[name]["train_loss"] == pytest.approx(base["train_loss"], rel=1e-4), name
    assert math.isfinite(configs["DataLoader (torchvision)"]["train_loss"])


def test_a_model_with_dropout_trains_alike_although_the_configurations_take_turns(tiny_data):
    result = cli("profile-step", "--data-dir", tiny_data, "--model", "examples-net", "--steps", "2", "--warmup", "1",
                 "--batch-size", "8", "--device", "cpu", "--json")  # small batches: the masks, not the speed, matter here
    assert result.exit_code == 0, result.output
    configs = {c["name"]: c for c in json.loads(result.stdout)["configurations"]}
    # Each configuration keeps its own dropout masks: the same as if it had run alone after torch.manual_seed(0).
    assert configs["zero_grad(set_to_none=False)"]["train_loss"] == configs["baseline"]["train_loss"]


def test_out_writes_strict_json_and_a_summary_with_table_method_and_environment(profiled):
    doc, stdout, out = profiled
    saved = json.loads((out / "profile.json").read_text(), parse_constant=reject_constant)
    assert saved["model"] == "lenet5" and saved["environment"]["python"] == doc["environment"]["python"]
    assert [c["name"] for c in saved["configurations"]] == [v.name for v in VARIANTS]
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# Per-step overhead: lenet5, batch 64, cpu\n")
    assert "## How it was measured" in summary and "5 steps of batch 64" in summary and "1 untimed steps" in summary
    assert "## Environment" in summary and re.search(rf"^torch\s+{re.escape(torch.__version__)}$", summary, re.M)
    table = [line for line in summary.splitlines() if line.startswith("|")]
    assert table[0].startswith("| configuration") and "forward+loss" in table[0] and "vs baseline" in table[0]
    assert len(table) == 2 + len(VARIANTS) and table[2].startswith("| baseline") and "1.00x" in table[2]
    assert "\n".join(table) in stdout  # the same table on stdout
    assert f"wrote {out / 'profile.json'}" in stdout and f"wrote {out / 'summary.md'}" in stdout
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("args, words", [
    (("--batch-size", "0"), "--batch-size 0: expected a whole number of at least 1"),
    (("--model", "lenet6"), "unknown model 'lenet6' (known: lenet5,"),
    (("--steps", "0"), "--steps 0: expected a whole number of at least 1"),
    (("--warmup", "-1"), "--warmup -1: expected a whole number of at least 0"),
    (("--device", "tpu"), "--device tpu: expected one of cpu, cuda, auto"),
])
def test_a_bad_option_is_one_line_and_exit_2_before_any_data_is_read(args, words, tmp_path):
    result = cli("profile-step", "--data-dir", tmp_path / "missing", *args)
    assert_one_line_error(result, words)


def test_a_missing_data_folder_or_an_out_that_is_a_file_is_one_line_and_exit_2(tiny_data, tmp_path):
    assert_one_line_error(cli("profile-step", "--data-dir", tmp_path / "missing", *FAST), "no such folder")
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    assert_one_line_error(cli("profile-step", "--data-dir", tiny_data, *FAST, "--out", blocker), "not a folder")
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="only a machine without CUDA refuses --device cuda")
def test_device_cuda_without_a_gpu_is_one_line_and_exit_2(tiny_data):
    result = cli("profile-step", "--data-dir", tiny_data, "--steps", "5", "--device", "cuda")
    assert_one_line_error(result, "no CUDA GPU")


def test_only_the_cli_imports_stepprofile():
    package = Path(__file__).resolve().parent.parent / "mnistbench"
    importers = sorted(p.name for p in package.glob("*.py") if re.search(r"\bstepprofile\b", p.read_text()))
    assert importers == ["cli.py"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned host buffers need a CUDA device")
def test_on_cuda_the_pinned_path_is_measured_and_trains_like_the_device_tensor(tiny_data):
    result = cli("profile-step", "--data-dir", tiny_data, "--steps", "5", "--warmup", "1", "--device", "cuda", "--json")
    assert result.exit_code == 0, result.output
    configs = {c["name"]: c for c in json.loads(result.stdout)["configurations"]}
    pinned = configs["pinned host buffers"]
    assert pinned["skipped"] is None and pinned["batches"] == "pinned" and pinned["median_us"]["batch"] > 0
    assert pinned["train_loss"] == pytest.approx(configs["baseline"]["train_loss"], rel=1e-4)  # the same batches


NETS = '''\
from torch import nn


def build():
    """A linear read-out of the pixels."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
'''


def test_a_model_given_by_reference_is_profiled_like_a_built_in_one(tiny_data, tmp_path, monkeypatch):
    (tmp_path / "nets.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)  # a file reference is relative to the working folder
    result = cli("profile-step", "--data-dir", tiny_data, "--model", "./nets.py:build", *FAST, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"] == "./nets.py:build"
    measured = [c for c in doc["configurations"] if c["skipped"] is None]
    assert measured and all(c["median_us"]["forward"] > 0 and math.isfinite(c["train_loss"]) for c in measured)


def test_a_reference_that_cannot_be_built_is_one_line_and_exit_2_before_any_data_is_read(tmp_path, monkeypatch):
    (tmp_path / "nets.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(cli("profile-step", "--data-dir", tmp_path / "missing", "--model", "./nets.py:buld", *FAST),
                          "nets.py has no attribute 'buld' (did you mean build?)")
    assert_one_line_error(cli("profile-step", "--data-dir", tmp_path / "missing", "--model", "./gone.py:build", *FAST),
                          "file not found")
