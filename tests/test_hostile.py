"""Untrusted input never crashes, hangs or escapes (issue 10): each case a new user hit, as a regression test.

Every bad spec, run file, checkpoint or data file ends in one line (``mnistbench: error: ...``,
exit 2) in bounded time and memory, and leaves earlier results as they were.
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import figures_drawn, make_dataset, write_spec
from mnistbench.run.checkpoint import save_checkpoint
from mnistbench.cli import app
from mnistbench.data.datasets import read_idx
from mnistbench.train.engine import run_cell
from mnistbench.errors import MnistbenchError
from mnistbench.run.preflight import estimate_bytes
from mnistbench.report.build import REPORT_FILES, write_report
from mnistbench.run.runner import plan_run, results_folder, run_spec
from mnistbench.spec.safeyaml import MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES
from mnistbench.spec.schema import MAX_CELLS, load_spec, parse_spec

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, words: str = "") -> str:
    """The single stderr/stdout line of a failed command: exit 2, ``mnistbench: error:``, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mnistbench: error: "), result.output[:2000]
    assert words in lines[0], lines[0]
    return lines[0]


def spec_error(tmp_path: Path, text: str, name: str = "s.yaml", max_seconds: float = 5.0, max_mib: float = 64) -> str:
    """Load a spec that must fail; return its message after checking it is one short line, found fast and lean."""
    path = write_spec(tmp_path / name, text)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(MnistbenchError) as e:
            load_spec(path)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - started < max_seconds
    assert peak < max_mib * 2**20, f"peak {peak / 2**20:.0f} MiB"
    message = str(e.value)
    assert "\n" not in message and len(message) < 400, message[:1000]
    return message


def laughs(levels: int, fanout: int, where: str = "model") -> str:
    """A "billion laughs" spec: each anchor repeats the previous one ``fanout`` times."""
    lines = [f"{where}:", "  - &a0 [" + ", ".join(["lol"] * fanout) + "]"]
    for i in range(1, levels):
        lines.append(f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- YAML that expands or nests


@pytest.mark.parametrize("levels, fanout", [(8, 9), (6, 9), (12, 12)])
def test_aliases_that_expand_exponentially_stop_at_the_node_limit_in_one_short_line(tmp_path, levels, fanout):
    message = spec_error(tmp_path, laughs(levels, fanout))
    assert f"aliases expand to more than {MAX_NODES} values" in message and "model[" in message


def test_an_alias_bomb_under_the_matrix_is_refused_the_same_way(tmp_path):
    text = laughs(8, 9, where="anchors").replace("anchors:", "matrix:\n  seed:").replace("\n  - ", "\n    - ")
    assert "aliases expand to more than" in spec_error(tmp_path, "model: lenet5\n" + text)


def test_aliases_within_the_limit_still_work(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.yaml", "model: lenet5\nmatrix:\n  seed: &s [0, 1]\nvariants:\n  - &v {lr: 0.1}\n"
                                                     "  - {<<: *v, epochs: 2}\n"))
    assert [c.config.epochs for c in spec.cells()] == [10, 2, 10, 2] and spec.cells()[1].config.lr == 0.1


def test_a_list_nested_3000_deep_is_one_line_naming_the_key_not_a_recursion_error(tmp_path):
    message = spec_error(tmp_path, "model: lenet5\nmatrix:\n  seed: " + "[" * 3000 + "]" * 3000 + "\n")
    assert message.startswith(f"{tmp_path / 's.yaml'}: matrix.seed[0][0]")
    assert f"nested deeper than {MAX_DEPTH} levels" in message


def test_nesting_through_aliases_counts_too(tmp_path):
    deep = "[" * 30 + "]" * 30
    message = spec_error(tmp_path, f"model: lenet5\nmatrix:\n  seed: [&d {deep}, [[[[[[[[[[[[[[[[[[[[[[*d]]]]]]]]]]]]]]]]]]]]]]]\n")
    assert f"aliases nest deeper than {MAX_DEPTH} levels" in message


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    assert "an alias refers to a value that contains it" in spec_error(tmp_path, "model: &m [lenet5, *m]\n")


def test_a_spec_file_over_1_mib_is_refused_without_reading_it_all(tmp_path):
    message = spec_error(tmp_path, "model: lenet5\ndescription: '" + "x" * MAX_SPEC_BYTES + "'\n")
    assert f"larger than {MAX_SPEC_BYTES} bytes" in message


def test_an_endless_spec_file_is_refused_in_bounded_time():
    with pytest.raises(MnistbenchError, match="larger than"):
        load_spec("/dev/zero")


