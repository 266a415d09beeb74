"""An inference result -> per model x backend summaries, ``summary.md``, and the README's "Inference" block.

Accuracy is a mean over seeds with its Student-t 95% interval; latency and throughput are medians over the timed
seeds; peak memory is the largest over measurements and seeds. A backend below 99.9% of its fp32 accuracy carries
``FLAG`` in every table.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..report.stats import Estimate, estimate
from ..report.words import table
from .options import ACCURACY_FLOOR
from .result import BackendRun, InferenceResult

FLAG = "⚠"
MIB = 2**20


@dataclass
class Summary:
    model: str
    backend: str
    runs: list[BackendRun]  # its seeds that ran
    accuracy: Estimate
    delta: float  # mean over seeds of accuracy - fp32 accuracy
    max_abs_logit_diff: float
    flagged: bool  # any seed below the floor
    p50: Optional[float]
    p99: Optional[float]
    throughput: dict[int, float]  # batch size -> median images/s
    peak_bytes: Optional[int]
    size_bytes: Optional[int]  # of the backend's own format
    parameters: int

    @property
    def label(self) -> str:
        return f"{self.backend} {FLAG}" if self.flagged else self.backend


def _median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def summarize(result: InferenceResult) -> list[Summary]:
    """One summary per model x backend that ran, in the order the runs were measured."""
    groups: dict[tuple[str, str], list[BackendRun]] = {}
    for run in result.runs:
        if run.status == "ok":
            groups.setdefault((run.model, run.backend), []).append(run)
    return [_summary(model, backend, runs) for (model, backend), runs in groups.items()]


def _summary(model: str, backend: str, runs: list[BackendRun]) -> Summary:
    timed = [r for r in runs if r.latency is not None]
    sizes = sorted({bs for r in timed for bs in (t.batch_size for t in r.throughput)})
    throughput = {bs: _median([t.images_per_s for r in timed for t in r.throughput if t.batch_size == bs]) for bs in sizes}
    peaks = [r.peak for r in runs if r.peak is not None]
    own = [v for k, v in runs[0].files.items()]
    return Summary(
        model, backend, runs, estimate([r.gate.accuracy for r in runs]),
        statistics.fmean(r.gate.delta for r in runs), max(r.gate.max_abs_logit_diff for r in runs),
        any(r.gate.flagged for r in runs), _median([r.latency.p50 for r in timed]), _median([r.latency.p99 for r in timed]),
        throughput, max(peaks) if peaks else None, own[-1] if own else None, runs[0].parameters)


def _us(seconds: Optional[float]) -> str:
    return "n/a" if seconds is None else f"{1e6 * seconds:,.1f}"


def _us_ci(ci: Optional[tuple[float, float]]) -> str:
    return "n/a" if ci is None else f"[{1e6 * ci[0]:,.1f}, {1e6 * ci[1]:,.1f}]"


def _mib(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n / MIB:,.1f}"


def _acc(e: Estimate) -> str:
    if e.n < 2:
        return f"{100 * e.mean:.2f} (one seed)"
    return f"{100 * e.mean:.2f} [{100 * e.ci_low:.2f}, {100 * e.ci_high:.2f}]"


def _largest(s: Summary) -> str:
    if not s.throughput:
        return "n/a"
    bs = max(s.throughput)
    return f"{s.throughput[bs]:,.0f} (batch {bs:,})"


def headline(summaries: list[Summary]) -> str:
    rows = [[s.model, s.label, str(len(s.runs)), _acc(s.accuracy), f"{100 * s.delta:+.2f}", f"{s.max_abs_logit_diff:.2g}",
             _us(s.p50), _us(s.p99), _largest(s), _mib(s.peak_bytes),
             "n/a" if s.size_bytes is None else f"{s.size_bytes / 1000:,.1f}", f"{s.parameters:,}"] for s in summaries]
    return table(rows, ["model", "backend", "seeds", "test acc % [95% CI]", "Δ vs fp32 (points)", "max |Δ logit|",
                         "batch-1 p50 µs", "batch-1 p99 µs", "images/s", "peak MiB over baseline", "size kB",
                         "parameters"])


def latency_table(result: InferenceResult, flagged: set[tuple[str, str]]) -> str:
    rows = []
    for r in result.runs:
        if r.latency is None or r.startup is None:
            continue
        lat, st = r.latency, r.startup
        rows.append([r.cell, _label(r, flagged), f"{st.prepare_s:.3f}", f"{1e3 * st.cold_s:,.2f}", _us(st.warmup_mean_s),
                     f"{lat.queries:,}", _us(lat.min), _us(lat.mean), _us(lat.p50), _us(lat.p90), _us_ci(lat.p90_ci),
                     _us(lat.p99), _us_ci(lat.p99_ci), _us(lat.p999)])
    return table(rows, ["run", "backend", "prepare s", "cold query ms", "warm-up mean µs", "queries", "min µs",
                         "mean µs", "p50 µs", "p90 µs", "p90 95% CI", "p99 µs", "p99 95% CI", "p99.9 µs"])


def _label(r: BackendRun, flagged: set[tuple[str, str]]) -> str:
    return f"{r.backend} {FLAG}" if (r.model, r.backend) in flagged else r.backend


def throughput_table(summaries: list[Summary]) -> str:
    sizes = sorted({bs for s in summaries for bs in s.throughput})
    rows = [[s.model, s.label] + [f"{s.throughput[bs]:,.0f}" if bs in s.throughput else "n/a" for bs in sizes]
            for s in summaries]
    return table(rows, ["model", "backend"] + [f"batch {bs:,} images/s" for bs in sizes])


def memory_table(result: InferenceResult, flagged: set[tuple[str, str]]) -> str:
    names = list(dict.fromkeys(k for r in result.runs for k in r.peak_memory_bytes))
    rows = [[r.cell, _label(r, flagged), _mib(r.memory_baseline_bytes)] + [_mib(r.peak_memory_bytes.get(k)) for k in names]
            + [", ".join(f"{k} {v / 1000:,.1f} kB" for k, v in r.files.items())]
            for r in result.runs if r.status == "ok"]
    return table(rows, ["run", "backend", "baseline MiB"] + [f"{k} MiB" for k in names] + ["files on disk"])


def inference_markdown(result: InferenceResult, figures: list[str]) -> str:
    summaries = summarize(result)
    flagged = {(s.model, s.backend) for s in summaries if s.flagged}
    env = result.environment
    skipped = [r for r in result.runs if r.status != "ok"]
    lines = [f"# Inference: {result.folder}", "",
             f"{len(result.runs)} measurements on {result.device} ({env.get('cpu') or env.get('gpu') or 'unknown'}), "
             f"{result.threads} intra-op threads in every backend; torch {env.get('torch')}, commit "
             f"{env.get('git_commit') or 'unknown'}; {result.dataset.get('test_images'):,} test images of "
             f"{result.dataset.get('dataset')} (data identity `{result.dataset.get('identity')}`).", ""]
    lines += [f"**Warning:** {w}" for w in result.warnings] + ([""] if result.warnings else [])
    lines += [headline(summaries), "",
              f"{FLAG}: below {100 * ACCURACY_FLOOR:.1f}% of the same weights' eager fp32 accuracy (MLPerf's high-accuracy "
              "tier) in at least one seed. Accuracy: mean over seeds, Student-t 95% interval; latency, throughput: "
              "median over the timed seeds; peak memory: the largest over every measurement and seed, above the "
              f"process's RSS before the backend loaded its model ({result.memory_method}). Size: the backend's own "
              "format on disk. docs/inference.md says how each figure is measured.", ""]
    lines += [f"![Test error against batch-1 latency]({name})" for name in figures if name.endswith(".png")] + [""]
    lines += ["## Batch-1 latency (SingleStream), per run", "", latency_table(result, flagged), "",
              "## Throughput (Offline)", "", throughput_table(summaries), "",
              "## Peak memory over baseline, per measurement", "", memory_table(result, flagged), ""]
    if skipped:
        lines += ["## Not measured", ""] + sorted({f"- {r.model} {r.backend}: {r.status} ({r.reason})" for r in skipped}) + [""]
    return "\n".join(lines)


def readme_block(result: InferenceResult, folder: str) -> str:
    """The README's "Inference" block: the headline figures of a committed inference result, and where the rest is."""
    rows = [[f"`{s.model}`", s.label, _acc(s.accuracy), f"{100 * s.delta:+.2f}", _us(s.p50), _largest(s),
             _mib(s.peak_bytes), "n/a" if s.size_bytes is None else f"{s.size_bytes / 1000:,.1f}"]
            for s in summarize(result)]
    env = result.environment
    return "\n".join([
        f"Measured on {env.get('cpu') or result.device}, {result.threads} threads, torch {env.get('torch')}, commit "
        f"{env.get('git_commit')}; every table in [`{folder}/summary.md`]({folder}/summary.md).", "",
        table(rows, ["model", "backend", "test acc % [95% CI]", "Δ vs fp32", "batch-1 p50 µs", "images/s",
                      "peak MiB", "size kB"]), ""])


def write_markdown(out: Path, result: InferenceResult, figures: list[str]) -> Path:
    from ..files import write_atomic

    path = out / "summary.md"
    write_atomic(path, inference_markdown(result, figures).encode())
    return path
