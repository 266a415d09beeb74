#!/usr/bin/env python3
"""A/B of the training engine's speed-ups (issue #27): each change alone against the engine before them.

Usage: scripts/engine_ab.py [--data-dir DIR] [--train N] [--test N] [--rounds R] [--threads T] [--batch-size B]
                            [--clock wall|cpu]
                            [--models lenet5,custom-mlp,mlp-matched] [--variants pool-first,fast-pool,...] [--out F.json]

Every variant trains each model with bench/cpu.yaml's recipe (Adam, lr 2e-3, one-cycle; one epoch here) at batch 256
(``--batch-size``) on the first ``--train`` samples, through the engine itself (``run_cell``), and differs from ``baseline`` (the engine
before #27) in one setting. The variants take turns (A B C ... A B C ...) for ``--rounds`` rounds after one untimed
warm-up round, so a load that comes and goes hits all of them alike; the table gives, for training and evaluation
seconds, the median over rounds of each round's ratio to the baseline's (below 1: faster). Only ratios are printed:
the absolute figures depend on the machine and on what else runs on it. ``MNISTBENCH_ENGINE_OFF`` (speedups.SPEEDUPS)
turns the engine's speed-ups off for the baseline and on one at a time for the variants.

A variant marked ``same function`` must train to bit-identical weights and metrics (``torch.equal`` on every tensor of
the state dict, ``==`` on every loss and accuracy); the script exits 1 if one does not. Other variants report how far
their weights and test accuracy moved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from mnistbench.environment import environment  # noqa: E402
from mnistbench.data.datasets import Dataset, Split, load_dataset  # noqa: E402
from mnistbench.models.zoo import register_model  # noqa: E402
from mnistbench.spec.schema import CellConfig  # noqa: E402
from mnistbench.train import engine  # noqa: E402
from mnistbench.train.engine import run_cell  # noqa: E402
from mnistbench.train.speedups import SPEEDUPS  # noqa: E402

# bench/cpu.yaml's recipe, one epoch, at the batch size the issue's figures are for.
RECIPE = dict(device="cpu", epochs=1, batch_size=256, optimizer="adam", lr=2.0e-3, schedule="onecycle", seed=0)
POOL_FIRST = "lenet5-pool-relu"


@register_model(POOL_FIRST, "LeNet-5 with each max-pool before its conv's ReLU (the same function; the ReLU on 1/4 "
                "of the elements)")
def lenet5_pool_relu():
    from torch import nn

    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, kernel_size=5)), ("pool1", nn.MaxPool2d(2)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(6, 16, kernel_size=5)), ("pool2", nn.MaxPool2d(2)), ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(16 * 4 * 4, 120)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("relu4", nn.ReLU()), ("fc3", nn.Linear(84, 10)),
    ]))


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    settings: dict = field(default_factory=dict)  # CellConfig settings that differ from the baseline's
    on: tuple = ()  # the engine's SPEEDUPS turned on (the others off through MNISTBENCH_ENGINE_OFF)
    lenet: str = "lenet5"  # the model trained for LeNet-5
    same_function: bool = True  # must train to bit-identical weights and metrics
    lenet_only: bool = False  # changes nothing for an MLP


VARIANTS = {v.name: v for v in (
    Variant("baseline", "the engine before #27"),
    Variant("pool-first", "LeNet-5 max-pools before its ReLU (not kept: no gain measured)", lenet=POOL_FIRST,
            lenet_only=True),
    Variant("fast-pool", "2x2 max-pools by element-wise maxima (mnistbench/train/fastpool.py)", on=("fast-pool",),
            lenet_only=True),
    Variant("foreach", "optimizer_impl: default batched over parameters (foreach) on the CPU", on=("foreach",)),
    Variant("fast-conv1", "a one-channel first convolution's weight gradient by oneDNN's channels-last kernel "
            "(mnistbench/train/fastconv.py)", on=("fast-conv1",), lenet_only=True),
    Variant("pool-relu", "a ReLU just before a 2x2 max-pool done by the pool after pooling (fastpool.fold_relus), with "
            "the fast pool it builds on", on=("fast-pool", "pool-relu"), lenet_only=True),
    Variant("fast-adam", "Adam's update over one flat copy of the moments (mnistbench/train/fastadam.py), with the "
            "batched update it builds on", on=("foreach", "fast-adam")),
    Variant("fused-adam", "optimizer_impl: fused (one Adam kernel per parameter; rounds differently)",
            {"optimizer_impl": "fused"}, same_function=False),
    Variant("channels-last", "channels_last: true (NHWC convolutions and input)", {"channels_last": True},
            same_function=False, lenet_only=True),
    Variant("eval-batch-10000", "eval_batch_size: 10000 (one test batch; loss summed in another order)",
            {"eval_batch_size": 10000}, same_function=False),
    Variant("pool-planes", "the fast pool on its windows copied into four contiguous planes (fastpool._planes), in "
            "training", on=("fast-pool", "pool-planes"), lenet_only=True),
    Variant("five", "the first five speed-ups (the engine before pool-planes)",
            on=tuple(s for s in SPEEDUPS if s != "pool-planes")),
    Variant("new-engine", "every speed-up kept: " + ", ".join(SPEEDUPS), on=SPEEDUPS),
    Variant("pool-first+new-engine", "LeNet-5 pooling before its ReLU, with every speed-up", lenet=POOL_FIRST,
            on=SPEEDUPS, lenet_only=True),
)}


def subset(dataset: Dataset, n_train: int, n_test: int) -> Dataset:
    """The first samples of each split (a short run that still has every shape a full one has)."""
    cut = lambda s, n: Split(s.images[:n], s.labels[:n])  # noqa: E731
    return Dataset(dataset.info, dataset.folder, cut(dataset.train, n_train), cut(dataset.test, n_test), dataset.files)


def config_for(variant: Variant, model: str, threads: int | None, batch_size: int) -> CellConfig:
    name = variant.lenet if model == "lenet5" else model
    return CellConfig(model=name, threads=threads, **{**RECIPE, "batch_size": batch_size, **variant.settings})


def compare(a, b) -> dict:
    """Whether two outcomes are bit-identical, and how far they are apart when not."""
    weights = all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights) and a.weights.keys() == b.weights.keys()
    ea, eb = a.epochs[-1], b.epochs[-1]
    metrics = all(getattr(ea, m) == getattr(eb, m) for m in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"))
    diff = max((a.weights[k] - b.weights[k]).abs().max().item() for k in a.weights)
    return {"identical": weights and metrics, "weights_identical": weights, "max_weight_diff": diff,
            "test_accuracy_diff": eb.test_accuracy - ea.test_accuracy, "test_loss_diff": eb.test_loss - ea.test_loss}


def measure(models, variants, dataset, rounds: int, threads, batch_size: int) -> dict:
    """Run every (model, variant) once per round, in turn; the first round is a warm-up and is not timed."""
    times = {(m, v.name): {"train": [], "eval": []} for m in models for v in variants}
    outcomes = {}
    for r in range(rounds + 1):
        for m in models:
            for v in variants:
                if v.lenet_only and m != "lenet5":
                    continue
                os.environ["MNISTBENCH_ENGINE_OFF"] = ",".join(s for s in SPEEDUPS if s not in v.on)
                out = run_cell(config_for(v, m, threads, batch_size), dataset)
                outcomes.setdefault((m, v.name), out)
                if r:
                    times[(m, v.name)]["train"].append(sum(e.train_seconds for e in out.epochs))
                    times[(m, v.name)]["eval"].append(sum(e.eval_seconds for e in out.epochs))
        print(f"round {r}/{rounds} done" + (" (warm-up)" if r == 0 else ""), file=sys.stderr)
    rows = []
    for m in models:
        base = times[(m, "baseline")]
        for v in variants:
            if (m, v.name) not in outcomes:
                continue
            t = times[(m, v.name)]
            ratio = lambda k: statistics.median(a / b for a, b in zip(t[k], base[k]))  # noqa: E731 - paired by round
            rows.append({
                "model": m, "variant": v.name, "what": v.what, "same_function": v.same_function,
                "test_accuracy": outcomes[(m, v.name)].epochs[-1].test_accuracy,
                "train_ratio": ratio("train"), "eval_ratio": ratio("eval"),
                **compare(outcomes[(m, "baseline")], outcomes[(m, v.name)]),
            })
    return {"rows": rows}


def table(rows: list[dict]) -> str:
    lines = ["| model | variant | train time ratio | eval time ratio | bit-identical | max |Δw| | Δ test acc |",
             "|---|---|---:|---:|---|---:|---:|"]
    for r in rows:
        ident = "yes" if r["identical"] else ("NO (must be)" if r["same_function"] else "no")
        lines.append(f"| {r['model']} | {r['variant']} | {r['train_ratio']:.3f} | {r['eval_ratio']:.3f} | {ident} | "
                     f"{r['max_weight_diff']:.2e} | {r['test_accuracy_diff']:+.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("MNISTBENCH_DATA_DIR"))
    p.add_argument("--train", type=int, default=12800, help="training samples (50 steps at batch 256)")
    p.add_argument("--test", type=int, default=10000, help="test samples")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--batch-size", type=int, default=RECIPE["batch_size"],
                   help="training batch size (bench/cpu.yaml trains at 128)")
    p.add_argument("--models", default="lenet5,custom-mlp,mlp-matched")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"from {', '.join(VARIANTS)} (baseline is always run)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what the engine's clock reads: wall time, or this process's CPU time (less sensitive to other "
                        "processes on a shared machine; with --threads 1 it is the one thread's work)")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    names = ["baseline"] + [n for n in args.variants.split(",") if n and n != "baseline"]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    if args.clock == "cpu":  # the CPU is the only device timed here: no synchronisation to keep
        engine.clock = lambda device: time.process_time()
    dataset = subset(load_dataset("mnist", args.data_dir, allow_download=False), args.train, args.test)
    load = os.getloadavg()[0]
    result = measure(args.models.split(","), [VARIANTS[n] for n in names], dataset, args.rounds, args.threads,
                     args.batch_size)
    result.update(batch_size=args.batch_size, clock=args.clock, threads=args.threads or torch.get_num_threads(), train=args.train, test=args.test, rounds=args.rounds,
                  loadavg_1min=[load, os.getloadavg()[0]], torch=torch.__version__, environment=environment())
    print(table(result["rows"]))
    print(f"\n{args.rounds} timed rounds, {result['threads']} threads, {args.clock} clock, load average {load:.2f} -> {os.getloadavg()[0]:.2f} "
          f"(ratios measured on a loaded machine are noisy)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    bad = [r for r in result["rows"] if r["same_function"] and not r["identical"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