@pytest.mark.parametrize(
    "text, words",
    [
        ("model: lenet5\nseed: " + "9" * 5000 + "\n", "a value YAML cannot read: Exceeds the limit"),
        ("model: lenet5\nseed: 2001-13-45\n", "a value YAML cannot read: month must be in 1..12"),
        ("model: !!python/object/apply:os.system [ls]\n", "YAML syntax error at line 1, column 8: could not determine a constructor"),
        # found by tests/test_fuzz.py
        ("\x1fmodel: lenet5\n", "YAML syntax error: unacceptable character #x001f: special characters are not allowed"),
        ("model: lenet5\nseed: !!timestamp \n", "a value YAML cannot read: 'NoneType' object has no attribute 'groupdict'"),
    ],
    ids=["5000-digit integer", "impossible date", "python object tag", "control character", "empty timestamp"],
)
def test_values_yaml_itself_cannot_build_are_one_line(tmp_path, text, words):
    assert words in spec_error(tmp_path, text)


# --------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    "text, key, lines",
    [
        ("model: lenet5\nepochs: 1\nepochs: 2\n", "epochs", (2, 3)),
        ("model: lenet5\nmatrix:\n  seed: [0, 1]\n  seed: [2]\n", "matrix.seed", (3, 4)),
        ("model: lenet5\nvariants:\n  - {lr: 0.1, 'lr': 0.2}\n", "variants[0].lr", (3, 3)),
    ],
)
def test_a_key_given_twice_is_an_error_naming_its_path_and_lines(tmp_path, text, key, lines):
    message = spec_error(tmp_path, text)
    assert f"s.yaml: {key}: duplicate key (lines {lines[0]} and {lines[1]})" in message


def test_a_duplicate_key_no_longer_replaces_an_earlier_run_file(tmp_path):
    """It used to load with the last value winning; a run then rewrote the earlier run file under the same name."""
    spec = write_spec(tmp_path / "s.yaml", "name: dup\nmodel: lenet5\ndevice: cpu\nepochs: 1\nepochs: 2\n")
    results = tmp_path / "results"
    one_line_error(cli("run", spec, "--results-dir", results, "--no-download"), "epochs: duplicate key")
    assert not results.exists()


# --------------------------------------------------------------------------- values quoted briefly


def test_a_huge_wrong_value_is_quoted_in_at_most_about_100_characters():
    message = str(pytest.raises(MnistbenchError, parse_spec, {"model": "lenet5", "epochs": "x" * 100_000}, "t").value)
    assert message.startswith("t: epochs: Input should be a valid integer, got 'xxx") and len(message) < 200


def test_a_huge_unknown_model_name_is_quoted_briefly(tmp_path):
    message = spec_error(tmp_path, "model: " + "m" * 50_000 + "\n")
    assert "model: unknown model 'mmm" in message and "(known: lenet5" in message


@pytest.mark.parametrize("model", ["./" + "x" * 3000 + ".py:build", "x." * 1500 + "y:build"], ids=["file", "module"])
def test_a_huge_model_reference_that_fails_to_load_is_one_short_line(tmp_path, model):
    spec = write_spec(tmp_path / "s.yaml", f"model: {model}\ndevice: cpu\n")
    line = one_line_error(cli("run", spec, "--results-dir", tmp_path / "r", "--no-download"), "mnistbench: error: model '")
    assert len(line) < 500


def test_a_huge_unknown_key_is_quoted_briefly():
    message = str(pytest.raises(MnistbenchError, parse_spec, {"model": "lenet5", "k" * 10_000: 1}, "t").value)
    assert message.startswith("t: 'kkk") and "unknown key" in message and len(message) < 600


