"""A finished cell keeps its final weights (safetensors, hashed in its record); a bad weights file is one line."""

from __future__ import annotations

import torch
import pytest

from conftest import make_dataset, write_spec
from mnistbench.data.datasets import load_dataset, normalize
from mnistbench.errors import MnistbenchError
from mnistbench.layout import weights_file
from mnistbench.models.factory import create_model
from mnistbench.results import load_record
from mnistbench.run.runner import run_spec
from mnistbench.spec.schema import load_spec
from mnistbench.weights import load_into, load_weights

SPEC = """\
name: kept
device: cpu
epochs: 2
batch_size: 64
eval_batch_size: 128
threads: 1
matrix:
  model: [lenet5, mlp-matched]
  seed: [0]
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    data = make_dataset(root / "data", n_train=512, n_test=256)
    run_spec(load_spec(write_spec(root / "kept.yaml", SPEC)), root / "results", data)
    return root / "results" / "kept", data


def test_every_finished_cell_saves_the_weights_it_was_evaluated_with(folder):
    results, data = folder
    dataset = load_dataset("mnist", data, allow_download=False)
    x, y = normalize(dataset.test, dataset.info, "cpu")
    for run_file in sorted((results / "runs").glob("*.json")):
        record = load_record(run_file)
        kept = record.extra["weights"]
        assert kept["file"] == weights_file(run_file).name and kept["bytes"] == weights_file(run_file).stat().st_size
        model = load_into(create_model(record.config["model"]), load_weights(run_file, record), str(run_file)).eval()
        with torch.inference_mode():
            accuracy = (model(x).argmax(1) == y).float().mean().item()
        assert accuracy == pytest.approx(record.final.test_accuracy, abs=1e-6)  # the same test pass, from the file


def test_a_truncated_or_altered_weights_file_is_one_line(folder, tmp_path):
    results, _ = folder
    run_file = results / "runs" / "lenet5_seed-0.json"
    record = load_record(run_file)
    copy = tmp_path / run_file.name
    copy.write_text(run_file.read_text())
    weights_file(copy).write_bytes(weights_file(run_file).read_bytes()[:100])
    with pytest.raises(MnistbenchError, match="not the weights its run saved"):
        load_weights(copy, record)
    weights_file(copy).unlink()
    with pytest.raises(MnistbenchError, match="cannot read the weights"):
        load_weights(copy, record)


def test_weights_of_another_model_do_not_load(folder):
    results, _ = folder
    run_file = results / "runs" / "mlp-matched_seed-0.json"
    with pytest.raises(MnistbenchError, match="do not fit the model"):
        load_into(create_model("lenet5"), load_weights(run_file, load_record(run_file)), str(run_file))


def test_a_cpu_cell_records_its_peak_rss_and_the_summary_shows_it(folder):
    from mnistbench.train import memory
    from mnistbench.report.groups import build_report
    from mnistbench.report.tables import summary_markdown

    if not memory.reset_peak():
        pytest.skip("needs Linux's resettable VmHWM")
    results, _ = folder
    for run_file in sorted((results / "runs").glob("*.json")):
        peak = load_record(run_file).extra["peak_rss_bytes"]
        assert 50 * 2**20 < peak < 8 * 2**30  # the process's peak: torch and the data at least, far below the machine
    assert "peak memory MiB" in summary_markdown(build_report(results))
