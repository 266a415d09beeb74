#!/usr/bin/env python3
"""A whole spec under two engines, cell by cell in turns (issue #27): how much faster `make bench-cpu` got, and
whether every result stayed the same.

Usage: scripts/bench_ab.py [SPEC] [--data-dir DIR] [--off fast-pool,...] [--old-env K=V] [--new-env K=V]
                           [--reference DIR] [--work DIR] [--out F.json]

Each cell of SPEC (default bench/cpu.yaml) is run twice with `mnistbench run SPEC --cell ID`, once by the engine
with the speed-ups in ``--off`` turned off (MNISTBENCH_ENGINE_OFF; default: all of speedups.SPEEDUPS, the engine before
#27) and once by today's, into two results folders under ``--work``; the order alternates cell by cell (old new, new
old, ...: ABBA), so a machine whose speed drifts slows both alike. Two whole runs back to back are not: on a VM whose
speed moves by a third within minutes they measure the drift as much as the engine. ``--old-env`` and ``--new-env``
(repeatable) set variables for one side only, an empty value unsets one: ``--old-env LD_PRELOAD= --new-env
LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4`` runs the new side on tcmalloc (docs/performance.md,
"The memory allocator").

Printed and written (``--out``): per cell, each engine's wall seconds per invocation (start-up, data, training,
evaluation, report) and its timed training + evaluation (the run file's epochs: what the cell itself costs inside a
whole `make bench-cpu`, which starts up once); the totals and their ratios, per model and in all; and whether the two
engines' ``summary.csv`` accuracy and loss columns are equal to the last digit (and to ``--reference``'s, when given).
Exit 1 when they are not.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnistbench.environment import environment  # noqa: E402
from mnistbench.train.speedups import SPEEDUPS  # noqa: E402

COLUMNS = ("final_test_acc_mean", "final_test_acc_std", "best_test_acc_mean", "best_test_acc_max", "final_test_loss_mean",
           "final_test_loss_std", "final_test_error_pct")


def mnistbench(*args: str, off: str | None = None, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MNISTBENCH_ENGINE_OFF", None)
    if off:
        env["MNISTBENCH_ENGINE_OFF"] = off
    for key, value in (extra or {}).items():
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "mnistbench", *args], env=env, cwd=ROOT, capture_output=True, text=True)


def cells_of(spec: str) -> list[str]:
    done = mnistbench("run", spec, "--dry-run", "--json")
    if done.returncode:
        sys.exit(f"bench_ab: {spec}: {done.stderr.strip().splitlines()[-1]}")
    return [c["id"] for c in json.loads(done.stdout)["cells"]]


def cell_seconds(folder: Path, cell: str) -> float:
    """The timed training and evaluation of a cell's run file: what it costs inside a whole run."""
    record = json.loads((folder / "runs" / f"{cell}.json").read_text())
    return sum(e["train_seconds"] + e["eval_seconds"] for e in record["epochs"])


def columns(summary: Path) -> dict:
    with summary.open() as f:
        return {row["model"]: {c: row[c] for c in COLUMNS} for row in csv.DictReader(f)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spec", nargs="?", default="bench/cpu.yaml")
    p.add_argument("--data-dir", default=os.environ.get("MNISTBENCH_DATA_DIR"))
    p.add_argument("--off", default=",".join(SPEEDUPS), help="the speed-ups the old engine runs without")
    for side in ("old", "new"):
        p.add_argument(f"--{side}-env", action="append", default=[], metavar="KEY=VALUE",
                       help=f"a variable for the {side} side only (an empty value unsets it)")
    p.add_argument("--reference", type=Path, help="a results folder whose accuracy and loss columns both must equal")
    p.add_argument("--work", type=Path, default=ROOT / "results" / "bench-ab", help="where the two results roots go")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    engines = {"old": args.off, "new": None}
    pairs = {side: getattr(args, f"{side}_env") for side in engines}
    if any("=" not in kv or kv.startswith("=") for side in pairs.values() for kv in side):
        sys.exit("bench_ab: --old-env and --new-env take KEY=VALUE")
    extra = {side: dict(kv.partition("=")[::2] for kv in kvs) for side, kvs in pairs.items()}
    cells = cells_of(args.spec)
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    wall: dict = {c: {} for c in cells}
    order = []
    for i, cell in enumerate(cells):
        for name in (("old", "new") if i % 2 == 0 else ("new", "old")):
            root = args.work / name
            start = time.perf_counter()
            done = mnistbench("run", args.spec, "--cell", cell, "--results-dir", str(root), "--no-reference", *data,
                              off=engines[name], extra=extra[name])
            wall[cell][name] = round(time.perf_counter() - start, 2)
            if done.returncode:
                sys.exit(f"bench_ab: {cell} ({name} engine) failed: {(done.stderr.strip() or done.stdout).splitlines()[-1]}")
            order.append(f"{cell} {name}")
            print(f"{cell:<24} {name}: {wall[cell][name]:7.1f} s", file=sys.stderr)
    spec_name = json.loads(mnistbench("run", args.spec, "--dry-run", "--json").stdout)["spec"]
    folders = {name: args.work / name / spec_name for name in engines}
    timed = {c: {n: round(cell_seconds(folders[n], c), 3) for n in engines} for c in cells}
    models = sorted({c.rsplit("_seed-", 1)[0] for c in cells}, key=[c.rsplit("_seed-", 1)[0] for c in cells].index)

    def totals(table: dict, keep=lambda c: True) -> dict:
        old, new = (sum(v[n] for c, v in table.items() if keep(c)) for n in ("old", "new"))
        return {"old_s": round(old, 2), "new_s": round(new, 2), "ratio": round(new / old, 3) if old else None}

    result = {
        "what": __doc__.split("\n\n")[0], "spec": args.spec, "old_engine_off": args.off, "env": extra, "order": order,
        "wall_s": wall, "timed_s": timed,
        "total_wall": totals(wall), "total_timed": totals(timed),
        "per_model_timed": {m: totals(timed, lambda c, m=m: c.rsplit("_seed-", 1)[0] == m) for m in models},
    }
    cols = {n: columns(folders[n] / "summary.csv") for n in engines}
    result["columns_equal_old_new"] = cols["old"] == cols["new"]
    if args.reference:
        result["columns_equal_reference"] = {n: cols[n] == columns(args.reference / "summary.csv") for n in engines}
    result["malloc"] = {n: sorted({json.loads(p.read_text())["environment"].get("malloc") or "unrecorded"
                                   for p in (folders[n] / "runs").glob("*.json")}) for n in engines}
    result["environment"] = environment()
    for label, key in (("wall per invocation", "total_wall"), ("timed training+evaluation", "total_timed")):
        t = result[key]
        print(f"{label}: old {t['old_s']} s, new {t['new_s']} s, ratio {t['ratio']}")
    for m, t in result["per_model_timed"].items():
        print(f"  {m}: {t['old_s']} -> {t['new_s']} s ({t['ratio']})")
    print(f"accuracy and loss columns equal (old, new): {result['columns_equal_old_new']}"
          + (f"; equal to the reference: {result['columns_equal_reference']}" if args.reference else ""))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    same = result["columns_equal_old_new"] and all(result.get("columns_equal_reference", {}).values())
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