@pytest.mark.parametrize("setting", ["weight_decay", "lr", "momentum", "gamma", "target_accuracy"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused_in_every_float_setting(tmp_path, setting, value):
    message = spec_error(tmp_path, f"model: lenet5\n{setting}: {value}\n")
    assert message.startswith(f"{tmp_path / 's.yaml'}: {setting}: ")


def test_a_matrix_axis_with_a_5000_digit_integer_is_one_line_not_a_repr_error():
    """Found by tests/test_fuzz.py: the repeated-value check repr()ed every value, which Python refuses past 4,300 digits."""
    message = str(pytest.raises(MnistbenchError, parse_spec, {"model": "lenet5", "matrix": {"seed": [10**5000, 1]}}, "t").value)
    assert message.startswith("t: matrix.seed: Input should be less than 4294967296, got <an integer of 16610 bits>")


def test_a_matrix_that_would_expand_past_the_cell_limit_is_refused_before_expanding():
    matrix = {"model": ["lenet5"], **{k: list(range(1, 11)) for k in ("seed", "epochs", "batch_size", "eval_batch_size", "step_size")}}
    started = time.perf_counter()
    message = str(pytest.raises(MnistbenchError, parse_spec, {"matrix": matrix}, "t").value)
    assert time.perf_counter() - started < 1
    assert message == f"t: matrix: 1 x 10 x 10 x 10 x 10 x 10 x 1 variants is more than {MAX_CELLS} cells (the limit for a spec)"


# --------------------------------------------------------------------------- runs on tiny data

SPEC = """\
name: hostile
device: cpu
epochs: 2
batch_size: 64
eval_batch_size: 128
lr: 3.0e-3
threads: 1
matrix:
  model: [mlp-matched]
  seed: [0]
"""
TWO_SEEDS = SPEC.replace("seed: [0]", "seed: [0, 1]")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("hostile") / "data", n_train=256, n_test=128)


def _run_once(spec_text: str, data: Path, root: Path) -> Path:
    """``spec_text`` run once, uninterrupted, through the CLI, figures drawn (later tests compare them); its folder."""
    with figures_drawn():
        result = cli("run", write_spec(root / "hostile.yaml", spec_text), "--results-dir", root / "results", "--data-dir", data)
    assert result.exit_code == 0, result.output
    return root / "results" / "hostile"


@pytest.fixture(scope="module")
def clean(data, tmp_path_factory) -> Path:
    """A finished results folder of SPEC (one cell), the "earlier results" the cases below must leave alone."""
    return _run_once(SPEC, data, tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="module")
def clean_two(data, tmp_path_factory) -> Path:
    """The reference for re-runs: TWO_SEEDS run once, uninterrupted."""
    return _run_once(TWO_SEEDS, data, tmp_path_factory.mktemp("clean-two"))


def test_the_shared_finished_runs_have_their_figures_whichever_test_sets_them_up_first(clean, clean_two):
    # Not marked `figures`: the first user of `clean` differs between `make test` and `make test-slow`, and the
    # signal cases compare `clean` with a run in a subprocess, which draws (CI's test-slow failed on that once).
    for folder in (clean, clean_two):
        assert (folder / "final_error.png").exists() and "## Figures" in (folder / "summary.md").read_text()


def snapshot(folder: Path) -> dict[str, bytes]:
    # Lock files (empty, in .locks/) are not results: a run may leave them behind.
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock" and p.parent.name != ".locks"}


def copy_of(folder: Path, tmp_path: Path) -> Path:
    """A copy of a results folder as ``<tmp>/results/hostile``; returns the results root."""
    shutil.copytree(folder, tmp_path / "results" / folder.name)
    return tmp_path / "results"


def metrics(folder: Path) -> dict[str, list]:
    keep = ("train_loss", "test_loss", "test_accuracy", "lr")
    return {p.stem: [[e[k] for k in keep] for e in json.loads(p.read_text())["epochs"]] for p in sorted((folder / "runs").glob("*.json"))}


def accuracy_table(folder: Path) -> list[dict]:
    keep = ("model", "seeds", "final_test_acc_mean", "final_test_acc_std", "final_test_loss_mean")
    return [{k: r[k] for k in keep} for r in csv.DictReader(io.StringIO((folder / "summary.csv").read_text()))]


def planned_no_epoch(spec_text: str, root: Path, data: Path, **kw) -> MnistbenchError:
    """Run a spec that must be refused before its first epoch; return the error."""
    events = []
    with pytest.raises(MnistbenchError) as e:
        run_spec(parse_spec(yaml.safe_load(spec_text), "hostile"), root, data, on_event=events.append, **kw)
    assert not [ev for ev in events if ev.kind == "epoch"], "trained before refusing"
    assert "\n" not in str(e.value)
    return e.value


# --------------------------------------------------------------------------- names that are paths


@pytest.mark.parametrize("name_line, file_name", [("name: ..\n", "s.yaml"), ("name: .\n", "s.yaml"), ("", "..yaml"), ("name: a/b\n", "s.yaml")])
def test_a_spec_name_that_is_not_one_plain_path_segment_is_refused(tmp_path, data, name_line, file_name):
    spec = write_spec(tmp_path / file_name, name_line + SPEC.replace("name: hostile\n", ""))
    root = tmp_path / "sub" / "results"
    one_line_error(cli("run", spec, "--results-dir", root, "--data-dir", data), "name: must be 1-100 letters")
    assert not (tmp_path / "sub").exists()


def test_a_results_folder_that_is_a_link_out_of_the_root_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "hostile").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(MnistbenchError, match="not a plain folder name inside"):
        results_folder(tmp_path / "root", "hostile")


# --------------------------------------------------------------------------- malformed run files

