"""`mnistbench profile-layers`: each layer timed alone, counted like the model as a whole, placed under its roof."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli_helpers import assert_one_line_error
from mnistbench.cli import app
from mnistbench.models.describe import forward_flops, train_flops
from mnistbench.models.factory import create_model
from mnistbench.models.traffic import layer_pass_bytes, layer_shapes, model_traffic, state_buffers, train_bytes_per_sample
from mnistbench.models.zoo import INPUT_SHAPE
from mnistbench.train.engine import fast_layers
from mnistbench.train.speedups import SPEEDUPS
from mnistbench.train.layerprofile import LayerConfig, PassTiming, profile_layers, profile_markdown

runner = CliRunner()
FAST = ("--repeats", "2", "--warmup", "0", "--device", "cpu", "--threads", "1", "--batch-size", "8")


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """One --json run and one table run with --out of LeNet-5 at batch 8."""
    out = tmp_path_factory.mktemp("layers") / "out"
    as_json = cli("profile-layers", *FAST, "--json")
    assert as_json.exit_code == 0, as_json.output
    as_table = cli("profile-layers", *FAST, "--out", out)
    assert as_table.exit_code == 0, as_table.output
    return json.loads(as_json.stdout), as_table.stdout, out


@pytest.mark.parametrize("model", ["lenet5", "custom-mlp", "examples-net"])
def test_the_layers_bytes_add_up_to_the_models_training_bytes(model):
    # Per layer forward + backward, plus the optimizer's reads and writes, is models.traffic's count for the model.
    net, batch, buffers = create_model(model), 64, state_buffers("adam")
    layers = layer_shapes(net, INPUT_SHAPE)
    per_layer = sum(sum(layer_pass_bytes(s, batch, first=i == 0)) for i, s in enumerate(layers))
    optimizer = 4 * (3 + 2 * buffers) * sum(s.parameters for s in layers)
    assert per_layer + optimizer == pytest.approx(train_bytes_per_sample(model_traffic(net, INPUT_SHAPE), batch, buffers) * batch)


def test_the_layers_flops_add_up_to_the_models_counted_flops(lenet):
    doc, _, _ = lenet
    net, batch = create_model("lenet5"), doc["config"]["batch_size"]
    assert sum(t["forward"]["flops"] for t in doc["layers"]) == forward_flops(net) * batch
    assert doc["train_flops_per_batch"] == train_flops(net) * batch  # conv1 computes no input gradient, as in training


def test_every_computing_layer_is_timed_in_call_order_and_the_rest_of_the_step_is_shown(lenet):
    doc, text, out = lenet
    names = [t["layer"] for t in doc["layers"]]
    trained = create_model("lenet5")
    fast_layers(trained)  # the model as the engine trains it: each ReLU before a max-pool done by the pool
    assert names == [s.layer for s in layer_shapes(trained, INPUT_SHAPE)]
    assert names[:3] == ["conv1", "pool1", "conv2"] and "flatten" not in names and "relu3" in names
    assert all(t[p]["seconds"] > 0 for t in doc["layers"] for p in ("forward", "backward")) and doc["step_seconds"] > 0
    assert doc["config"]["threads"] == 1 and doc["threads"] == 1
    assert doc["speedups"] == list(SPEEDUPS)  # the model as the engine trains it, and the record says so
    assert [t["kind"] for t in doc["layers"]][:3] == ["FirstConv2d", "MaxPool2x2+ReLU", "Conv2d"]
    assert "| conv1 " in text and "(rest of the step)" in text and "Ceiling" in text
    assert sorted(p.name for p in out.iterdir()) == ["layers.json", "summary.md"]
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# Layer by layer: lenet5, batch 8, cpu") and "## How it was measured" in summary
    assert "## Environment" in summary and 0 < doc["ceiling_fraction_of_peak"] <= 1


def test_a_pass_is_bound_by_the_roof_its_intensity_reaches():
    peak, bandwidth = 100.0, 20.0  # ridge: 5 FLOP/byte
    dense = PassTiming(seconds=1e-3, flops=int(5e7), bytes=int(1e6))  # 50 FLOP/byte, 50 GFLOP/s
    assert dense.roof(peak, bandwidth) == ("compute", pytest.approx(0.5))
    thin = PassTiming(seconds=1e-3, flops=int(2e6), bytes=int(1e7))  # 0.2 FLOP/byte, 10 GB/s
    assert thin.roof(peak, bandwidth) == ("memory", pytest.approx(0.5))
    elementwise = PassTiming(seconds=1e-3, flops=0, bytes=int(4e6))  # ReLU: no FLOPs counted, 4 GB/s
    assert elementwise.roof(peak, bandwidth) == ("memory", pytest.approx(0.2))
    assert dense.roof_seconds(peak, bandwidth) == pytest.approx(5e7 / 100e9)
    assert thin.roof_seconds(peak, bandwidth) == pytest.approx(1e7 / 20e9)


def test_channels_last_profiles_the_model_in_that_layout():
    profile = profile_layers(LayerConfig("lenet5", batch_size=4, repeats=1, warmup=0, device="cpu", threads=1, channels_last=True))
    # PyTorch's first convolution (channels_last has its fast kernel), the ReLU done by the max-pool after it.
    assert [(t.layer, t.kind) for t in profile.layers][:2] == [("conv1", "Conv2d"), ("pool1", "MaxPool2x2+ReLU")]
    assert all(t.forward.seconds > 0 and t.backward.seconds > 0 for t in profile.layers)
    assert profile_markdown(profile).startswith("# Layer by layer: lenet5, batch 4, channels_last, cpu")
    assert "model and batch in channels_last" in profile_markdown(profile)


@pytest.mark.parametrize(
    "args, words",
    [
        (("--repeats", "0"), "--repeats must be at least 1, not 0"),
        (("--batch-size", "0"), "--batch-size must be at least 1, not 0"),
        (("--warmup", "-1"), "--warmup must be 0 or more, not -1"),
        (("--threads", "0"), "--threads must be at least 1, not 0"),
        (("--device", "tpu"), "--device must be one of cpu, cuda, auto, not 'tpu'"),
        (("--model", "nope"), "unknown model 'nope'"),
    ],
)
def test_a_bad_option_is_one_line(args, words):
    assert_one_line_error(cli("profile-layers", *args), words)


def test_out_that_is_a_file_is_refused_before_timing(tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    assert_one_line_error(cli("profile-layers", *FAST, "--out", target), "not a folder")


def test_a_batch_1_step_is_timed_beside_the_step_and_reported(lenet):
    _, text, out = lenet
    doc = json.loads((out / "layers.json").read_text())  # the run that printed the text
    assert doc["batch1_step_seconds"] > 0
    assert doc["batch1_share_of_step"] == pytest.approx(doc["batch1_step_seconds"] / doc["step_seconds"])
    rest = doc["rest_fraction_of_peak"]
    if doc["step_seconds"] > doc["batch1_step_seconds"]:  # at batch 8 timing noise may leave the step no slower
        assert rest == pytest.approx(doc["train_flops_per_batch"] * 7 / 8 / (doc["step_seconds"] - doc["batch1_step_seconds"])
                                     / 1e9 / doc["peak_gflops"])
        assert "the rest of the step runs the other 7 samples at" in text
    else:
        assert rest is None and "nothing is said of the rest" in text
    assert "At batch 1 a step takes" in text and "At batch 1 a step takes" in (out / "summary.md").read_text()
    assert "The batch-1 step is the same step" in (out / "summary.md").read_text()


def test_the_batch_1_figures_follow_from_the_two_steps():
    profile = profile_layers(LayerConfig("lenet5", batch_size=4, repeats=1, warmup=0, device="cpu", threads=1))
    flops = profile.train_flops
    profile.step_seconds, profile.batch1_step_seconds, profile.peak_gflops = 4e-3, 1e-3, flops * 3 / 4 / 3e-3 / 1e9 / 0.25
    assert profile.batch1_share == pytest.approx(0.25)
    assert profile.rest_fraction_of_peak == pytest.approx(0.25)  # 3 of 4 samples' FLOPs in 3 ms, a quarter of the peak
    profile.batch1_step_seconds = 5e-3  # slower than the step: noise, nothing claimed about the rest
    assert profile.rest_fraction_of_peak is None and profile.batch1_share == pytest.approx(1.25)


def test_at_batch_1_there_is_no_second_step_to_time():
    profile = profile_layers(LayerConfig("lenet5", batch_size=1, repeats=1, warmup=0, device="cpu", threads=1))
    assert profile.batch1_step_seconds is None and profile.batch1_share is None and profile.rest_fraction_of_peak is None
    assert "At batch 1" not in profile_markdown(profile)
    assert json.loads(json.dumps(profile.to_dict()))["batch1_share_of_step"] is None
