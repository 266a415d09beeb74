"""Summary tables built from run records alone: ``summary.csv`` and ``summary.md``."""

from __future__ import annotations

import csv
import io
import itertools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from .errors import MnistbenchError
from .files import write_atomic
from .models import MODELS
from .results import RunRecord, load_records
from .stats import Estimate, estimate, welch

# MNIST test error reported by LeCun, Bottou, Bengio & Haffner (1998), "Gradient-Based
# Learning Applied to Document Recognition", for the models that have a counterpart there.
PAPER_TEST_ERROR_PCT = {"lenet5": 0.95, "custom-mlp": 2.95}


@dataclass
class Group:
    """The records of one model and configuration, across seeds."""

    label: str
    records: list[RunRecord]

    @property
    def model(self) -> str:
        return self.records[0].config["model"]

    @property
    def finished(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == "finished"]

    def final_accuracy(self) -> Estimate | None:
        done = self.finished
        return estimate([r.final.test_accuracy for r in done]) if done else None

    def best_accuracy(self) -> Estimate | None:
        done = self.finished
        return estimate([max(e.test_accuracy for e in r.epochs) for r in done]) if done else None

    def final_loss(self) -> Estimate | None:
        done = self.finished
        return estimate([r.final.test_loss for r in done]) if done else None

    def steady_epochs(self, attr: str) -> list[float]:
        """Per-epoch values with each run's first (warm-up) epoch left out, unless a run has only one."""
        out = []
        for r in self.records:
            epochs = r.epochs[1:] if len(r.epochs) > 1 else r.epochs
            out += [getattr(e, attr) for e in epochs]
        return out


def group_records(records: list[RunRecord]) -> list[Group]:
    """Group by every setting but the seed; label by the model and the settings that vary.

    Groups come in the model registry's order (lenet5, custom-mlp, mlp-matched), then by
    the varying settings; records within a group by seed. File names play no part.
    """
    def key(r: RunRecord) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in r.config.items() if k != "seed"))

    varying = sorted(
        k
        for k in (records[0].config if records else {})
        if k not in ("model", "seed") and len({repr(r.config.get(k)) for r in records}) > 1
    )
    groups: dict[tuple, Group] = {}
    for r in records:
        label = ", ".join([r.config["model"]] + [f"{k}={r.config.get(k)}" for k in varying])
        groups.setdefault(key(r), Group(label, [])).records.append(r)
    for g in groups.values():
        g.records.sort(key=lambda r: (_sortable(r.config.get("seed")), r.cell))
    names = MODELS.names()

    def order(g: Group) -> tuple:
        model = g.model
        rank = names.index(model) if model in names else len(names)
        return (rank, model, tuple(_sortable(g.records[0].config.get(k)) for k in varying))

    return sorted(groups.values(), key=order)


def _sortable(v: object) -> tuple:
    # Numbers compare as numbers (lr 0.001 < 0.01 < 0.1), everything else as text.
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, repr(v))


def describe_devices(records: list[RunRecord]) -> str:
    """The hardware the runs measured: GPU names for CUDA runs, the CPU model otherwise."""
    words = []
    for device in sorted({r.device for r in records}):
        env = next(r.environment for r in records if r.device == device)
        if device.startswith("cuda") and env.get("gpu"):
            words.append(env["gpu"]["name"])
        else:
            threads = f", {env['threads']} threads" if env.get("threads") else ""
            words.append(f"{env.get('cpu') or 'unknown CPU'}{threads}")
    return ", ".join(dict.fromkeys(words))


def seeds_words(groups: list[Group]) -> str:
    """``3 seeds`` or ``2-3 seeds`` when groups differ."""
    counts = sorted({len(g.records) for g in groups})
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{n} seed{'' if counts == [1] else 's'}"


def _pct(x: float | None, digits: int = 2) -> str:
    return "" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}"


def _mean_std(e: Estimate | None, scale: float = 100, digits: int = 2) -> str:
    if e is None:
        return "n/a"
    if e.n < 2:  # one seed: a value, not a spread
        return f"{scale * e.mean:.{digits}f} (one seed)"
    return f"{scale * e.mean:.{digits}f} ± {scale * e.std:.{digits}f}"