BAD_RUN_FILES = {  # case: the good run file's dict -> the text of a bad one
    "a list": lambda r: "[]",
    "null": lambda r: "null",
    "no config.model": lambda r: json.dumps({**r, "config": {k: v for k, v in r["config"].items() if k != "model"}}),
    "empty epochs": lambda r: json.dumps({**r, "epochs": []}),
    "accuracy as a string": lambda r: json.dumps({**r, "epochs": [{**r["epochs"][0], "test_accuracy": "0.99"}] + r["epochs"][1:]}),
    "more epochs than configured": lambda r: json.dumps({**r, "epochs": r["epochs"] + [{**r["epochs"][-1], "epoch": 3}]}),
    "a bad non_finite path": lambda r: json.dumps({**r, "non_finite": {"epochs[9].x.y": "nan"}}),
    "nested 100,000 deep": lambda r: "[" * 100_000 + "]" * 100_000,
    # found by tests/test_fuzz.py: each passed the loader and then broke the tables with a TypeError or AttributeError
    "data.identity a list": lambda r: json.dumps({**r, "data": {**r["data"], "identity": []}}),
    "data.identity null": lambda r: json.dumps({**r, "data": {**r["data"], "identity": None}}),
    "a data file's official flag a list": lambda r: json.dumps({**r, "data": {**r["data"], "files": [
        {**r["data"]["files"][0], "official": []}] + r["data"]["files"][1:]}}),
    "config.target_accuracy a list": lambda r: json.dumps({**r, "config": {**r["config"], "target_accuracy": []}}),
    "environment.gpu a bool": lambda r: json.dumps({**r, "environment": {**r["environment"], "gpu": True}}),
    # the same kind, found by reading what the tables and figures use
    "environment.container a bool": lambda r: json.dumps({**r, "environment": {**r["environment"], "container": True}}),
    "extra.roofline without its numbers": lambda r: json.dumps({**r, "extra": {**r["extra"], "roofline": {}}}),
}


def _write_bad_run_file(folder: Path, case: str) -> Path:
    good = json.loads(next((folder / "runs").glob("*.json")).read_text())
    path = folder / "runs" / "stray.json"
    path.write_text(BAD_RUN_FILES[case](good))
    return path


@pytest.mark.parametrize("case", list(BAD_RUN_FILES))
def test_report_names_a_malformed_run_file_in_one_line_and_keeps_the_old_tables(clean, tmp_path, case):
    folder = copy_of(clean, tmp_path) / "hostile"
    before = snapshot(folder)
    _write_bad_run_file(folder, case)
    line = one_line_error(cli("report", folder), "stray.json: not a valid run file")
    assert len(line) < 400
    assert {k: v for k, v in snapshot(folder).items() if k != "runs/stray.json"} == before


@pytest.mark.parametrize("where", ["a folder", "not utf-8"])
def test_an_unreadable_run_file_is_named_too(clean, tmp_path, where):
    folder = copy_of(clean, tmp_path) / "hostile"
    if where == "a folder":
        (folder / "runs" / "stray.json").mkdir()
    else:
        (folder / "runs" / "stray.json").write_bytes(b"{\xff\xfe}")
    one_line_error(cli("report", folder), "stray.json: not a readable run file")


# --------------------------------------------------------------------------- found before the first epoch, not after the last


def test_a_corrupt_run_file_stops_a_forced_run_before_training(clean, tmp_path, data):
    """--force skipped reading the folder, so a stray corrupt file stopped the report only after every cell trained."""
    root = copy_of(clean, tmp_path)
    _write_bad_run_file(root / "hostile", "a list")
    error = planned_no_epoch(SPEC, root, data, force=True)
    assert "stray.json: not a valid run file" in str(error) and "move it out of" in str(error)


@pytest.mark.parametrize("what", ["runs", "checkpoints", "summary.csv", "learning_curves.png", "manifest.json", ".locks"])
def test_a_results_folder_with_something_in_the_way_is_refused_before_training(tmp_path, data, what):
    folder = tmp_path / "hostile"
    folder.mkdir()
    if what in ("runs", "checkpoints", ".locks"):
        (folder / what).write_text("a file where a folder belongs")
    else:
        (folder / what).mkdir()
    error = planned_no_epoch(SPEC, tmp_path, data)
    assert str(folder / what) in str(error)


def test_a_cell_id_longer_than_the_file_system_allows_is_refused_before_training(tmp_path, data, monkeypatch):
    real = os.pathconf
    monkeypatch.setattr(os, "pathconf", lambda p, name: 30 if name == "PC_NAME_MAX" else real(p, name))
    error = planned_no_epoch(SPEC, tmp_path, data)
    assert "cell mlp-matched_seed-0" in str(error) and "names of 46 bytes, more than the 30" in str(error)


