"""oneDNN's primitives of a CPU step (`mnistbench profile-layers --onednn`): the verbose lines read, added up per step."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import assert_one_line_error
from mnistbench.cli import app
from mnistbench.train import onednn

# Lines as oneDNN 3.12 (PyTorch 2.14) prints them, with the info and template lines around them.
V3 = """onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71049cd69a3df32adcccb623b12cd7baa22)
onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2
onednn_verbose,v1,info,cpu,isa:Intel AVX2
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,memory_descriptors,attributes,auxiliary,problem_desc,exec_time
onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,jit:avx2,forward_training,src:f32:a:blocked:abcd::f0 dst:f32:ap:blocked:aBcd8b::f0,attr-scratchpad:user,alg:convolution_direct,mb8_ic1oc6_ih28oh24kh5sh1dh0ph0_iw28ow24kw5sw1dw0pw0,0.5
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:abcd::f0 dst:f32:p:blocked:Acdb8a::f0,attr-scratchpad:user,,6x1x5x5,0.002
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32:a:blocked:abcd::f0 wei:f32:ap:blocked:Acdb8a::f0 bia:undef::undef::: dst:f32:ap:blocked:aBcd8b::f0,attr-scratchpad:user,alg:convolution_direct,mb8_ic1oc6_ih28oh24kh5sh1dh0ph0_iw28ow24kw5sw1dw0pw0,0.056
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32:p:blocked:aBcd8b::f0 dst:f32::blocked:abcd::f0,attr-scratchpad:user,,8x6x24x24,0.073
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,src:f32:a:blocked:abcd::f0 wei:f32:ap:blocked:Acdb8a::f0 bia:undef::undef::: dst:f32:ap:blocked:aBcd8b::f0,attr-scratchpad:user,alg:convolution_direct,mb8_ic1oc6_ih28oh24kh5sh1dh0ph0_iw28ow24kw5sw1dw0pw0,0.044
"""
# oneDNN 2.x: no "v1,primitive" prefix, "dnnl_verbose", underscores in the descriptors.
V2 = """dnnl_verbose,info,cpu,isa:Intel AVX-512 with AVX512BW
dnnl_verbose,exec,cpu,convolution,jit:avx512_core,backward_weights,src_f32::blocked:aBcd16b:f0 wei_f32::blocked:ABcd16b16a:f0,,alg:convolution_direct,mb64_ic6oc16_ih12oh8kh5sh1dh0ph0_iw12ow8kw5sw1dw0pw0,0.25
"""


def test_the_executed_primitives_are_read_and_everything_else_is_ignored():
    primitives, isa = onednn.parse(V3 + "some other output\nonednn_verbose,v1,primitive,exec,gpu,x,y,z,a,b,c,1\n")
    assert isa == "Intel AVX2"
    assert [(p.kind, p.implementation, p.propagation) for p in primitives] == [
        ("reorder", "jit:uni", "undef"), ("convolution", "jit:avx2", "forward_training"),
        ("reorder", "jit:uni", "undef"), ("convolution", "jit:avx2", "forward_training")]  # not the create line
    conv = primitives[1]
    assert conv.formats == "src abcd · wei Acdb8a · dst aBcd8b"  # the bias is undef: left out
    assert conv.problem.startswith("mb8_ic1oc6_ih28") and conv.seconds == pytest.approx(56e-6)
    assert primitives[2].formats == "src aBcd8b · dst abcd" and primitives[2].problem == "8x6x24x24"


def test_oneDNN_2_lines_are_read_too():
    primitives, isa = onednn.parse(V2)
    assert isa == "Intel AVX-512 with AVX512BW"
    assert [(p.kind, p.implementation, p.propagation, p.seconds) for p in primitives] == [
        ("convolution", "jit:avx512_core", "backward_weights", pytest.approx(250e-6))]


def test_primitives_are_added_up_per_step_the_slowest_first():
    primitives, isa = onednn.parse(V3)
    profile = onednn.summarize(primitives, steps=2, isa=isa)
    first = profile.rows[0]
    assert (first.kind, first.calls_per_step, first.seconds_per_step) == ("convolution", 1.0, pytest.approx(50e-6))  # two calls in two steps
    assert [r.seconds_per_step for r in profile.rows] == sorted((r.seconds_per_step for r in profile.rows), reverse=True)
    assert profile.seconds_per_step() == pytest.approx(175e-6 / 2)
    assert profile.seconds_per_step("reorder") == pytest.approx(75e-6 / 2)
    text = onednn.totals(profile, step_seconds=1e-3)
    assert "oneDNN ran 9% of the step" in text and "convolutions 5%" in text and "reorders" in text and "2 steps" in text


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_a_real_convolution_is_recorded_from_the_process_output(capfd):
    x, w = torch.randn(4, 1, 28, 28), torch.randn(6, 1, 5, 5)
    torch.nn.functional.conv2d(x, w)  # the primitive made before the trace, as after the profile's timed steps
    profile = onednn.record(lambda: [torch.nn.functional.conv2d(x, w) for _ in range(3)], steps=3)
    convs = [r for r in profile.rows if r.kind == "convolution"]
    assert convs and convs[0].calls_per_step == 1 and convs[0].seconds_per_step > 0
    assert convs[0].propagation.startswith("forward") and convs[0].problem.startswith("mb4_ic1oc6")
    assert "onednn_verbose" not in capfd.readouterr().out  # caught, not printed


runner = CliRunner()
FAST = ("--repeats", "2", "--warmup", "0", "--device", "cpu", "--threads", "1", "--batch-size", "8")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_profile_layers_onednn_lists_the_primitives_of_a_step(tmp_path):
    out = tmp_path / "layers"
    result = runner.invoke(app, ["profile-layers", *FAST, "--onednn", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "oneDNN ran" in result.stdout and "| convolution " in result.stdout and "backward_weights" in result.stdout
    summary = (out / "summary.md").read_text()
    assert "## oneDNN primitives in a step" in summary and "aBcd8b channels in blocks of 8" in summary
    doc = json.loads((out / "layers.json").read_text())
    assert doc["config"]["onednn"] is True and doc["onednn"]["steps"] == 2
    kinds = {(r["kind"], r["propagation"]) for r in doc["onednn"]["rows"]}
    # LeNet-5's two convolutions, forward and both gradients (the first layer's input needs none)
    assert {("convolution", "forward_training"), ("convolution", "backward_weights"), ("convolution", "backward_data")} <= kinds


def test_without_onednn_the_profile_has_no_such_section(tmp_path):
    result = runner.invoke(app, ["profile-layers", *FAST, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["onednn"] is None and "oneDNN ran" not in result.stdout


def test_onednn_on_cuda_is_one_line():
    assert_one_line_error(runner.invoke(app, ["profile-layers", "--onednn", "--device", "cuda"]), "--onednn traces oneDNN")


def test_a_onednn_without_its_verbose_mode_is_one_clear_error(monkeypatch):
    from mnistbench.errors import MnistbenchError

    monkeypatch.setattr(torch._C._verbose, "mkldnn_set_verbose", lambda level: 0)  # what such a build answers
    with pytest.raises(MnistbenchError, match="no verbose mode"):
        onednn.record(lambda: None, steps=1)
