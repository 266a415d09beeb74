"""`mnistbench infer`: every installed backend against eager fp32, the accuracy gate, cold vs warm latency, peak
memory read back from a known allocation, and a bad weights file as one line (docs/inference.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import assert_one_line_error
from conftest import make_dataset
from mnistbench.train import memory
from mnistbench.cli import app
from mnistbench.data.datasets import content_hashes, load_dataset, normalize
from mnistbench.errors import MnistbenchError
from mnistbench.infer import load_options, load_result, run_inference, write_inference
from mnistbench.infer import backends as backends_module
from mnistbench.infer.backends import Backend, BackendContext, eager
from mnistbench.infer.measure import Latency, PeakMemory, quantile_interval, single_stream
from mnistbench.infer.options import InferOptions, with_overrides
from mnistbench.infer.plot import pareto_front
from mnistbench.infer.report import FLAG, inference_markdown, readme_block, summarize
from mnistbench.layout import runs_dir, weights_file
from mnistbench.models.factory import create_model
from mnistbench.results import data_identity
from mnistbench.weights import save_weights, weights_bytes
from records_factory import make_record

ROOT = Path(__file__).resolve().parent.parent
CELL = "lenet5_seed-0_threads-1"  # records_factory's cell name of lenet5, seed 0, threads 1
FAST = dict(batch_sizes=(1, 64), threads=1, min_queries=30, min_seconds=0.0, warmup_queries=5, throughput_seconds=0.0,
            calibration_samples=128)


def fit(name: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
    """A few Adam steps on the synthetic digits: weights that classify them, in well under a second."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests' specs do: two threads on a shared 2-core machine are ten times slower
    model = create_model(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(25):
        batch = slice((step * 64) % len(x), (step * 64) % len(x) + 64)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    torch.set_num_threads(threads)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_cell(folder: Path, name: str, seed: int, state: dict, identity: str) -> Path:
    record = make_record(name, seed, spec="tiny", threads=1)
    record.data["identity"] = identity
    runs = runs_dir(folder)
    runs.mkdir(parents=True, exist_ok=True)
    record.extra["weights"] = save_weights(record.file_in(runs), weights_bytes(state))
    return record.save(runs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A results folder of lenet5 (seeds 0 and 1) and mlp-matched (seed 0) with kept weights, and its synthetic data."""
    root = tmp_path_factory.mktemp("infer")
    data = make_dataset(root / "data", n_train=512, n_test=256)
    dataset = load_dataset("mnist", data, allow_download=False)
    x, y = normalize(dataset.train, dataset.info, "cpu")
    identity = data_identity(content_hashes(dataset))  # as a training run records it
    for name, seed in (("lenet5", 0), ("lenet5", 1), ("mlp-matched", 0)):
        save_cell(root / "tiny", name, seed, fit(name, x, y, seed), identity)
    return root / "tiny", data


@pytest.fixture(scope="module")
def measured(trained):
    folder, data = trained
    options = InferOptions(backends=("eager", "onnxruntime", "int8"), **FAST)
    return run_inference(folder, options, data)


def test_runs_trained_on_the_gzip_files_are_measured_on_the_same_data_without_a_warning(measured):
    # The data identity is the decompressed content's (as training records it), not the .gz files' hashes.
    assert measured.warnings == [] and measured.dataset["identity"] == data_identity(content_hashes(
        load_dataset("mnist", Path(measured.folder).parent / "data", allow_download=False)))


def test_onnxruntime_and_int8_agree_with_eager_and_int8_is_smaller(measured):
    rows = {(r.cell, r.backend): r for r in measured.runs}
    assert len(rows) == 9 and all(r.status == "ok" for r in rows.values()), [r.reason for r in rows.values()]
    for cell in (CELL, "mlp-matched_seed-0_threads-1"):
        eager_row, ort, int8 = rows[cell, "eager"], rows[cell, "onnxruntime"], rows[cell, "int8"]
        assert eager_row.gate.accuracy > 0.9 and eager_row.gate.max_abs_logit_diff == 0.0
        assert ort.gate.accuracy == eager_row.gate.accuracy and ort.gate.max_abs_logit_diff < 1e-4  # the export check
        assert 0 < int8.gate.max_abs_logit_diff and abs(int8.gate.delta) < 0.05
        assert int8.files["int8 onnx"] * 2.5 < ort.files["onnx"] and "safetensors" in eager_row.files
        assert [t.batch_size for t in ort.throughput] == [1, 64] and all(t.images_per_s > 0 for t in ort.throughput)


def test_cold_start_and_warm_up_are_reported_apart_from_the_timed_queries(measured):
    for r in measured.runs:
        assert r.startup.cold_s > 0 and r.startup.warmup_queries == 5 and r.startup.warmup_mean_s > 0
        assert r.latency.queries >= 30 and r.latency.min <= r.latency.p50 <= r.latency.p90 <= r.latency.p99
    text = inference_markdown(measured, [])
    assert "cold query ms" in text and "warm-up mean µs" in text


def test_peak_memory_and_the_thread_budget_are_recorded(measured):
    assert measured.threads == 1 and measured.options["threads"] == 1
    if memory.reset_peak():
        assert all(isinstance(r.peak, int) and r.memory_baseline_bytes > 0 for r in measured.runs)
        assert set(measured.runs[0].peak_memory_bytes) == {"prepare", "latency", "batch 1", "batch 64", "accuracy"}


def test_results_round_trip_and_render_the_summary_figure_and_readme_block(measured, tmp_path):
    (tmp_path / "runs").mkdir()
    written = write_inference(tmp_path, measured)
    assert [p.name for p in written] == ["inference.json", "summary.md", "error_vs_latency.png", "error_vs_latency.svg"]
    back = load_result(tmp_path / "inference" / "inference.json")
    assert back == measured
    summaries = summarize(back)
    assert [(s.model, s.backend, len(s.runs)) for s in summaries][:3] == [("lenet5", "eager", 2), ("lenet5", "onnxruntime", 2),
                                                                          ("lenet5", "int8", 2)]
    assert summaries[0].accuracy.n == 2 and summaries[0].p50 is not None
    block = readme_block(back, "reference/tiny")
    assert "`lenet5`" in block and "reference/tiny/summary.md" in block


def perturbed(model: torch.nn.Module, ctx: BackendContext):
    """eager with its last layer's bias pushed towards class 0: a backend that loses accuracy."""
    with torch.no_grad():
        list(model.parameters())[-1][0] += 50.0
    return eager(model, ctx)


def test_a_backend_below_999_of_fp32_is_flagged_in_every_table(trained, monkeypatch):
    folder, data = trained
    monkeypatch.setitem(backends_module.BACKENDS, "onnxruntime", Backend("onnxruntime", perturbed, torch_native=True))
    result = run_inference(folder, InferOptions(backends=("eager", "onnxruntime"), **FAST), data)
    bad = [r for r in result.runs if r.backend == "onnxruntime"]
    assert all(r.gate.flagged and r.gate.delta < -0.5 for r in bad)
    assert not any(r.gate.flagged for r in result.runs if r.backend == "eager")
    text = inference_markdown(result, [])
    for title in ("Inference", "Batch-1 latency", "Throughput", "Peak memory"):
        section = text.split(title, 1)[1].split("##", 1)[0]
        assert f"onnxruntime {FLAG}" in section, title
    assert f"eager {FLAG}" not in text


def test_a_missing_backend_library_is_not_installed_not_a_traceback(trained, monkeypatch):
    folder, data = trained
    monkeypatch.setitem(backends_module.BACKENDS, "openvino",
                        Backend("openvino", eager, ("mnistbench_no_such_module",)))
    result = run_inference(folder, InferOptions(backends=("openvino",), **FAST), data)
    assert {r.status for r in result.runs} == {"not installed"}
    assert "mnistbench[infer]" in result.runs[0].reason and "## Not measured" in inference_markdown(result, [])


class Allocates256MiB(torch.nn.Module):
    """Touches a fresh 256 MiB buffer in every forward pass: a known peak for the memory tracker."""

    def forward(self, x):
        buffer = torch.ones(64 * 2**20, dtype=torch.float32)  # 64 Mi floats = 256 MiB, written so it is resident
        return x.flatten(1)[:, :10] + buffer[:1]


@pytest.mark.skipif(not memory.reset_peak(), reason="needs Linux's resettable VmHWM")
def test_peak_memory_reads_back_a_known_256_mib_allocation_within_5_percent(tmp_path):
    ctx = BackendContext("cpu", 1, tmp_path, np.zeros((1, 1, 28, 28), np.float32), torch.zeros(1, 1, 28, 28))
    prepared = eager(Allocates256MiB(), ctx)
    tracker = PeakMemory("cpu")
    with tracker.over("latency"):
        single_stream(prepared, torch.randn(8, 1, 28, 28), 0.0, min_queries=1, min_seconds=0.0, warmup=0)
    assert tracker.peaks["latency"] == pytest.approx(256 * 2**20, rel=0.05)


def test_latency_quantiles_and_their_order_statistic_intervals():
    values = np.arange(1, 1001) / 1e6  # 1..1000 µs
    lat = Latency.from_values(values[::-1])
    assert lat.min == 1e-6 and lat.p50 == pytest.approx(500.5e-6) and lat.queries == 1000
    low, high = lat.p90_ci
    assert low < lat.p90 < high and high - low < 50e-6
    assert quantile_interval(np.sort(values[:50]), 0.99) is None  # 50 queries cannot bound a p99


def test_pareto_front_keeps_points_no_other_beats_on_both():
    points = [(10.0, 2.0), (20.0, 1.0), (15.0, 3.0), (5.0, 4.0), (30.0, 1.5)]
    assert pareto_front(points) == [3, 0, 1]


def test_options_from_the_shipped_specs_and_the_command_line():
    for path in sorted((ROOT / "bench").glob("infer-*.yaml")):
        options = load_options(path)
        assert options.results and options.backends
    assert with_overrides(InferOptions(), device="cuda").backends == ("eager", "compile", "fp16", "bf16", "onnxruntime")
    with pytest.raises(MnistbenchError, match="does not run on cuda"):
        with_overrides(InferOptions(), device="cuda", backends=["int8"])


def cli(*args: str):
    return CliRunner().invoke(app, ["infer", *map(str, args)])


def one_cell(trained, tmp_path: Path) -> tuple[Path, Path]:
    """A results folder holding lenet5 seed 0 alone (run file and weights), and the data."""
    folder, data = trained
    copy = tmp_path / "copy"
    (copy / "runs").mkdir(parents=True)
    for f in (folder / "runs").glob(f"{CELL}.*"):
        (copy / "runs" / f.name).write_bytes(f.read_bytes())
    return copy, data


def test_cli_writes_the_result_and_never_replaces_it_unasked(trained, tmp_path):
    copy, data = one_cell(trained, tmp_path)
    args = [copy, "--backends", "eager", "--batch-sizes", "1", "--threads", "1", "--min-queries", "20",
            "--min-seconds", "0", "--data-dir", data]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert json.loads((copy / "inference" / "inference.json").read_text())["threads"] == 1
    assert_one_line_error(cli(*args), "--force")  # refused before anything is measured


def bad_copy(trained, tmp_path: Path, weights: bytes, rehash: bool) -> Path:
    """lenet5 seed 0's run file with ``weights`` beside it (its record's hash updated when ``rehash``)."""
    folder, _ = trained
    copy = tmp_path / "bad"
    (copy / "runs").mkdir(parents=True)
    run_file = copy / "runs" / f"{CELL}.json"
    raw = json.loads((folder / "runs" / run_file.name).read_text())
    if rehash:
        raw["extra"]["weights"] = save_weights(run_file, weights)
    else:
        weights_file(run_file).write_bytes(weights)
    run_file.write_text(json.dumps(raw))
    return copy


@pytest.mark.parametrize("case, words", [("truncated", "not the weights its run saved"),
                                         ("wrong shapes", "do not fit the model"),
                                         ("another model's", "do not fit the model")])
def test_a_bad_weights_file_is_one_line_and_exit_2(trained, tmp_path, case, words):
    folder, data = trained
    good = weights_file(folder / "runs" / f"{CELL}.json").read_bytes()
    if case == "truncated":
        copy = bad_copy(trained, tmp_path, good[:200], rehash=False)
    elif case == "wrong shapes":
        state = create_model("lenet5").state_dict()
        state["fc1.weight"] = torch.zeros(7, 256)
        copy = bad_copy(trained, tmp_path, weights_bytes(state), rehash=True)
    else:
        copy = bad_copy(trained, tmp_path, weights_file(folder / "runs" / "mlp-matched_seed-0_threads-1.json").read_bytes(), rehash=True)
    assert_one_line_error(cli(copy, "--backends", "eager", "--data-dir", data), words)


def test_a_folder_without_runs_or_an_unknown_backend_is_one_line(tmp_path):
    assert_one_line_error(cli(tmp_path), "not a results folder")
    assert_one_line_error(cli(tmp_path, "--backends", "eager,tflite"), "unknown backend tflite")
    assert_one_line_error(cli(), "name a results folder")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["openvino", "compile"])
def test_openvino_and_torch_compile_agree_with_eager(trained, name):
    folder, data = trained
    result = run_inference(folder, InferOptions(backends=("eager", name), timing_seeds=1, **FAST), data)
    rows = [r for r in result.runs if r.backend == name]
    assert rows and all(r.status == "ok" for r in rows), [r.reason for r in rows]
    assert all(r.gate.max_abs_logit_diff < 1e-3 and not r.gate.flagged for r in rows)
    assert sum(r.latency is not None for r in rows) == 2  # one timed seed of each model


def test_a_model_given_by_file_reference_is_found_from_its_recorded_file(tmp_path):
    from mnistbench.weights import base_dir

    record = make_record("./nets/small.py:build", 0)
    record.model["file"] = str(tmp_path / "specs" / "nets" / "small.py")
    assert base_dir(record) == str(tmp_path / "specs")
    assert base_dir(make_record("lenet5", 0)) == ""


@pytest.mark.slow
def test_isolate_measures_each_backend_in_a_fresh_process(trained, tmp_path):
    copy, data = one_cell(trained, tmp_path)
    result = run_inference(copy, InferOptions(backends=("eager", "onnxruntime"), isolate=True, **FAST), data)
    assert [r.status for r in result.runs] == ["ok", "ok"], [r.reason for r in result.runs]
    assert result.runs[1].gate.max_abs_logit_diff < 1e-4 and result.runs[1].latency.queries >= 30


def test_without_a_resettable_high_water_mark_memory_is_na_not_a_guess(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "CLEAR_REFS", tmp_path / "no" / "clear_refs")
    tracker = PeakMemory("cpu")
    with tracker.over("latency"):
        pass
    assert tracker.baseline is None and tracker.peaks == {"latency": None} and tracker.method.startswith("n/a")