def test_a_results_path_too_long_for_the_system_is_refused_before_training(tmp_path, data):
    """A deep --results-dir: the run file's temporary path passed PATH_MAX only when it was written, after training."""
    root = tmp_path
    while len(str(root)) < 4096 - 60:
        root = root / ("d" * min(200, 4096 - 60 - len(str(root))))
    root.mkdir(parents=True)
    error = planned_no_epoch(SPEC, root, data)
    assert "use a shorter --results-dir" in str(error)


def test_too_little_free_space_for_the_run_is_refused_before_training(tmp_path, data, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    error = planned_no_epoch(SPEC, tmp_path, data)
    assert "1.0 MiB free, but this run writes up to about" in str(error)


def test_the_space_estimate_counts_run_files_two_checkpoints_and_the_report():
    one = estimate_bytes([(44_350, 2)])
    assert one == 16 * 1024 + 2 * 1024 + 2 * (4 * 44_350 * 3 + 64 * 1024) + 12 * 2**20  # the report set, its page and the page's script
    assert estimate_bytes([(44_350, 2)] * 3) - one == 2 * (16 * 1024 + 2 * 1024)  # run files only: checkpoints come and go
    assert estimate_bytes([]) == 12 * 2**20


@pytest.mark.figures
def test_every_file_a_report_writes_is_listed_for_the_layout_check(clean, tmp_path):
    folder = copy_of(clean, tmp_path) / "hostile"
    written = {p.name for p in write_report(folder)}
    assert written | {"last_run.json"} == set(REPORT_FILES)


def test_a_mistyped_data_dir_is_refused_not_created(tmp_path):
    spec = write_spec(tmp_path / "hostile.yaml", SPEC)
    one_line_error(cli("run", spec, "--results-dir", tmp_path / "r", "--data-dir", tmp_path / "dtaa"), "no such folder")
    assert not (tmp_path / "dtaa").exists()


# --------------------------------------------------------------------------- IDX headers


def idx_bytes(dims: tuple[int, ...], body: bytes = b"") -> bytes:
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body


@pytest.mark.parametrize(
    "dims, words",
    [
        ((2**21, 2**21, 2**22), "header says 2097152x2097152x4194304, dimensions beyond the 1073741824 bytes"),  # 2**64: 0 in int64
        ((2**32 - 1,) * 3, "dimensions beyond the 1073741824 bytes"),
        ((65536, 65536, 2**32 - 1), "dimensions beyond the"),  # negative in int64
        ((0, 2**32 - 1, 2**32 - 1), "dimensions beyond the"),  # found by tests/test_fuzz.py: 0 bytes, but numpy's reshape raised
    ],
)
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_dimensions_that_overflow_int64_are_one_line_before_allocating(tmp_path, dims, words, gz):
    blob = idx_bytes(dims)
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(MnistbenchError, match=words):
        read_idx(path)


def test_a_gzip_bomb_is_read_no_further_than_its_header_promises(tmp_path):
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(idx_bytes((10,), bytes(10)) + bytes(32 * 2**20), compresslevel=1))  # 32 MiB of zeros
    tracemalloc.start()
    try:
        with pytest.raises(MnistbenchError, match="bomb.gz: has trailing bytes: header says 10 = 10 bytes"):
            read_idx(path)
        assert tracemalloc.get_traced_memory()[1] < 2**20
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def first_epoch(data, tmp_path_factory):
    """The checkpoint payload of SPEC's cell after its first epoch (right key), and the key."""
    root = tmp_path_factory.mktemp("ckpt")
    plan = plan_run(parse_spec(yaml.safe_load(SPEC), "hostile"), root, data, allow_download=False, force=False)
    task = plan.tasks[0]
    path = root / "first.pt"

    def save_first(metrics, state):  # saved at once: the state's tensors are the live model's
        if metrics.epoch == 1:
            save_checkpoint(path, task.key, state())

    run_cell(task.cell.config, plan.datasets["mnist"], on_epoch=save_first)
    return torch.load(path, weights_only=True), task.key


def _first_tensor_key(state: dict) -> object:
    return next(iter(state))


