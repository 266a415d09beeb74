"""The memory roof and the roofline: bandwidth measured and recorded, bytes per sample counted by the stated rule,
each pass placed below the roof that binds it, and reports with and without the new figures (older records)."""

from __future__ import annotations

import csv
import functools
import io
import math

import pytest
from records_factory import make_record, report_of, write_records

from mnistbench.models.traffic import (ELEMENT_BYTES, LayerShape, Traffic, eval_bytes_per_sample, layer_shapes,
                                       model_traffic, state_buffers, train_bytes_per_sample)
from mnistbench.models.factory import create_model
from mnistbench.models.zoo import INPUT_SHAPE
from mnistbench.report.build import write_report
from mnistbench.report.roofline import Point, attainable_gflops, bound, drawable, roof_curve
from mnistbench.report.tables import summary_markdown
from mnistbench.results import EpochMetrics, load_record
from mnistbench.report.site.figures import figures
from mnistbench.spec.schema import CellConfig
from mnistbench.train import roofline
from mnistbench.train.engine import CellOutcome

pytestmark = pytest.mark.figures  # these tests look at the figures a report draws

SMALL = 4 * 2**20  # bytes per array: a fast measurement for tests (the run's own is at least 4x the last-level cache)


def test_the_stream_bandwidth_is_a_positive_finite_rate_and_the_best_of_copy_and_triad():
    b = roofline.stream_bandwidth("cpu", 1, array_bytes=SMALL, repeats=2)
    assert b.array_bytes == SMALL
    for rate in (b.copy_gbs, b.triad_gbs):
        assert math.isfinite(rate) and rate > 0
    assert b.to_dict()["bandwidth_gbs"] == max(b.copy_gbs, b.triad_gbs)


def test_the_default_arrays_are_four_times_the_last_level_cache_within_bounds():
    import torch

    expected = min(512 * 2**20, max(4 * (roofline.last_level_cache_bytes() or 0), 64 * 2**20))
    assert roofline._array_bytes(torch.device("cpu")) == expected


def _epoch(k: int) -> EpochMetrics:
    return EpochMetrics(epoch=k, train_loss=0.1, train_accuracy=0.9, test_loss=0.1, test_accuracy=0.9, train_seconds=1.0,
                        eval_seconds=0.5, train_samples_per_s=1000.0, eval_samples_per_s=4000.0, lr=1e-3)


def test_a_cells_rates_carry_the_measured_bandwidth_and_its_bytes_per_sample(monkeypatch):
    from mnistbench.models.describe import describe
    from mnistbench.models.factory import checked_model
    from mnistbench.train.roofline import achieved_rates

    # Real measurements, on small operands so the test stays fast.
    monkeypatch.setattr(roofline, "stream_bandwidth", functools.partial(roofline.stream_bandwidth, array_bytes=SMALL, repeats=2))
    monkeypatch.setattr(roofline, "matmul_peak_gflops", functools.partial(roofline.matmul_peak_gflops, size=128))
    model = describe(*checked_model("lenet5"))
    config = CellConfig(model="lenet5", batch_size=64, eval_batch_size=500, optimizer="sgd", momentum=0.9, device="cpu")
    rates = achieved_rates(model, CellOutcome(epochs=[_epoch(1), _epoch(2)], device="cpu", threads=1), config)
    assert rates["bandwidth_gbs"] > 0 and rates["bandwidth_gbs"] == max(rates["copy_gbs"], rates["triad_gbs"])
    t = Traffic(**model["traffic"])
    assert rates["train_bytes_per_sample"] == train_bytes_per_sample(t, 64, 1)
    assert rates["eval_bytes_per_sample"] == eval_bytes_per_sample(t, 500)


