#!/usr/bin/env python3
"""Run one spec sequentially and with ``--executor ray``, check that their tables agree, and write both wall times.

Usage: scripts/scale_compare.py [SPEC] [OUT]     (``make bench-scale-cpu``: bench/scale-cpu.yaml -> results/scale-cpu;
the shipped figures are in reference/scale-cpu)

Writes ``OUT/sequential/<spec>/`` and ``OUT/ray/<spec>/`` (complete results folders, every cell
re-run with ``--force``), then ``OUT/comparison.md`` and ``OUT/comparison.json``. The figures are
wall times: run it on an otherwise idle machine. Exit 1 if the tables differ.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# summary.csv's columns that say how fast, how big or under what load a machine ran, not what was learned
# (SummaryRow's measured fields): two runs may differ in them.
from mnistbench.report.rows import MEASURED_COLUMNS

METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr")

# Ray alone, as mnistbench starts it: a local cluster's start and stop, and an empty task's round trip.
RAY_COSTS = """
import json, statistics, time
from mnistbench.run.executors import RayExecutor
t = time.perf_counter(); ex = RayExecutor(); ray = ex.connect(); start = time.perf_counter() - t
empty = ray.remote(num_cpus=1)(lambda: None)
ray.get([empty.remote() for _ in range(4)])
laps = []
for _ in range(50):
    t = time.perf_counter(); ray.get(empty.remote()); laps.append(time.perf_counter() - t)
cpus = ray.cluster_resources().get("CPU")
t = time.perf_counter(); ex.__exit__(None, None, None); stop = time.perf_counter() - t
print(json.dumps({"start_s": start, "shutdown_s": stop, "empty_task_ms_median": 1000 * statistics.median(laps),
                  "empty_task_ms_max": 1000 * max(laps), "cpus": cpus}))
"""


def run(spec: str, root: Path, *extra: str) -> float:
    """One ``mnistbench run`` as a user types it; its wall time, imports and Ray's start and stop included."""
    started = time.perf_counter()
    # --no-reference: the two engines are compared with each other, not with a shipped reference.
    subprocess.run([sys.executable, "-m", "mnistbench.cli", "run", spec, "--results-dir", str(root), "--force", "--no-reference",
                    *extra], check=True)
    return time.perf_counter() - started


def ray_costs() -> dict:
    out = subprocess.run([sys.executable, "-c", RAY_COSTS], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def records(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))}


def table(folder: Path) -> list[dict]:
    rows = csv.DictReader(io.StringIO((folder / "summary.csv").read_text()))
    return [{k: v for k, v in row.items() if k not in MEASURED_COLUMNS} for row in rows]


def differences(seq: Path, ray: Path) -> list[str]:
    """Where the two runs disagree on anything but speed: cells, keys, per-epoch metrics, table columns."""
    a, b = records(seq), records(ray)
    problems = [f"cell {c} only in one run" for c in sorted(set(a) ^ set(b))]
    for cell in sorted(set(a) & set(b)):
        if a[cell]["key"] != b[cell]["key"]:
            problems.append(f"{cell}: different keys")
        if [[e[m] for m in METRICS] for e in a[cell]["epochs"]] != [[e[m] for m in METRICS] for e in b[cell]["epochs"]]:
            problems.append(f"{cell}: different per-epoch metrics")
    if table(seq) != table(ray):
        problems.append("summary.csv differs outside the speed columns")
    return problems


def cell_seconds(folder: Path) -> float:
    """Seconds spent inside cells (cell.execute: checkpoints, training, evaluation, run file), summed."""
    return sum(r["extra"]["wall_seconds"] for r in records(folder).values())


def overheads(walls: dict, seq: Path, ray: Path, slots: float) -> dict:
    """Per cell: seconds of each run outside its cells; Ray's counts every slot it held (slots x wall)."""
    n = len(records(seq))
    inside = {"sequential": cell_seconds(seq), "ray": cell_seconds(ray)}
    return {
        "cells": n,
        "ray_slots": slots,
        "cell_seconds": {k: round(v, 2) for k, v in inside.items()},
        "outside_cells_per_cell_s": {
            "sequential": round((walls["sequential"] - inside["sequential"]) / n, 3),
            "ray": round((walls["ray"] * slots - inside["ray"]) / n, 3),
        },
    }


def comparison_markdown(spec: str, payload: dict) -> str:
    w, o, c, env = payload["wall_s"], payload["overhead"], payload["ray_alone"], payload["machine"]
    per = o["outside_cells_per_cell_s"]
    verdict = "the same" if not payload["differences"] else "DIFFERENT: " + "; ".join(payload["differences"])
    return "\n".join([
        f"# {spec}: sequential vs `--executor ray`",
        "",
        f"Measured by `scripts/scale_compare.py` on {env['cpu']} ({env['cpu_count']} CPUs), Ray {payload['ray_version']}, "
        f"torch {env['torch']}, at commit `{env['git_commit']}`.",
        "",
        f"Tables (every column but the speed ones) and per-epoch metrics of all {o['cells']} cells: **{verdict}**.",
        "",
        "| | sequential | Ray |",
        "|---|---:|---:|",
        f"| wall time of `mnistbench run` (s) | {w['sequential']:.1f} | {w['ray']:.1f} |",
        f"| cells at a time | 1 | {o['ray_slots']:g} |",
        f"| seconds inside cells, summed | {o['cell_seconds']['sequential']:.1f} | {o['cell_seconds']['ray']:.1f} |",
        f"| time outside cells per cell (s) | {per['sequential']:.2f} | {per['ray']:.2f} |",
        "",
        f"Ray alone: a local cluster starts in {c['start_s']:.1f} s and stops in {c['shutdown_s']:.1f} s; an empty task "
        f"takes {c['empty_task_ms_median']:.1f} ms there and back (median of 50, max {c['empty_task_ms_max']:.1f} ms).",
        "",
        "Time outside cells per cell: (wall x cells at a time - seconds inside cells) / cells, i.e. every slot-second "
        "not spent in `cell.execute` (imports, data loading, Ray's start, worker start-up, scheduling, the report, "
        "slots idle at the end), shared out over the cells.",
        "",
    ])


def main(spec: str = "bench/scale-cpu.yaml", out: str = "results/scale-cpu") -> int:
    from mnistbench.environment import environment
    from mnistbench.spec.schema import load_spec

    import ray

    name, root = load_spec(spec).name, Path(out)
    walls = {"sequential": run(spec, root / "sequential"), "ray": run(spec, root / "ray", "--executor", "ray")}
    costs = ray_costs()
    seq, ray_folder = root / "sequential" / name, root / "ray" / name
    cpus_per_cell = load_spec(spec).resources.cpus or 1
    env = environment()
    payload = {
        "spec": spec,
        "wall_s": {k: round(v, 2) for k, v in walls.items()},
        "overhead": overheads(walls, seq, ray_folder, costs["cpus"] // cpus_per_cell),
        "ray_alone": {k: round(v, 3) for k, v in costs.items()},
        "ray_version": ray.__version__,
        "machine": {k: env.get(k) for k in ("cpu", "cpu_count", "torch", "git_commit", "host")},
        "differences": differences(seq, ray_folder),
    }
    (root / "comparison.json").write_text(json.dumps(payload, indent=2) + "\n")
    (root / "comparison.md").write_text(comparison_markdown(name, payload))
    print((root / "comparison.md").read_text())
    return 1 if payload["differences"] else 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.exit(main(*sys.argv[1:3]))