BAD_CHECKPOINTS = {  # case: payload -> what to write (a payload to torch.save, bytes, or "folder")
    "missing optimizer": lambda p: {k: v for k, v in p.items() if k != "optimizer"},
    "weights of the wrong shape": lambda p: {**p, "model": {**p["model"], _first_tensor_key(p["model"]): torch.zeros(3, 3)}},
    "optimizer state of the wrong shape": lambda p: {**p, "optimizer": {**p["optimizer"], "state": {
        i: {**s, "exp_avg": torch.zeros(7)} for i, s in p["optimizer"]["state"].items()}}},
    "more epochs than configured": lambda p: {**p, "epochs": p["epochs"] + [{**p["epochs"][0], "epoch": e} for e in (2, 3)]},
    "epochs numbered wrong": lambda p: {**p, "epochs": [{**p["epochs"][0], "epoch": 5}]},
    # found by tests/test_fuzz.py: the first failed every retry of the cell, the second its run file
    "optimizer state None": lambda p: {**p, "optimizer": {**p["optimizer"], "state": None}},
    "time to target a tensor": lambda p: {**p, "time_to_target_s": torch.zeros(2)},
    "a list": lambda p: [p["model"]],
    "random bytes": lambda p: bytes(range(256)) * 8,
    "truncated": lambda p: "truncated",
    "a folder": lambda p: "folder",
}


