"""The engine's speed-ups (issue #27) change no result: the same weights and metrics, bit for bit, as before them."""

import pytest
import torch
from torch import nn

from mnistbench.data.datasets import load_dataset
from mnistbench.spec.schema import CellConfig
from mnistbench.train.engine import build_optimizer, fast_layers, run_cell
from mnistbench.train.fastconv import FirstConv2d, swap_first_convs
from mnistbench.train.speedups import SPEEDUPS
from mnistbench.train.fastpool import FoldedReLU, MaxPool2x2, fold_relus, swap_max_pools

def pools_and_grads(pool, x, grad):
    x = x.detach().clone().requires_grad_()
    out = pool(x)
    out.backward(grad)
    return out, x.grad


def with_ties(shape, seed=0):
    """Random values with blocks of equal values and signed zeros: windows whose maximum is not unique."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    x[:, :, :6, :6] = 0.5
    x[:, :, 6:10, 6:10] = -0.25
    x[:, :, -4:, :4] = 0.0
    x[:, :, -2:, -2:] = torch.tensor([[-0.0, 0.0], [0.0, -0.0]])
    return x


@pytest.mark.parametrize("shape", [(4, 6, 24, 24), (3, 16, 8, 8), (2, 1, 6, 10)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_fast_2x2_pool_gives_max_pools_values_and_gradients_bit_for_bit(shape, channels_last):
    x = with_ties(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=torch.Generator().manual_seed(1))
    want, got = pools_and_grads(nn.MaxPool2d(2), x, grad), pools_and_grads(MaxPool2x2(), x, grad)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    assert torch.equal(want[0].abs().sign(), got[0].abs().sign())  # the same zeros picked
    with torch.inference_mode():
        assert torch.equal(nn.MaxPool2d(2)(x), MaxPool2x2()(x))


@pytest.mark.parametrize("shape", [(4, 6, 24, 24), (3, 16, 8, 8), (2, 1, 6, 10), (1, 1, 2, 2)])
@pytest.mark.parametrize("relu", [False, True])
def test_the_pool_on_contiguous_planes_gives_the_strided_pools_bits_infinities_and_nans_included(shape, relu, monkeypatch):
    monkeypatch.setenv("MNISTBENCH_ENGINE_OFF", "native-pool")  # the planes, not kernels.c (tests/test_native.py)
    x = with_ties(shape)
    x[0, 0, 0, :2] = float("inf")  # a window with two equal infinite maxima
    x[-1, -1, 0, -2:] = -float("inf")
    x[-1, 0, -2, 0] = float("nan")  # max_pool2d itself may route a NaN's gradient elsewhere: both paths agree
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=torch.Generator().manual_seed(1))
    strided = pools_and_grads(MaxPool2x2(relu=relu, planes=False), x, grad)
    planes = pools_and_grads(MaxPool2x2(relu=relu, planes=True), x, grad)
    same = lambda a, b: torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)) and torch.equal(a.isnan(), b.isnan())  # noqa: E731
    assert same(strided[0], planes[0]) and same(strided[1], planes[1])
    assert torch.equal(strided[0].nan_to_num(7.0).sign(), planes[0].nan_to_num(7.0).sign())


def test_the_planes_are_copied_only_where_an_index_is_computed_from_a_contiguous_input(monkeypatch):
    import mnistbench.train.fastpool as fastpool

    monkeypatch.setenv("MNISTBENCH_ENGINE_OFF", "native-pool")  # where kernels.c's pool is not taken
    real, calls = fastpool._planes, []
    monkeypatch.setattr(fastpool, "_planes", lambda x: calls.append(tuple(x.shape)) or real(x))
    x = with_ties((2, 3, 8, 8))
    pool = MaxPool2x2()
    pool(x.clone().requires_grad_())  # training on a contiguous input: the planes
    with torch.inference_mode():
        pool(x)  # evaluation (no index): the strided views are faster
    pool(x.contiguous(memory_format=torch.channels_last).requires_grad_())  # channels-last: kept as it was
    MaxPool2x2(planes=False)(x.clone().requires_grad_())  # MNISTBENCH_ENGINE_OFF=pool-planes
    assert calls == [(2, 3, 8, 8)]


def test_engine_off_pool_planes_builds_pools_without_them(monkeypatch):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2))
    monkeypatch.setenv("MNISTBENCH_ENGINE_OFF", "pool-planes")
    fast_layers(model)
    assert type(model[1]) is MaxPool2x2 and model[1].planes is False
    monkeypatch.delenv("MNISTBENCH_ENGINE_OFF")
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2))
    fast_layers(model)
    assert model[1].planes is True


def test_an_odd_sized_input_falls_back_to_pytorchs_pool():
    x = torch.randn(2, 3, 7, 9)
    assert torch.equal(MaxPool2x2()(x), nn.MaxPool2d(2)(x))


def test_only_plain_2x2_pools_are_swapped_and_the_state_dict_is_unchanged():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.MaxPool2d(3), nn.MaxPool2d(2, padding=1),
                          nn.Sequential(nn.MaxPool2d((2, 2), stride=2)))
    keys = list(model.state_dict())
    assert swap_max_pools(model) == 2
    assert [type(m).__name__ for m in model.modules()][2:] == ["MaxPool2x2", "MaxPool2d", "MaxPool2d", "Sequential",
                                                               "MaxPool2x2"]
    assert list(model.state_dict()) == keys


def conv_relu_pool(inplace: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(inplace=inplace), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3 * 5 * 4, 4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.parametrize("inplace", [False, True])
def test_a_relu_folded_into_the_pool_after_it_gives_the_same_values_and_gradients_bit_for_bit(inplace):
    plain, fast = conv_relu_pool(inplace), conv_relu_pool(inplace)
    swap_max_pools(fast)
    keys = list(fast.state_dict())
    assert fold_relus(fast) == 1  # the ReLU after the Linear has no pool after it
    assert [type(m).__name__ for m in fast][:3] == ["Conv2d", "FoldedReLU", "MaxPool2x2"] and fast[2].relu
    assert list(fast.state_dict()) == keys
    x = with_ties((6, 2, 10, 8))  # windows with equal maxima, all-negative windows, signed zeros
    results = []
    for model in (plain, fast):
        xi = x.clone().requires_grad_()
        out = model(xi)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        results.append([out, xi.grad] + [p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    with torch.inference_mode():
        assert torch.equal(plain(x), fast(x))


def test_only_a_relu_directly_before_a_fast_pool_in_a_sequential_is_folded():
    model = nn.Sequential(nn.ReLU(), nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(3), nn.LeakyReLU(), nn.MaxPool2d(2),
                          nn.ReLU(), nn.Dropout(), nn.MaxPool2d(2))
    swap_max_pools(model)
    assert fold_relus(model) == 0 and not any(isinstance(m, FoldedReLU) for m in model.modules())
    assert fold_relus(nn.Sequential(nn.ReLU(), MaxPool2x2(), nn.ReLU(), MaxPool2x2())) == 2


def test_an_odd_sized_input_to_a_folded_pool_gets_pytorchs_pool_and_then_the_relu():
    x = torch.randn(2, 3, 7, 9)
    assert torch.equal(MaxPool2x2(relu=True)(x), nn.ReLU()(nn.MaxPool2d(2)(x)))


def conv_grads(conv, x, grad):
    conv.zero_grad(set_to_none=True)
    out = conv(x)
    out.backward(grad)
    return out, conv.weight.grad, None if conv.bias is None else conv.bias.grad


@pytest.mark.parametrize("geometry", [dict(out_channels=6, kernel_size=5), dict(out_channels=4, kernel_size=3, stride=2, padding=1),
                                      dict(out_channels=3, kernel_size=(5, 3), bias=False), dict(out_channels=8, kernel_size=5, dilation=2)])
@pytest.mark.parametrize("batch", [1, 7, 256])
def test_the_first_convs_weight_gradient_is_pytorchs_bit_for_bit(geometry, batch):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, **geometry)
    fast = nn.Conv2d(1, **geometry)
    fast.load_state_dict(conv.state_dict())
    assert swap_first_convs(fast) == 1 and type(fast) is FirstConv2d
    x = with_ties((batch, 1, 28, 28))
    out = conv(x)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    want, got = conv_grads(conv, x, grad), conv_grads(fast, x, grad)
    assert all((w is None and g is None) or torch.equal(w, g) for w, g in zip(want, got))
    assert got[1].stride() == fast.weight.stride()  # the gradient in its parameter's layout
    with torch.no_grad():
        assert torch.equal(conv(x), fast(x))


def test_where_the_fast_kernel_would_round_differently_pytorchs_gradient_is_kept(monkeypatch):
    from mnistbench.train import fastconv

    real = fastconv._gradients

    def one_ulp_off(grad, x, weight, geometry, mask, fast):
        w, b = real(grad, x, weight, geometry, mask, fast)
        return (torch.nextafter(w, torch.full_like(w, float("inf"))) if fast else w), b

    monkeypatch.setattr(fastconv, "_gradients", one_ulp_off)
    monkeypatch.setattr(fastconv, "_VERIFIED", {})
    torch.manual_seed(0)
    conv, fast = nn.Conv2d(1, 6, 5), nn.Conv2d(1, 6, 5)
    fast.load_state_dict(conv.state_dict())
    swap_first_convs(fast)
    x, grad = torch.randn(8, 1, 28, 28), torch.randn(8, 6, 24, 24)
    for _ in range(2):
        want, got = conv_grads(conv, x, grad), conv_grads(fast, x, grad)
        assert torch.equal(want[1], got[1]) and torch.equal(want[2], got[2])
    assert list(fastconv._VERIFIED.values()) == [False]  # checked once for this shape, and found different


def test_the_first_conv_falls_back_to_pytorch_where_its_input_needs_a_gradient():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3)
    fast = nn.Conv2d(1, 2, 3)
    fast.load_state_dict(conv.state_dict())
    swap_first_convs(fast)
    x = torch.randn(2, 1, 8, 8)
    grads = []
    for layer in (conv, fast):
        xi = x.clone().requires_grad_()
        layer(xi).sum().backward()
        grads.append((xi.grad, layer.weight.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_only_one_channel_plain_convs_are_swapped_and_the_state_dict_is_unchanged():
    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5), nn.Conv2d(1, 2, 3, padding_mode="reflect", padding=1),
                          nn.Conv2d(1, 4, 3, padding="same"), nn.Sequential(nn.Conv2d(1, 3, 3)))
    keys = list(model.state_dict())
    assert swap_first_convs(model) == 2
    assert [type(m).__name__ for m in model.modules()][1:] == ["FirstConv2d", "Conv2d", "Conv2d", "Conv2d", "Sequential",
                                                               "FirstConv2d"]
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "adadelta"])
def test_the_default_optimizer_update_is_the_for_loops_bit_for_bit(optimizer, monkeypatch):
    def train(impl):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
        config = CellConfig(model="mlp-matched", optimizer=optimizer, optimizer_impl=impl, lr=0.05, weight_decay=1e-3)
        opt = build_optimizer(config, model.parameters())
        for step in range(20):
            x = torch.randn(8, 5, generator=torch.Generator().manual_seed(step))
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        return model.state_dict(), opt

    (loop, _), (default, opt) = train("for-loop"), train("default")
    assert opt.param_groups[0]["foreach"] is True
    assert all(torch.equal(loop[k], default[k]) for k in loop)


def outcome(config: CellConfig, dataset, off: tuple, monkeypatch):
    monkeypatch.setenv("MNISTBENCH_ENGINE_OFF", ",".join(off))
    return run_cell(config, dataset)


def test_lenet5_trains_to_the_same_weights_and_metrics_with_and_without_the_speedups(tiny_data, monkeypatch):
    """The engine before #27 (PyTorch's max-pool, first convolution and for-loop update) against today's, on the recipe
    of bench/cpu.yaml (scripts/engine_ab.py runs the same check on real MNIST)."""
    data = load_dataset("mnist", tiny_data, allow_download=False)
    recipe = dict(device="cpu", epochs=2, batch_size=64, eval_batch_size=50, threads=1, optimizer="adam", lr=2e-3,
                  schedule="onecycle", seed=3)
    before = outcome(CellConfig(model="lenet5", **recipe), data, SPEEDUPS, monkeypatch)
    now = outcome(CellConfig(model="lenet5", **recipe), data, (), monkeypatch)
    assert before.weights.keys() == now.weights.keys()
    assert all(torch.equal(before.weights[k], now.weights[k]) for k in before.weights)
    metrics = lambda o: [(e.train_loss, e.train_accuracy, e.test_loss, e.test_accuracy, e.lr) for e in o.epochs]  # noqa: E731
    assert metrics(before) == metrics(now)


@pytest.mark.slow
def test_bench_ab_runs_a_spec_under_both_engines_in_turns_and_checks_the_columns(tiny_data, tmp_path):
    """scripts/bench_ab.py (the whole-spec A/B of docs/performance.md): ABBA order, both engines' timed seconds per
    cell, and the two summary.csv files' accuracy and loss columns equal (the speed-ups change no bit)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import write_spec

    root = Path(__file__).resolve().parent.parent
    spec = write_spec(tmp_path / "ab.yaml", "name: ab\ndataset: mnist\ndevice: cpu\nepochs: 1\nbatch_size: 64\n"
                                            "threads: 1\nmatrix:\n  model: [lenet5, mlp-matched]\n  seed: [0]\n")
    out = tmp_path / "ab.json"
    # The new side on tcmalloc where it is installed (--new-env): the same columns, and each side's allocator recorded.
    tcmalloc = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
    sides = ["--old-env", "LD_PRELOAD="] + (["--new-env", f"LD_PRELOAD={tcmalloc}"] if tcmalloc.exists() else [])
    done = subprocess.run([sys.executable, str(root / "scripts" / "bench_ab.py"), str(spec), "--data-dir", str(tiny_data),
                           "--work", str(tmp_path / "work"), "--out", str(out), *sides], capture_output=True, text=True,
                          cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["malloc"] == {"old": ["libc"], "new": ["tcmalloc" if tcmalloc.exists() else "libc"]}
    assert doc["order"] == ["lenet5_seed-0 old", "lenet5_seed-0 new", "mlp-matched_seed-0 new", "mlp-matched_seed-0 old"]
    assert doc["old_engine_off"] == ",".join(SPEEDUPS) and doc["columns_equal_old_new"] is True
    assert all(t["old"] > 0 and t["new"] > 0 for t in doc["timed_s"].values())
    assert set(doc["per_model_timed"]) == {"lenet5", "mlp-matched"} and doc["environment"]["threads"]
    assert "accuracy and loss columns equal (old, new): True" in done.stdout


@pytest.mark.parametrize("pair", ["LD_PRELOAD", "=x"])
def test_bench_ab_refuses_a_side_variable_without_a_name_and_a_value(pair):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_ab.py"
    spec = importlib.util.spec_from_file_location("bench_ab", path)
    bench_ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_ab)
    with pytest.raises(SystemExit) as refused:
        bench_ab.main(["--new-env", pair])
    assert refused.value.code == "bench_ab: --old-env and --new-env take KEY=VALUE"