def test_lenet5_bytes_per_sample_follow_the_counting_rule_by_hand():
    # conv1 5x5: 1x28x28 -> 6x24x24; pool 2: -> 6x12x12; conv2 5x5: -> 16x8x8; pool 2: -> 16x4x4; then 256-120-84-10.
    c1, p1, c2, p2 = 6 * 24 * 24, 6 * 12 * 12, 16 * 8 * 8, 16 * 4 * 4
    layers = [(784, c1), (c1, c1), (c1, p1), (p1, c2), (c2, c2), (c2, p2), (p2, 120), (120, 120), (120, 84), (84, 84), (84, 10)]
    params = (6 * 25 + 6) + (16 * 6 * 25 + 16) + (256 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    shapes = layer_shapes(create_model("lenet5"), INPUT_SHAPE)
    assert [(s.inputs, s.outputs) for s in shapes] == layers  # flatten, a view, moves nothing
    assert sum(s.parameters for s in shapes) == params == 44_426
    forward = sum(x + y for x, y in layers)  # read the input, write the output
    backward = sum(y + 2 * x for x, y in layers) - 784  # read grad and saved input, write grad input (not the image's)
    t = model_traffic(create_model("lenet5"), INPUT_SHAPE)
    assert (t.forward_elements, t.backward_elements, t.parameters) == (forward, backward, params)
    # Adam at batch 256: weights read forward and backward, gradients written, step reads 2, writes 1, two state buffers.
    per_batch = params * (1 + 2 + 3 + 2 * 2)
    assert train_bytes_per_sample(t, 256, state_buffers("adam")) == pytest.approx(4 * (forward + backward + per_batch / 256))
    assert eval_bytes_per_sample(t, 1000) == pytest.approx(4 * (forward + params / 1000))


def test_mlp_bytes_per_sample_and_the_optimizer_state_they_count():
    widths = (784, 500, 150, 10)  # custom-mlp: fc, relu, fc, relu, fc
    layers = [(784, 500), (500, 500), (500, 150), (150, 150), (150, 10)]
    params = sum(a * b + b for a, b in zip(widths, widths[1:]))
    t = model_traffic(create_model("custom-mlp"), INPUT_SHAPE)
    assert t == Traffic(sum(x + y for x, y in layers), sum(y + 2 * x for x, y in layers) - 784, params)
    plain_sgd, momentum = (train_bytes_per_sample(t, 128, state_buffers("sgd", m)) for m in (0.0, 0.9))
    assert momentum - plain_sgd == pytest.approx(ELEMENT_BYTES * 2 * params / 128)  # the buffer read and written
    assert state_buffers("adamw") == state_buffers("adadelta") == 2


def test_a_model_whose_only_layer_is_itself_is_counted_as_one_layer():
    import torch

    class Logits(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :10] * 2

    assert layer_shapes(Logits(), INPUT_SHAPE) == [LayerShape("", "Logits", 784, 10, 0)]


@pytest.mark.parametrize("intensity, attainable, binds", [(5.0, 50.0, "memory"), (10.0, 100.0, "compute"), (40.0, 100.0, "compute")])
def test_below_the_ridge_the_memory_roof_binds_and_above_it_the_compute_roof(intensity, attainable, binds):
    # peak 100 GFLOP/s, 10 GB/s: the ridge point is 10 FLOP/byte.
    assert attainable_gflops(100.0, 10.0, intensity) == attainable
    assert bound(100.0, 10.0, intensity) == binds


def test_a_point_reads_its_intensity_and_distance_from_the_binding_roof():
    memory = Point("m", "training", flops_per_sample=1000.0, bytes_per_sample=400.0, peak_gflops=100.0, bandwidth_gbs=10.0,
                   achieved_gflops=5.0)
    assert (memory.intensity, memory.ridge, memory.attainable, memory.bound) == (2.5, 10.0, 25.0, "memory")
    assert memory.fraction_of_attainable == 0.2
    old = Point("m", "training", 1000.0, None, 100.0, None, 5.0)  # recorded before the memory roof
    assert not old.placed and old.row()["bound"] is None and old.fraction_of_attainable is None
    assert roof_curve(100.0, 10.0, 1.0, 100.0) == ([1.0, 10.0, 100.0], [10.0, 100.0, 100.0])


def _roofed(r, bandwidth: float = 10.0):
    """``r`` with the rates a run now records: both roofs and its bytes per sample."""
    r.model["traffic"] = {"forward_elements": 1000, "backward_elements": 2000, "parameters": r.model["parameters"]}
    r.extra["roofline"] = {"peak_gflops": 100.0, "train_gflops": 2.0, "eval_gflops": 80.0, "train_fraction_of_peak": 0.02,
                           "eval_fraction_of_peak": 0.8, "bandwidth_gbs": bandwidth, "copy_gbs": bandwidth,
                           "triad_gbs": bandwidth * 0.9, "stream_array_bytes": 2**27, "train_bytes_per_sample": 4000.0,
                           "eval_bytes_per_sample": 100.0}
    return r


def _old(r):
    r.extra["roofline"] = {"peak_gflops": 100.0, "train_gflops": 2.0, "eval_gflops": 80.0, "train_fraction_of_peak": 0.02,
                           "eval_fraction_of_peak": 0.8}
    return r


def _records(roofed: bool):
    records = []
    for model in ("lenet5", "mlp-matched"):
        r = make_record(model, 0, epochs=2)
        r.model.update(forward_flops=2_000, train_flops=6_000)
        records.append(_roofed(r) if roofed else _old(r))
    return records


def test_the_report_places_each_pass_on_the_roofline_in_a_table_a_csv_and_a_figure(tmp_path):
    folder = write_records(tmp_path / "new", _records(roofed=True))
    written = {p.name for p in write_report(folder, page=False)}  # the page's figure: figures() below
    assert {"roofline.csv", "roofline.png", "roofline.svg"} <= written
    rows = list(csv.DictReader(io.StringIO((folder / "roofline.csv").read_text())))
    # training: 6,000 FLOPs / 4,000 bytes = 1.5 FLOP/byte, below the ridge (10): 15 GFLOP/s attainable, 2 achieved.
    train = next(r for r in rows if r["model"] == "lenet5" and r["pass"] == "training")
    assert (train["intensity_flop_per_byte"], train["attainable_gflops"], train["bound"]) == ("1.5", "15", "memory")
    assert float(train["fraction_of_attainable"]) == pytest.approx(2 / 15, rel=1e-5)  # written to 6 significant digits
    infer = next(r for r in rows if r["model"] == "lenet5" and r["pass"] == "inference")
    assert (infer["intensity_flop_per_byte"], infer["bound"], infer["fraction_of_attainable"]) == ("20", "compute", "0.8")
    md = (folder / "summary.md").read_text()
    assert "## Roofline" in md and "| memory " in md and "| compute " in md and "![Roofline](roofline.png)" in md
    assert "there is no memory roof" not in md
    assert "fig-roofline" in {f.id for f in figures(report_of(_records(roofed=True), tmp_path / "again"))}


def test_records_from_before_the_memory_roof_still_load_and_read_n_a_with_no_roofline_files(tmp_path):
    folder = write_records(tmp_path / "old", _records(roofed=False))
    loaded = load_record(folder / "runs" / "lenet5_seed-0.json")
    assert "bandwidth_gbs" not in loaded.extra["roofline"]
    written = {p.name for p in write_report(folder, plots=False)}
    assert "roofline.csv" not in written
    md = (folder / "summary.md").read_text()
    assert "## Roofline" not in md  # nothing to place: the summary reads as it did before the memory roof
    assert "Only the compute roof is shown: there is no memory roof" in md
    report = report_of([loaded], tmp_path / "again")
    assert drawable(report.roofline_points()) == []  # so neither roofline.png nor the page's figure is drawn
    assert "fig-roofline" not in {f.id for f in figures(report)}


def test_the_roofline_leaves_summary_csv_as_it_was(tmp_path):
    from mnistbench.report.tables import csv_text

    assert csv_text(report_of(_records(roofed=True), tmp_path / "a")) == csv_text(report_of(_records(roofed=False), tmp_path / "b"))


def test_a_record_with_a_bandwidth_that_is_not_a_number_is_refused_in_one_line(tmp_path):
    from mnistbench.errors import MnistbenchError

    r = _roofed(make_record("lenet5", 0, epochs=2))
    r.extra["roofline"]["bandwidth_gbs"] = "fast"
    folder = write_records(tmp_path / "bad", [r])
    with pytest.raises(MnistbenchError, match="bandwidth_gbs"):
        load_record(folder / "runs" / "lenet5_seed-0.json")


def test_the_summary_says_what_the_roofline_shows(tmp_path):
    text = summary_markdown(report_of(_records(roofed=True), tmp_path))
    assert "it says which roof binds each model" in text
