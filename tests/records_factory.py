"""Synthetic run records with chosen accuracies and losses, for report and plot tests (no training)."""

from __future__ import annotations

import math
from pathlib import Path

from mnistbench.results import EpochMetrics, RunRecord, data_identity
from mnistbench.spec.keys import cell_key

PARAMETERS = {"lenet5": 44_426, "custom-mlp": 469_160, "mlp-matched": 44_350}
SPEED = {"lenet5": 2_000.0, "custom-mlp": 2_300.0, "mlp-matched": 27_000.0}  # train samples/s

ENVIRONMENT = {
    "mnistbench": "0.1.0",
    "git_commit": "0123456789ab",
    "python": "3.11.7",
    "torch": "2.4.0",
    "torch_cuda": None,
    "cudnn": None,
    "os": "Linux 6.1",
    "machine": "x86_64",
    "cpu": "Test CPU 9000",
    "cpu_count": 4,
    "gpu": None,
    "container": None,
    "threads": 2,
}

DATA = {
    "dataset": "mnist",
    "identity": data_identity(["ab" * 32] * 4),
    "official": True,
    "files": [
        {"role": role, "file": f"{name}.gz", "sha256": "ab" * 32, "md5": "cd" * 16, "official": True}
        for role, name in [
            ("train-images", "train-images-idx3-ubyte"),
            ("train-labels", "train-labels-idx1-ubyte"),
            ("test-images", "t10k-images-idx3-ubyte"),
            ("test-labels", "t10k-labels-idx1-ubyte"),
        ]
    ],
}


def make_record(
    model: str = "lenet5",
    seed: int = 0,
    final_accuracy: float = 0.99,
    final_loss: float = 0.03,
    epochs: int = 5,
    *,
    test_accuracy: list[float] | None = None,
    test_loss: list[float] | None = None,
    train_samples_per_s: list[float] | None = None,
    status: str = "finished",
    spec: str = "demo",
    device: str = "cpu",
    environment: dict | None = None,
    **config,
) -> RunRecord:
    """A record whose test accuracy climbs to ``final_accuracy`` and whose test loss falls to ``final_loss``.

    Pass ``test_accuracy``/``test_loss``/``train_samples_per_s`` (one value per epoch) to set every
    epoch exactly. Training curves run a little above the test curves (the model over-fits slightly).
    """
    n = len(test_accuracy) if test_accuracy is not None else epochs
    # Default curves approach the final value geometrically, from 5x the final error and loss.
    decay = [1 + 4 * (0.4**k - 0.4 ** (n - 1)) for k in range(n)]
    test_accuracy = list(test_accuracy) if test_accuracy is not None else [1 - (1 - final_accuracy) * d for d in decay]
    test_loss = list(test_loss) if test_loss is not None else [final_loss * d for d in decay]
    speed = train_samples_per_s or [SPEED.get(model, 5_000.0) * (0.6 if k == 0 else 1 + 0.01 * ((k + seed) % 3)) for k in range(n)]
    if status == "diverged":
        test_loss = list(test_loss[:-1]) + [math.nan]
    metrics = [
        EpochMetrics(
            epoch=k + 1,
            train_loss=0.8 * test_loss[k] if math.isfinite(test_loss[k]) else math.nan,
            train_accuracy=min(1.0, test_accuracy[k] + 0.004 * k / max(n - 1, 1)),
            test_loss=test_loss[k],
            test_accuracy=test_accuracy[k],
            train_seconds=60_000 / speed[k],
            eval_seconds=0.5,
            train_samples_per_s=speed[k],
            eval_samples_per_s=20_000.0,
            lr=1e-3,
        )
        for k in range(n)
    ]
    cfg = {
        "model": model,
        "seed": seed,
        "dataset": "mnist",
        "device": device,
        "epochs": n,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 2e-3,
        "schedule": "onecycle",
        "target_accuracy": None,
        **config,
    }
    return RunRecord(
        spec=spec,
        cell=f"{model}_seed-{seed}" + "".join(f"_{k}-{v}" for k, v in sorted(config.items())),
        config=cfg,
        config_hash=cell_key(cfg, ["ab" * 32] * 4),
        key=cell_key(cfg, ["ab" * 32] * 4),
        status=status,
        model={"name": model, "parameters": PARAMETERS.get(model, 1000), "forward_flops": 1, "train_flops": 3},
        data=DATA,
        epochs=metrics,
        environment=dict(environment or ENVIRONMENT),
        started="2024-01-01T00:00:00+00:00",
        finished="2024-01-01T00:01:00+00:00",
        device=device,
        note="loss became nan in epoch %d" % n if status == "diverged" else "",
    )


def write_records(results_dir: Path, records: list[RunRecord]) -> Path:
    """Save records as ``results_dir/runs/<cell>.json``, as ``mnistbench run`` does; return ``results_dir``."""
    for r in records:
        r.save(Path(results_dir) / "runs")
    return Path(results_dir)


def report_of(records: list[RunRecord], results_dir: Path):
    """The report ``mnistbench report`` builds from these records once saved as run files in ``results_dir``."""
    from mnistbench import build_report

    return build_report(write_records(results_dir, records))


def comparison(results_dir: Path, seeds: int = 3, epochs: int = 5) -> Path:
    """The founding comparison with made-up numbers, ``final_accuracy(model, seed)`` and ``final_loss(model, seed)``."""
    records = [
        make_record(model, s, final_accuracy(model, s, seeds), final_loss(model, s, seeds), epochs)
        for model in ("lenet5", "custom-mlp", "mlp-matched")
        for s in range(seeds)
    ]
    return write_records(results_dir, records)


BASE_ACCURACY = {"lenet5": 0.990, "custom-mlp": 0.980, "mlp-matched": 0.970}


def final_accuracy(model: str, seed: int, seeds: int) -> float:
    """Seeds spread 0.1 points apart around the model's base: 98.9, 99.0, 99.1 for lenet5 with 3 seeds."""
    return BASE_ACCURACY[model] + 0.001 * (seed - (seeds - 1) / 2)


def final_loss(model: str, seed: int, seeds: int) -> float:
    return 0.03 + (1 - BASE_ACCURACY[model]) + 0.002 * (seed - (seeds - 1) / 2)
