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

from .files import write_atomic
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
    """Group by every setting but the seed; label by the model and the settings that vary."""
    def key(r: RunRecord) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in r.config.items() if k != "seed"))

    varying = sorted(
        k
        for k in (records[0].config if records else {})
        if k not in ("model", "seed") and len({repr(r.config.get(k)) for r in records}) > 1
    )
    groups: dict[tuple, Group] = {}
    for r in records:
        label = ", ".join([r.config["model"]] + [f"{k}={r.config[k]}" for k in varying])
        groups.setdefault(key(r), Group(label, [])).records.append(r)
    return list(groups.values())


def _pct(x: float | None, digits: int = 2) -> str:
    return "" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}"


def _mean_std(e: Estimate | None, scale: float = 100, digits: int = 2) -> str:
    if e is None:
        return "n/a"
    return f"{scale * e.mean:.{digits}f} ± {scale * e.std:.{digits}f}"


def _ci(e: Estimate | None, scale: float = 100, digits: int = 2) -> str:
    if e is None or math.isnan(e.ci_low):
        return "n/a"
    return f"[{scale * e.ci_low:.{digits}f}, {scale * e.ci_high:.{digits}f}]"


def _median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def summary_rows(groups: list[Group]) -> list[dict]:
    """One row of plain numbers per group: the data behind both tables."""
    rows = []
    for g in groups:
        first = g.records[0]
        acc, best, loss = g.final_accuracy(), g.best_accuracy(), g.final_loss()
        train_med, train_min, train_max = _median_range(g.steady_epochs("train_samples_per_s"))
        eval_med, _, _ = _median_range(g.steady_epochs("eval_samples_per_s"))
        epoch_s = statistics.median(g.steady_epochs("train_seconds"))
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
                "time_to_target_s_median": statistics.median(ttt) if ttt and None not in ttt else None,
                "target_reached": f"{sum(t is not None for t in ttt)}/{len(ttt)}" if ttt else None,
            }
        )
    return rows


def _fmt_num(x, digits=0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def markdown(spec: str, records: list[RunRecord]) -> str:
    """The human-readable summary: headline table, statistics, pairwise comparisons, provenance."""
    groups = group_records(records)
    rows = summary_rows(groups)
    env = records[0].environment
    devices = sorted({r.device for r in records})
    lines = [f"# {spec}: summary", ""]
    lines.append(
        f"{len(records)} runs on {', '.join(devices)} ({_device_words(env, devices)}); "
        f"dataset {records[0].config['dataset']}; torch {env.get('torch')}, mnistbench {env.get('mnistbench')} "
        f"(commit {env.get('git_commit') or 'unknown'})."
    )
    lines.append("")
    headline = [
        [
            r["model"],
            f"{r['parameters']:,}",
            r["epochs"],
            r["seeds"] if not r["diverged"] else f"{r['seeds']} ({r['diverged']} diverged)",
            _mean_std(g.final_accuracy()),
            _pct(r["best_test_acc_max"]),
            "n/a" if r["final_test_loss_mean"] is None else f"{r['final_test_loss_mean']:.4f}",
            _fmt_num(r["train_samples_per_s_median"]),
            _fmt_num(r["eval_samples_per_s_median"]),
            f"{r['seconds_per_epoch_median']:.2f}",
        ]
        for r, g in zip(rows, groups)
    ]
    lines.append(
        tabulate(
            headline,
            headers=[
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
            tablefmt="github",
            disable_numparse=True,
        )
    )
    lines += ["", "Throughput and s/epoch: median over epochs and seeds, first (warm-up) epoch excluded.", ""]

    lines += ["## Across seeds (95% Student-t intervals)", ""]
    stat_rows = []
    for r, g in zip(rows, groups):
        paper = r["paper_test_error_pct"]
        stat_rows.append(
            [
                r["model"],
                r["seeds"],
                _mean_std(g.final_accuracy()),
                _ci(g.final_accuracy()),
                _mean_std(g.best_accuracy()),
                _ci(g.best_accuracy()),
                _mean_std(g.final_loss(), 1, 4),
                _ci(g.final_loss(), 1, 4),
                "n/a" if r["final_test_error_pct"] is None else f"{r['final_test_error_pct']:.2f}",
                "—" if paper is None else f"{paper:.2f}",
                f"{_fmt_num(r['train_samples_per_s_median'])} [{_fmt_num(r['train_samples_per_s_min'])}–{_fmt_num(r['train_samples_per_s_max'])}]",
            ]
        )
    lines.append(
        tabulate(
            stat_rows,
            headers=[
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
            tablefmt="github",
            disable_numparse=True,
        )
    )
    lines += [""]

    if len(groups) > 1:
        lines += ["## Pairwise comparison of final test accuracy (Welch's t-test)", ""]
        comp_rows = []
        for a, b in itertools.combinations(groups, 2):
            if not a.finished or not b.finished:
                continue
            c = welch([r.final.test_accuracy for r in a.finished], [r.final.test_accuracy for r in b.finished])
            ci = "n/a" if math.isnan(c.ci_low) else f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]"
            p = "n/a" if math.isnan(c.p_value) else f"{c.p_value:.3g}"
            comp_rows.append([a.label, b.label, f"{100 * c.difference:+.2f}", ci, p])
        lines.append(
            tabulate(
                comp_rows,
                headers=["model A", "model B", "A − B (points)", "95% CI", "p-value"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
        lines += [""]

    ttt_rows = [r for r in rows if r["target_accuracy"] is not None]
    if ttt_rows:
        lines += ["## Time to accuracy (training time only, evaluation excluded)", ""]
        lines.append(
            tabulate(
                [
                    [
                        r["model"],
                        _pct(r["target_accuracy"]),
                        r["target_reached"],
                        "not reached" if r["time_to_target_s_median"] is None else f"{r['time_to_target_s_median']:.2f}",
                    ]
                    for r in ttt_rows
                ],
                headers=["model", "target acc %", "seeds reaching it", "median s to target"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
        lines += [""]

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


def _device_words(env: dict, devices: list[str]) -> str:
    if any(d.startswith("cuda") for d in devices) and env.get("gpu"):
        return env["gpu"]["name"]
    return env.get("cpu") or "unknown CPU"


def csv_text(records: list[RunRecord]) -> str:
    rows = summary_rows(group_records(records))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def write_report(results_dir: Path, spec: str | None = None, plots: bool = True) -> list[Path]:
    """Rebuild ``summary.csv``, ``summary.md`` (and plots) of a results folder from its run files alone."""
    results_dir = Path(results_dir)
    records = load_records(results_dir)
    if not records:
        from .errors import MnistbenchError

        raise MnistbenchError(f"no run files in {results_dir / 'runs'}")
    spec = spec or records[0].spec
    written = [results_dir / "summary.csv", results_dir / "summary.md"]
    write_atomic(written[0], csv_text(records))
    write_atomic(written[1], markdown(spec, records))
    if plots:
        from .plots import write_plots

        written += write_plots(results_dir, spec, records)
    return written