def _ci(e: Estimate | None, scale: float = 100, digits: int = 2) -> str:
    if e is None or math.isnan(e.ci_low):
        return "n/a"
    return f"[{scale * e.ci_low:.{digits}f}, {scale * e.ci_high:.{digits}f}]"


def _median_range(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def _median_reached(times: list[float | None]) -> float | None:
    """Median over seeds (of seconds or epochs to target), a seed that never reached it counting as infinitely slow."""
    if not times:
        return None
    m = statistics.median([math.inf if t is None else t for t in times])
    return None if math.isinf(m) or math.isnan(m) else m


def summary_rows(groups: list[Group]) -> list[dict]:
    """One row of plain numbers per group: the data behind both tables."""
    rows = []
    for g in groups:
        first = g.records[0]
        acc, best, loss = g.final_accuracy(), g.best_accuracy(), g.final_loss()
        train_med, train_min, train_max = _median_range(g.steady_epochs("train_samples_per_s"))
        eval_med, _, _ = _median_range(g.steady_epochs("eval_samples_per_s"))
        epoch_s, _, _ = _median_range(g.steady_epochs("train_seconds"))
        ttt = [r.time_to_target_s for r in g.records if r.config.get("target_accuracy") is not None]
        rows.append(
            {
                "model": g.label,
                "parameters": first.model["parameters"],
                "epochs": first.config["epochs"],
                "seeds": len(g.records),
                "diverged": len(g.records) - len(g.finished),
                "final_test_acc_mean": acc.mean if acc else None,
                "final_test_acc_std": acc.std if acc else None,
                "final_test_acc_ci95_low": acc.ci_low if acc else None,
                "final_test_acc_ci95_high": acc.ci_high if acc else None,
                "best_test_acc_mean": best.mean if best else None,
                "best_test_acc_max": max(max(e.test_accuracy for e in r.epochs) for r in g.finished) if g.finished else None,
                "final_test_loss_mean": loss.mean if loss else None,
                "final_test_loss_std": loss.std if loss else None,
                "final_test_error_pct": 100 * (1 - acc.mean) if acc else None,
                "paper_test_error_pct": PAPER_TEST_ERROR_PCT.get(g.model),
                "train_samples_per_s_median": train_med,
                "train_samples_per_s_min": train_min,
                "train_samples_per_s_max": train_max,
                "eval_samples_per_s_median": eval_med,
                "seconds_per_epoch_median": epoch_s,
                "target_accuracy": first.config.get("target_accuracy"),
                "time_to_target_s_median": _median_reached(ttt),
                "epochs_to_target_median": _median_reached(
                    [r.epochs_to_target for r in g.records if r.config.get("target_accuracy") is not None]
                ),
                "target_reached": f"{sum(t is not None for t in ttt)}/{len(ttt)}" if ttt else None,
                **_roofline_columns(g),
            }
        )
    return rows


def _roofline_columns(g: Group) -> dict:
    """Median over seeds of the achieved GFLOP/s the runner stored with each run (absent in old run files)."""
    rates = [r.extra["roofline"] for r in g.records if "roofline" in r.extra]
    if not rates:
        return {}
    med = lambda k: statistics.median(x[k] for x in rates)  # noqa: E731
    return {
        "train_flops_per_sample": g.records[0].model.get("train_flops"),
        "peak_gflops": med("peak_gflops"),
        "train_gflops": med("train_gflops"),
        "train_fraction_of_peak": med("train_fraction_of_peak"),
        "eval_gflops": med("eval_gflops"),
        "eval_fraction_of_peak": med("eval_fraction_of_peak"),
    }


def speedups(groups: list[Group], rows: list[dict]) -> list[list[str]]:
    """Training throughput of each variant against its model's baseline, where they differ in one setting.

    The baseline is the model's group that comes first in the spec (the first matrix value, or
    the first entry of ``variants``, normally the default).
    """
    def position(g: Group) -> int:
        return min(r.extra.get("cell_index", i) for i, r in enumerate(g.records))

    out = []
    by_model: dict[str, list[tuple[Group, dict]]] = {}
    for g, row in zip(groups, rows):
        by_model.setdefault(g.model, []).append((g, row))
    for model, members in by_model.items():
        base, base_row = min(members, key=lambda m: position(m[0]))
        base_cfg = base.records[0].config
        for g, row in members:
            cfg = g.records[0].config
            diff = [k for k in cfg if k != "seed" and cfg.get(k) != base_cfg.get(k)]
            if g is base or len(diff) != 1 or not base_row["train_samples_per_s_median"] or not row["train_samples_per_s_median"]:
                continue
            ratio = row["train_samples_per_s_median"] / base_row["train_samples_per_s_median"]
            out.append([model, diff[0], f"{base_cfg.get(diff[0])} → {cfg.get(diff[0])}", f"{ratio:.2f}×",
                        _fmt_num(base_row["train_samples_per_s_median"]), _fmt_num(row["train_samples_per_s_median"])])
    return out


def harness_overhead(records: list[RunRecord]) -> tuple[float, float] | None:
    """Summed wall time of the cells and the part of it spent outside measured training and evaluation."""
    walls = [(r.extra["wall_seconds"], r.extra["measured_seconds"]) for r in records if "measured_seconds" in r.extra]
    if not walls:
        return None
    wall = sum(w for w, _ in walls)
    return wall, max(0.0, wall - sum(m for _, m in walls)) / wall


def _fmt_num(x, digits=0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _table(rows: list[list], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _steady_note(groups: list[Group]) -> str:
    if all(len(r.epochs) > 1 for g in groups for r in g.records):
        return "first (warm-up) epoch of each run excluded"
    return "first (warm-up) epoch of each run excluded, except in runs of a single epoch"


FIGURE_TITLES = {
    "learning_curves.png": "Learning curves",
    "final_error.png": "Final test error",
    "throughput.png": "Training throughput",
}


def markdown(spec: str, records: list[RunRecord], figures: list[str] | None = None) -> str:
    """The human-readable summary: headline table, statistics, pairwise comparisons, figures, provenance.

    ``figures`` are file names (next to ``summary.md``) of the plots written with it; they are embedded.
    """
    groups = group_records(records)
    rows = summary_rows(groups)
    figures = list(figures or [])
    env = records[0].environment
    devices = sorted({r.device for r in records})
    steady = _steady_note(groups)
    lines = [f"# {spec}: summary", ""]
    lines.append(
        f"{len(records)} runs on {', '.join(devices)} ({describe_devices(records)}); "
        f"dataset {records[0].config['dataset']}; torch {env.get('torch')}, mnistbench {env.get('mnistbench')} "
        f"(commit {env.get('git_commit') or 'unknown'})."
    )
    diverged = [r for r in records if r.status != "finished"]
    if diverged:
        lines += [
            "",
            "Diverged runs, left out of every accuracy and loss figure: "
            + ", ".join(f"{r.cell} ({r.note or r.status})" for r in diverged)
            + ".",
        ]
    lines.append("")
    headline = [
        [
            r["model"],
            f"{r['parameters']:,}",
            r["epochs"],
            r["seeds"] if not r["diverged"] else f"{r['seeds']} ({r['diverged']} diverged)",
            _mean_std(g.final_accuracy()),
            _pct(r["best_test_acc_max"]) or "n/a",
            "n/a" if r["final_test_loss_mean"] is None else f"{r['final_test_loss_mean']:.4f}",
            _fmt_num(r["train_samples_per_s_median"]),
            _fmt_num(r["eval_samples_per_s_median"]),
            _fmt_num(r["seconds_per_epoch_median"], 2),
        ]
        for r, g in zip(rows, groups)
    ]
    lines.append(
        _table(
            headline,
            [
                "model",
                "parameters",
                "epochs",
                "seeds",
                "final test acc % (mean ± std)",
                "best test acc %",
                "final test loss",
                "train samples/s",
                "eval samples/s",
                "s/epoch",
            ],
        )
    )
    lines += ["", f"Throughput and s/epoch: median over epochs and seeds, {steady}.", ""]
    if "learning_curves.png" in figures:
        lines += ["![Learning curves: test and train accuracy and loss per epoch](learning_curves.png)", ""]

    lines += ["## Across seeds (95% Student-t intervals)", ""]
    stat_rows = []
    for r, g in zip(rows, groups):
        paper = r["paper_test_error_pct"]
        stat_rows.append(
            [
                r["model"],
                len(g.finished),
                _mean_std(g.final_accuracy()),
                _ci(g.final_accuracy()),
                _mean_std(g.best_accuracy()),
                _ci(g.best_accuracy()),
                _mean_std(g.final_loss(), 1, 4),
                _ci(g.final_loss(), 1, 4),
                "n/a" if r["final_test_error_pct"] is None else f"{r['final_test_error_pct']:.2f}",
                "—" if paper is None else f"{paper:.2f}",
                "n/a"
                if r["train_samples_per_s_median"] is None
                else f"{_fmt_num(r['train_samples_per_s_median'])} [{_fmt_num(r['train_samples_per_s_min'])}–{_fmt_num(r['train_samples_per_s_max'])}]",
            ]
        )
    lines.append(
        _table(
            stat_rows,
            [
                "model",
                "n",
                "final acc %",
                "final acc 95% CI",
                "best acc %",
                "best acc 95% CI",
                "final loss",
                "final loss 95% CI",
                "test error %",
                "reference error % (LeCun et al. 1998)",
                "train samples/s median [min–max]",
            ],
        )
    )
    lines += [
        "",
        "n: finished (not diverged) seeds. Accuracy and loss: mean ± sample standard deviation over seeds, "
        "95% interval of the mean = mean ± t(0.975, n−1)·s/√n (n/a for one seed). Best acc: each seed's best "
        "epoch, an optimistic figure since it picks an epoch by its test score. Test error = 100 − mean final acc. "
        "Reference error: the test error LeCun, Bottou, Bengio & Haffner (1998) report for LeNet-5 and for the "
        "784-500-150-10 network, with a different recipe (see the README, section 'The 1998 reference errors'). "
        f"Train samples/s: median and range over epochs and seeds, {steady}.",
        "",
    ]

    if len(groups) > 1:
        lines += ["## Pairwise comparison of final test accuracy (Welch's t-test)", ""]
        comp_rows = []
        for a, b in itertools.combinations(groups, 2):
            if not a.finished or not b.finished:
                continue
            c = welch([r.final.test_accuracy for r in a.finished], [r.final.test_accuracy for r in b.finished])
            ci = "n/a" if math.isnan(c.ci_low) else f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]"
            p = "n/a" if math.isnan(c.p_value) else f"{c.p_value:.3g}"
            comp_rows.append([a.label, b.label, f"{len(a.finished)} / {len(b.finished)}", f"{100 * c.difference:+.2f}", ci, p])
        lines.append(_table(comp_rows, ["model A", "model B", "n A / n B", "A − B (points)", "95% CI", "p-value"]))
        lines += [
            "",
            "A − B: difference of mean final test accuracy in percentage points, with its 95% Welch–Satterthwaite "
            "interval and two-sided p-value (n/a with fewer than two seeds a side). With few seeds intervals are "
            "wide; p-values are not corrected for the number of comparisons.",
            "",
        ]

    ttt_rows = [r for r in rows if r["target_accuracy"] is not None]
    if ttt_rows:
        lines += ["## Time to accuracy (training time only, evaluation excluded)", ""]
        lines.append(
            _table(
                [
                    [
                        r["model"],
                        _pct(r["target_accuracy"]),
                        r["target_reached"],
                        "not reached" if r["time_to_target_s_median"] is None else f"{r['time_to_target_s_median']:.2f}",
                        "not reached" if r["epochs_to_target_median"] is None else f"{r['epochs_to_target_median']:.2f}",
                    ]
                    for r in ttt_rows
                ],
                ["model", "target acc %", "seeds reaching it", "median s to target", "median epochs to target"],
            )
        )
        lines += [
            "",
            "A seed that never reached the target counts as slower than every seed that did. Without "
            "`target_eval_every` the accuracy is checked after each epoch, so times are whole epochs.",
            "",
        ]

    if any("train_gflops" in r for r in rows):
        lines += ["## Speed and roofline", ""]
        lines.append(
            _table(
                [
                    [
                        r["model"],
                        _fmt_num(r["train_samples_per_s_median"]),
                        _fmt_num(r.get("train_flops_per_sample")),
                        _fmt_num(r.get("peak_gflops"), 1),
                        _fmt_num(r.get("train_gflops"), 1),
                        _pct(r.get("train_fraction_of_peak"), 1),
                        _fmt_num(r.get("eval_gflops"), 1),
                        _pct(r.get("eval_fraction_of_peak"), 1),
                    ]
                    for r in rows
                ],
                ["model", "train samples/s", "train FLOPs/sample", "peak GFLOP/s", "train GFLOP/s", "% of peak", "eval GFLOP/s", "% of peak"],
            )
        )
        lines += [
            "",
            "Peak: a float32 matrix multiply timed on the same device with the same thread count during the run "
            "(best of 5; 2048² on the CPU, 8192² on a GPU). FLOPs per sample are counted by torch.utils.flop_counter "
            "(forward + backward for training); GFLOP/s = FLOPs/sample × median samples/s (first epoch excluded). "
            "Reduced precision (bf16) can exceed the float32 peak.",
            "",
        ]
    ratio_rows = speedups(groups, rows)
    if ratio_rows:
        lines += ["### Speed-ups between settings", ""]
        lines.append(_table(ratio_rows, ["model", "setting", "baseline → variant", "train throughput ratio",
                                         "baseline samples/s", "variant samples/s"]))
        lines += ["", "Ratio > 1: the variant trains faster than the model's baseline (its first cell in the spec).", ""]
    overhead = harness_overhead(records)
    if overhead:
        wall, fraction = overhead
        lines += [
            f"Harness overhead: {100 * fraction:.1f}% of the cells' {wall:,.1f} s wall time was spent outside the "
            "timed training and evaluation (data preparation, model set-up, checkpoints, peak calibration).",
            "",
        ]

    others = [f for f in figures if f.endswith(".png") and f != "learning_curves.png"]
    if others:
        lines += ["## Figures", ""]
        for f in others:
            lines += [f"![{FIGURE_TITLES.get(f, f)}]({f})", ""]
        lines += ["Each figure is also written as SVG next to the PNG.", ""]

    lines += ["## Data", ""]
    for f in records[0].data["files"]:
        flag = {True: "official", False: "NOT the official file", None: "unverified (raw file)"}[f["official"]]
        lines.append(f"- `{f['file']}` — {flag}, sha256 `{f['sha256'][:16]}…`")
    if not all(f["official"] for f in records[0].data["files"]):
        lines += ["", "Some data files are not the official ones: read accuracy figures with that caveat."]
    lines += [
        "",
        "## Environment",
        "",
        f"- CPU: {env.get('cpu')} ({env.get('cpu_count')} logical CPUs), threads used: {env.get('threads')}",
        f"- GPU: {(env.get('gpu') or {}).get('name', 'none')}",
        f"- Python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), {env.get('os')}",
        f"- Container: {(env.get('container') or {}).get('image', 'none (native)')}",
        "",
    ]
    return "\n".join(lines)


def csv_text(records: list[RunRecord]) -> str:
    rows = summary_rows(group_records(records))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def write_report(results_dir: Path, spec: str | None = None, plots: bool = True) -> list[Path]:
    """Rebuild ``summary.csv``, ``summary.md`` (and plots) of a results folder from its run files alone.

    Returns the paths written. The output depends on the run files only, so running it twice
    gives identical tables (and, with the same matplotlib, identical figures).
    """
    results_dir = Path(results_dir)
    records = load_records(results_dir)
    if not records:
        raise MnistbenchError(f"no run files in {results_dir / 'runs'}")
    spec = spec or records[0].spec
    written = [results_dir / "summary.csv", results_dir / "summary.md"]
    write_atomic(written[0], csv_text(records))
    figures: list[Path] = []
    try:
        if plots:
            from .plots import write_plots

            figures = write_plots(results_dir, spec, records)
    finally:
        # A plotting failure still leaves the tables, without figure links.
        write_atomic(written[1], markdown(spec, records, [p.name for p in figures]))
    return written + figures