def _plant_checkpoint(folder: Path, case: str, payload: dict, key: str) -> Path:
    path = folder / "checkpoints" / "mlp-matched_seed-0.pt"
    path.parent.mkdir(parents=True)
    bad = BAD_CHECKPOINTS[case](payload)
    if bad == "folder":
        (path / "inside").mkdir(parents=True)
    elif bad == "truncated":
        torch.save({**payload, "key": key}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif isinstance(bad, bytes):
        path.write_bytes(bad)
    else:
        torch.save(bad, path)
    return path


# make test covers one case of each kind (a missing part, a wrong shape, bad bytes, not a file); the others: make test-slow.
FAST_BAD_CHECKPOINTS = ("missing optimizer", "weights of the wrong shape", "truncated", "a folder")


@pytest.mark.parametrize("case", [c if c in FAST_BAD_CHECKPOINTS else pytest.param(c, marks=pytest.mark.slow) for c in BAD_CHECKPOINTS])
def test_a_bad_checkpoint_with_the_right_key_is_set_aside_with_a_message_and_the_cell_restarts(
    first_epoch, clean, data, tmp_path, case
):
    payload, key = first_epoch
    path = _plant_checkpoint(tmp_path / "hostile", case, payload, key)
    events = []
    run_spec(parse_spec(yaml.safe_load(SPEC), "hostile"), tmp_path, data, on_event=events.append)
    warnings = [e.message for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("checkpoint mlp-matched_seed-0.pt is unusable (")
    assert warnings[0].endswith("moved to mlp-matched_seed-0.pt.bad, and the cell restarts"), warnings[0]
    assert os.path.lexists(path.with_name(path.name + ".bad")) and not os.path.lexists(path)
    record = json.loads((tmp_path / "hostile" / "runs" / "mlp-matched_seed-0.json").read_text())
    assert record["extra"]["resumed_from_epoch"] == 0  # restarted from scratch
    assert metrics(tmp_path / "hostile") == metrics(clean)


def test_the_command_line_shows_why_a_checkpoint_was_discarded(first_epoch, data, tmp_path):
    payload, key = first_epoch
    _plant_checkpoint(tmp_path / "results" / "hostile", "random bytes", payload, key)
    spec = write_spec(tmp_path / "hostile.yaml", SPEC)
    result = cli("run", spec, "--results-dir", tmp_path / "results", "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert "mnistbench: warning: checkpoint mlp-matched_seed-0.pt is unusable" in result.stderr


def test_a_sound_checkpoint_still_resumes(first_epoch, clean, data, tmp_path):
    payload, key = first_epoch
    path = tmp_path / "hostile" / "checkpoints" / "mlp-matched_seed-0.pt"
    path.parent.mkdir(parents=True)
    torch.save(payload, path)
    events = []
    run_spec(parse_spec(yaml.safe_load(SPEC), "hostile"), tmp_path, data, on_event=events.append)
    assert [e.epoch for e in events if e.kind == "cell"] == [1] and not [e for e in events if e.kind == "warning"]
    assert metrics(tmp_path / "hostile") == metrics(clean)


# --------------------------------------------------------------------------- a full disk

ENOSPC_SITES = {  # where the disk fills: the temporary file whose fsync fails
    "checkpoint": ".mlp-matched_seed-1.pt.",
    "run file": ".mlp-matched_seed-1.json.",
    "summary.csv": ".summary.csv.",
    "summary.md": ".summary.md.",
    "a PNG figure": ".learning_curves.png.",
    "an SVG figure": ".throughput.svg.",
    "manifest": ".manifest.json.",
    "last_run.json": ".last_run.json.",
}


def fail_fsync_of(prefix: str, monkeypatch) -> list[str]:
    """Make ``os.fsync`` of files whose name starts with ``prefix`` fail with ENOSPC; returns the names it failed."""
    real, failed = os.fsync, []

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(prefix):
            failed.append(name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return failed


def assert_disk_full_left_things_whole(folder: Path, before: dict[str, bytes], result, new_set: bool) -> None:
    """One line, exit 2, earlier run files (and, unless ``new_set``, the report set) unchanged, no temporaries."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnistbench: error: ") and "No space left on device" in lines[0], result.stderr
    after = snapshot(folder)
    assert {k: v for k, v in after.items() if k in before and (k.startswith("runs/") or not new_set)} == {
        k: v for k, v in before.items() if k.startswith("runs/") or not new_set}
    assert not list(folder.rglob("*.tmp"))
    check = cli("report", "--check", folder)
    if (folder / "runs" / "mlp-matched_seed-1.json").exists() and not new_set:
        assert check.exit_code == 1 and "mlp-matched_seed-1.json is not in the tables" in check.stderr  # stale, and says so
    else:
        assert check.exit_code == 0, check.output


# make test covers a write during training, one of the report and the last one (a new set); the others: make test-slow.
FAST_ENOSPC_SITES = ("summary.csv",)  # one site in make test; every site in make test-slow


@pytest.mark.figures
@pytest.mark.parametrize("site", [s if s in FAST_ENOSPC_SITES else pytest.param(s, marks=pytest.mark.slow) for s in ENOSPC_SITES])
def test_a_full_disk_at_each_write_is_one_line_exit_2_keeps_earlier_files_and_a_rerun_completes(
    clean, clean_two, data, tmp_path, monkeypatch, site
):
    root = copy_of(clean, tmp_path)
    folder = root / "hostile"
    before = snapshot(folder)
    spec = write_spec(tmp_path / "hostile.yaml", TWO_SEEDS)
    failed = fail_fsync_of(ENOSPC_SITES[site], monkeypatch)
    result = cli("run", spec, "--results-dir", root, "--data-dir", data)
    assert failed, f"no write of {ENOSPC_SITES[site]}* happened"
    assert_disk_full_left_things_whole(folder, before, result, new_set=site == "last_run.json")
    monkeypatch.undo()  # space freed
    again = cli("run", spec, "--results-dir", root, "--data-dir", data)
    assert again.exit_code == 0, again.output
    assert metrics(folder) == metrics(clean_two) and accuracy_table(folder) == accuracy_table(clean_two)
    assert cli("report", "--check", folder).exit_code == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs (two report sets with their pages fit), where mounting is permitted (root in a container that
    allows it); skipped elsewhere."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); the injected ENOSPC tests cover this")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Write a file that leaves about ``leave`` bytes free on ``disk``."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        while shutil.disk_usage(disk).free > leave + 2**20:
            f.write(bytes(2**20))
            f.flush()
        f.write(bytes(max(0, shutil.disk_usage(disk).free - leave)))
    return filler


@pytest.fixture
def nearly_full(small_disk, clean, tmp_path):
    """Earlier results on the small disk, filled to leave 300 KiB: room for a run file, not a checkpoint or the report."""
    root = small_disk / "results"
    shutil.copytree(clean, root / "hostile")
    spec = write_spec(tmp_path / "hostile.yaml", TWO_SEEDS)
    return root, spec, snapshot(root / "hostile"), fill(small_disk, leave=300 * 1024)


def test_on_a_real_nearly_full_disk_the_run_is_refused_before_training(nearly_full, data):
    root, spec, before, _ = nearly_full
    one_line_error(cli("run", spec, "--results-dir", root, "--data-dir", data), "MiB free, but this run writes up to about")
    assert snapshot(root / "hostile") == before


@pytest.mark.slow  # fills a real tmpfs and runs twice; the injected ENOSPC cases above are the fast check
def test_on_a_real_full_disk_a_run_stops_in_one_line_and_a_rerun_completes(nearly_full, clean_two, data, monkeypatch):
    """It used to record the cell as failed (torch's writer raised RuntimeError on ENOSPC), exit 3, and go on."""
    root, spec, before, filler = nearly_full
    monkeypatch.setenv("MNISTBENCH_SKIP_SPACE_CHECK", "1")  # past the estimate, into the writes themselves
    stopped = cli("run", spec, "--results-dir", root, "--data-dir", data)
    assert_disk_full_left_things_whole(root / "hostile", before, stopped, new_set=False)
    filler.unlink()  # space freed
    again = cli("run", spec, "--results-dir", root, "--data-dir", data)
    assert again.exit_code == 0, again.output
    assert metrics(root / "hostile") == metrics(clean_two) and accuracy_table(root / "hostile") == accuracy_table(clean_two)


# --------------------------------------------------------------------------- signals and leftovers

WRAPPER = """\
import os, signal, sys
import mnistbench.report.plots as plots
import mnistbench.report.build as report

SIGNAL = {signal!r}
original_plots, original_replace = plots.write_plots, os.replace


def write_plots(*args, **kwargs):  # the signal arrives while the report is being written
    os.kill(os.getpid(), getattr(signal, SIGNAL))
    return original_plots(*args, **kwargs)


def replace(src, dst, *args, **kwargs):  # SIGKILL between two renames of the report's commit
    if SIGNAL == "SIGKILL" and str(dst).endswith("summary.md") and ".report." in str(src) and ".report." not in str(dst):
        os.kill(os.getpid(), signal.SIGKILL)
    return original_replace(src, dst, *args, **kwargs)


if SIGNAL != "SIGKILL":
    plots.write_plots = write_plots
os.replace = replace
from mnistbench.cli import app
sys.argv = ["mnistbench", *sys.argv[1:]]
app()
"""


def run_with_signal_in_report(signal_name: str, spec: Path, root: Path, data: Path, tmp_path: Path):
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER.format(signal=signal_name))
    return subprocess.run([sys.executable, str(wrapper), "run", str(spec), "--results-dir", str(root), "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_during_the_final_report_finishes_the_set_then_exits_128_plus_signal(clean, data, tmp_path, signal_name, code):
    root = copy_of(clean, tmp_path)
    (root / "hostile" / "summary.md").write_text("stale")  # so the report has something to rebuild
    proc = run_with_signal_in_report(signal_name, write_spec(tmp_path / "hostile.yaml", SPEC), root, data, tmp_path)
    assert proc.returncode == code, proc.stderr
    assert f"stopped by {signal_name}" in proc.stderr and "Traceback" not in proc.stderr
    assert cli("report", "--check", root / "hostile").exit_code == 0  # a whole, current set
    assert snapshot(root / "hostile")["summary.md"] == snapshot(clean)["summary.md"]


@pytest.mark.slow
def test_sigkill_between_the_reports_renames_leaves_it_marked_stale_and_the_next_run_tidies_up(clean, data, tmp_path):
    root = copy_of(clean, tmp_path)
    folder = root / "hostile"
    spec = write_spec(tmp_path / "hostile.yaml", SPEC)
    proc = run_with_signal_in_report("SIGKILL", spec, root, data, tmp_path)
    assert proc.returncode == -9
    check = cli("report", "--check", folder)
    assert check.exit_code == 1 and "manifest.json is missing" in check.stderr  # never a half set presented as current
    assert list(folder.glob(".report.*.tmp"))
    assert cli("run", spec, "--results-dir", root, "--data-dir", data).exit_code == 0
    assert not list(folder.glob(".*.tmp")) and cli("report", "--check", folder).exit_code == 0


def test_temporaries_left_by_sigkill_are_removed_at_the_next_start(clean, data, tmp_path):
    root = copy_of(clean, tmp_path)
    folder = root / "hostile"
    (folder / "checkpoints").mkdir()
    leftovers = [folder / "checkpoints" / ".mlp-matched_seed-0.pt.a1b2c3d4.tmp", folder / "runs" / ".mlp-matched_seed-0.json.x.tmp",
                 folder / ".summary.csv.y.tmp", folder / ".report.z.tmp" / ".summary.md.w.tmp"]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a file")
    result = cli("run", write_spec(tmp_path / "hostile.yaml", SPEC), "--results-dir", root, "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert not [p for p in leftovers if p.exists()] and not (folder / ".report.z.tmp").exists()


# --------------------------------------------------------------------------- report --check on a hostile folder


@pytest.mark.parametrize(
    "manifest, words",
    [
        ("[" * 100_000 + "]" * 100_000, "manifest.json is not a valid manifest"),
        ('{"run_files": {"mlp-matched_seed-0.json": "x"}, "outputs": {"../../etc/passwd": "x"}}', "../../etc/passwd is missing"),
    ],
    ids=["nested 100,000 deep", "names outside the folder"],
)
def test_report_check_reads_a_hostile_manifest_as_stale_not_as_a_crash(clean, tmp_path, manifest, words):
    folder = copy_of(clean, tmp_path) / "hostile"
    (folder / "manifest.json").write_text(manifest)
    result = cli("report", "--check", folder)
    assert result.exit_code == 1 and words in result.stderr and "Traceback" not in result.output


def test_report_check_with_a_folder_where_a_listed_run_file_was(clean, tmp_path):
    folder = copy_of(clean, tmp_path) / "hostile"
    run_file = folder / "runs" / "mlp-matched_seed-0.json"
    run_file.unlink()
    run_file.mkdir()
    result = cli("report", "--check", folder)
    assert result.exit_code == 1 and "run file mlp-matched_seed-0.json changed after the tables were built" in result.stderr
