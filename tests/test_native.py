"""The engine's C kernel for the max-pool (train/kernels.c, train/native.py; issue #27): PyTorch's bits, or PyTorch's
own paths where it cannot be had."""

import shutil

import pytest
import torch

from mnistbench.run.cell import cell_environment
from mnistbench.train import fastpool, native
from mnistbench.train.engine import CellOutcome
from mnistbench.train.fastadam import FlatAdam
from mnistbench.train.fastpool import MaxPool2x2


def bits(t):
    return t.view(torch.int32)  # torch.equal holds -0 == +0 and NaN != NaN


@pytest.fixture(scope="module")
def kernels():
    """The kernels as the engine loads them. On an x86-64 machine with AVX2 and a C compiler (this suite's machines)
    they must load; elsewhere the tests that need them are skipped and the fallback tests below still run."""
    if shutil.which("cc") is None or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("no C compiler or no AVX2 here: the engine keeps PyTorch's paths (tested below)")
    loaded = native.load()
    assert loaded.lib is not None, loaded.reason
    return loaded


@pytest.fixture
def fresh_load(monkeypatch):
    """native.load() forgotten before and after the test, with the pool's probes."""
    native.load.cache_clear()
    monkeypatch.setattr(fastpool, "_NATIVE_VERIFIED", {})
    yield
    native.load.cache_clear()


@pytest.mark.parametrize("shape", [(4, 6, 24, 24), (3, 16, 8, 8), (2, 1, 6, 10), (1, 1, 2, 2), (3, 2, 4, 6)])
@pytest.mark.parametrize("relu", [False, True])
def test_the_c_pool_gives_max_pool2ds_bits_zeros_signs_infinities_and_nans_included(kernels, shape, relu):
    gen = torch.Generator().manual_seed(5)
    x = fastpool._probe_values(shape, gen)  # ties, ±0, ±inf, NaN
    grad = torch.randn((*shape[:2], shape[2] // 2, shape[3] // 2), generator=gen)
    grad.view(-1)[::5] = -0.0
    want_out, want_grad = fastpool._reference(x, grad, relu)  # PyTorch's max_pool2d (then clamp_min) and backward
    out, choice = kernels.pool_forward(x, relu)
    assert torch.equal(bits(out), bits(want_out))
    assert torch.equal(bits(kernels.pool_backward(grad, out, choice, relu)), bits(want_grad))
    assert fastpool.native_verified(shape, relu)


def test_the_c_pool_keeps_a_zeros_sign_where_the_element_wise_maximum_does_not(kernels, monkeypatch):
    # max_pool2d keeps a window's first maximum: -0 before +0 gives -0; torch.maximum's vectorized kernel gives +0.
    x = torch.zeros(1, 4, 2, 64)
    x[..., 0::2] = -0.0  # every window: -0, +0 / +0, +0
    want = torch.nn.functional.max_pool2d(x, 2)
    assert torch.signbit(want).all()
    assert torch.equal(bits(MaxPool2x2()(x.clone().requires_grad_())), bits(want))
    monkeypatch.setenv("MNISTBENCH_ENGINE_OFF", "native-pool")
    assert not torch.signbit(MaxPool2x2()(x.clone().requires_grad_())).any()  # the planes' maximum: +0 here


def test_training_takes_the_c_pool_only_on_a_contiguous_float32_input_with_an_index_to_keep(kernels, monkeypatch):
    calls = []
    real = native.Native.pool_forward
    monkeypatch.setattr(fastpool, "_NATIVE_VERIFIED", {})
    monkeypatch.setattr(native.Native, "pool_forward", lambda self, x, relu: calls.append(tuple(x.shape)) or real(self, x, relu))
    x = torch.randn(2, 3, 8, 8)
    pool = MaxPool2x2(relu=True)
    out = pool(x.clone().requires_grad_())  # training: kernels.c
    out.sum().backward()
    with torch.inference_mode():
        pool(x)  # evaluation: no index to keep
    pool(x.contiguous(memory_format=torch.channels_last).requires_grad_())  # not contiguous NCHW
    pool(x.double().requires_grad_())  # not float32
    monkeypatch.setenv("MNISTBENCH_ENGINE_OFF", "native-pool")
    pool(x.clone().requires_grad_())
    assert calls == [(2, 3, 8, 8), (2, 3, 8, 8)]  # the probe's, once for the shape, and the training pass's


def test_where_the_probe_shows_other_bits_the_planes_pool_is_kept(kernels, monkeypatch):
    monkeypatch.setattr(fastpool, "_NATIVE_VERIFIED", {})
    real = native.Native.pool_forward

    def off_by_one_ulp(self, x, relu):
        out, choice = real(self, x, relu)
        return torch.nextafter(out, torch.full_like(out, float("inf"))), choice

    monkeypatch.setattr(native.Native, "pool_forward", off_by_one_ulp)
    x = torch.randn(2, 3, 8, 8)
    got = MaxPool2x2()(x.clone().requires_grad_())
    assert fastpool._NATIVE_VERIFIED == {((2, 3, 8, 8), False): False}
    assert torch.equal(got, torch.nn.functional.max_pool2d(x, 2))


def test_without_a_c_compiler_the_engine_keeps_pytorchs_paths_and_says_why(fresh_load, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    loaded = native.load()
    assert loaded.lib is None and loaded.reason == "no C compiler (/nonexistent/cc) on the PATH"
    assert native.status() == "not used: no C compiler (/nonexistent/cc) on the PATH"
    x = fastpool._probe_values((2, 3, 8, 8), torch.Generator().manual_seed(1)).nan_to_num(0.0)
    assert torch.equal(MaxPool2x2()(x.clone().requires_grad_()), torch.nn.functional.max_pool2d(x, 2))
    want, got = [torch.ones(7)], [torch.ones(7)]
    for params, opt in ((want, torch.optim.Adam(want, foreach=True)), (got, FlatAdam(got))):
        params[0].grad = torch.linspace(-1, 1, 7)
        opt.step()
    assert torch.equal(want[0], got[0])


def test_a_compiler_that_fails_is_one_line_and_no_kernels(fresh_load, monkeypatch, tmp_path):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'fake cc 1.0'\n[ \"$1\" = --version ] && exit 0\necho 'kernels.c:1: error: no' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loaded = native.load()
    assert loaded.lib is None
    assert loaded.reason == f"{fake} failed to build kernels.c: kernels.c:1: error: no"
    assert list((tmp_path / "cache" / "mnistbench" / "kernels").iterdir()) == []  # no half-written library left


def test_the_library_is_built_once_per_source_flags_and_compiler(kernels, tmp_path):
    first = native.build("cc", tmp_path)
    stamp = first.stat().st_mtime_ns
    assert native.build("cc", tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_a_cpu_cells_environment_says_whether_the_kernels_were_used(monkeypatch):
    env = cell_environment(CellOutcome([], "cpu", 1))
    assert env["native_kernels"] == native.status()
    monkeypatch.setenv("MNISTBENCH_ENGINE_OFF", "native-pool")
    assert cell_environment(CellOutcome([], "cpu", 1))["native_kernels"] == "off (MNISTBENCH_ENGINE_OFF)"
    assert "native_kernels" not in cell_environment(CellOutcome([], "cuda", 1))
