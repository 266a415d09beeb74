"""Groups -> ``summary.csv`` and ``summary.md``. Renderers only: every number comes from ``groups.py``."""

from __future__ import annotations

import csv
import io
import math

from .groups import Group, Report, Section, describe_devices
from .rows import SummaryRow
from ..train.load import THRESHOLDS
from .words import counted, table
from .rules import FIXED_BUDGET_MIN_SEEDS, RULES, RuleFigure
from .stats import Estimate

FIGURE_TITLES = {
    "learning_curves.png": "Learning curves",
    "final_error.png": "Final test error",
    "throughput.png": "Training throughput",
    "roofline.png": "Roofline",
}


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


def _num(x, digits=0) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _steady_note(groups: list[Group]) -> str:
    if all(len(r.epochs) > 1 for g in groups for r in g.records):
        return "first (warm-up) epoch of each run excluded"
    return "first (warm-up) epoch of each run excluded, except in runs of a single epoch"


def csv_text(report: Report) -> str:
    """``summary.csv``: a line per group (``SummaryRow``), floats to six significant digits, None an empty cell."""
    return _csv([g.row.csv_cells() for s in report.sections for g in s.groups])


def roofline_csv_text(report: Report) -> str | None:
    """``roofline.csv``: one row per configuration and pass, with its section; None when no run measured both roofs."""
    points = [(s, p) for s in report.sections for p in s.roofline]
    if not any(p.placed for _, p in points):
        return None
    return _csv([{**p.row(), "spec": s.context.spec, "device": s.context.device} for s, p in points])


def _csv(rows: list[dict]) -> str:
    fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def summary_markdown(report: Report, figures: list[str] | None = None) -> str:
    """The human-readable summary: per section a headline table, statistics, comparisons, provenance; then figures."""
    figures = list(figures or [])
    several = len(report.sections) > 1
    lines = [f"# {report.title}: summary", ""]
    if report.warnings:
        lines += ["**Warnings:**", ""] + [f"- {w}" for w in report.warnings] + [""]
    h = "###" if several else "##"
    for section in report.sections:
        if several:
            lines += [f"## {section.context.title}", ""]
        lines += _section(section, h, figures if not several else [])
    if several and "learning_curves.png" in figures:
        lines += ["![Learning curves: test and train accuracy and loss per epoch](learning_curves.png)", ""]
    lines += _figures(figures)
    return "\n".join(lines)


def _section(s: Section, h: str, figures: list[str]) -> list[str]:
    lines = _overview(s) + _headline(s) + _load_note(s)
    if "learning_curves.png" in figures:
        lines += ["![Learning curves: test and train accuracy and loss per epoch](learning_curves.png)", ""]
    lines += _across_seeds(s, h) + _pairwise(s, h) + _time_to_target(s, h) + _roofline(s, h) + _speedups(s, h)
    if s.overhead:
        wall, fraction = s.overhead
        lines += [
            f"Harness overhead: {100 * fraction:.1f}% of the cells' {wall:,.1f} s wall time was spent outside the "
            "timed training and evaluation (data preparation, model set-up, checkpoints, peak calibration).",
            "",
        ]
    return lines + _model_sources(s, h) + _data(s, h) + _environment(s, h)


def _model_sources(s: Section, h: str) -> list[str]:
    """Where each referenced (not built-in) model's code came from: its reference, file and the file's SHA-256."""
    sources = {(g.label, r.model["reference"], r.model.get("file"), r.model.get("sha256"), r.model.get("package"))
               for g in s.groups for r in g.records if r.model.get("reference")}
    if not sources:
        return []
    lines = [f"{h} Model sources", ""]
    for label, ref, file, sha, package in sorted(sources, key=lambda x: tuple(map(str, x))):
        lines.append(f"- {label}: `{ref}` — `{file}`, sha256 `{str(sha)[:16]}…`" + (f", package {package}" if package else ""))
    return lines + [""]


def _overview(s: Section) -> list[str]:
    records, env = s.records, s.environment
    lines = [
        f"{counted(len(records), 'run')} on {s.context.device.split(':')[0]} ({describe_devices(records)}); "
        f"dataset {s.context.dataset}; torch {env.get('torch')}, mnistbench {env.get('mnistbench')} "
        f"(commit {env.get('git_commit') or 'unknown'}).",
    ]
    held_out = sorted({r.config.get("validation") or 0 for r in records} - {0})
    if held_out:
        lines += ["", f"**Validation split:** runs with `validation` hold out the last {' or '.join(map(str, held_out))} "
                  "training samples and are evaluated on them instead of the test set: their 'test' figures below are "
                  "validation figures."]
    for status, words in (("diverged", "Diverged runs, left out of every accuracy and loss figure"),
                          ("failed", "Failed runs (the cell raised), left out of every figure; `mnistbench run` retries them")):
        bad = [r for r in records if r.status == status]
        if bad:
            lines += ["", f"{words}: " + ", ".join(f"{r.cell} ({r.note or r.status})" for r in bad) + "."]
    return lines + [""]


def _seeds_cell(r: SummaryRow) -> str:
    extra = [f"{n} {k}" for k, n in (("diverged", r.diverged), ("failed", r.failed)) if n]
    return f"{r.seeds} ({', '.join(extra)})" if extra else str(r.seeds)


def _headline_cells(g: Group, memory: bool) -> list:
    r = g.row
    cells = [r.model, f"{r.parameters:,}", _epochs_cell(g), _seeds_cell(r), _mean_std(g.final_accuracy()),
             _pct(r.best_test_acc_max) or "n/a", "n/a" if r.final_test_loss_mean is None else f"{r.final_test_loss_mean:.4f}",
             _num(r.train_samples_per_s_median) + (" ⚠" if r.throughput_flag else ""), _num(r.eval_samples_per_s_median),
             _num(r.seconds_per_epoch_median, 2)]
    return cells + [_num(r.peak_memory_mib_max, 1)] if memory else cells


def _headline(s: Section) -> list[str]:
    memory = any(r.peak_memory_mib_max is not None for r in s.rows)  # CPU: peak RSS of the process; CUDA: max_memory_allocated
    rows = [_headline_cells(g, memory) for g in s.groups]
    headers = ["model", "parameters", "epochs", "seeds", "final test acc % (mean ± std)", "best test acc %",
               "final test loss", "train samples/s", "eval samples/s", "s/epoch"] + (["peak memory MiB"] if memory else [])
    stopped = [g.label for g in s.groups if g.config.get("stop_at_target")]
    note = (f" {', '.join(stopped)}: runs stop at the first epoch that meets the target (`stop_at_target`), so their "
            "final accuracy is that epoch's, selected by the target, not the end of a budget.") if stopped else ""
    return [table(rows, headers), "", f"Throughput and s/epoch: median over epochs and seeds, {_steady_note(s.groups)}.{note}", ""]


def _load_note(s: Section) -> list[str]:
    """The configurations whose throughput was measured under load or spread widely over epochs (load.py), and why."""
    flagged = [(g.label, g.throughput_flags()) for g in s.groups]
    flagged = [(label, reasons) for label, reasons in flagged if reasons]
    if not flagged:
        return []
    lines = [f"**⚠ Throughput measured under load or with a wide spread** ({THRESHOLDS}; docs/statistics.md): read "
             "these samples/s with caution, and `mnistbench compare --fail-on 'throughput…'` does not judge them.", ""]
    return lines + [f"- {label}: {'; '.join(reasons)}" for label, reasons in flagged] + [""]


def _epochs_cell(g: Group) -> str:
    """The configured epochs, or with stop_at_target the epochs the runs actually trained (min-max) of the budget."""
    config = g.config
    if not config.get("stop_at_target"):
        return str(config["epochs"])
    ran = sorted(len(r.epochs) for r in g.records)
    span = str(ran[0]) if ran[0] == ran[-1] else f"{ran[0]}–{ran[-1]}"
    return f"{span} of {config['epochs']} (stopped at target)"


def _across_seeds(s: Section, h: str) -> list[str]:
    rows = []
    for g in s.groups:
        r, speed = g.row, g.row.train_samples_per_s_median
        rows.append([
            r.model, len(g.finished), _mean_std(g.final_accuracy()), _ci(g.final_accuracy()), _mean_std(g.best_accuracy()),
            _ci(g.best_accuracy()), _mean_std(g.final_loss(), 1, 4), _ci(g.final_loss(), 1, 4), _error_pct(r.final_test_error_pct),
            _paper_pct(r),
            "n/a" if speed is None else f"{_num(speed)} [{_num(r.train_samples_per_s_min)}–{_num(r.train_samples_per_s_max)}]",
        ])
    headers = ["model", "n", "final acc %", "final acc 95% CI", "best acc %", "best acc 95% CI", "final loss",
               "final loss 95% CI", "test error %", "reference error % (LeCun et al. 1998)", "train samples/s median [min–max]"]
    return [f"{h} Across seeds (95% Student-t intervals)", "", table(rows, headers), "",
            "n: finished (not diverged, not failed) seeds. Accuracy and loss: mean ± sample standard deviation over seeds, "
            "95% interval of the mean = mean ± t(0.975, n−1)·s/√n (n/a for one seed). Best acc: each seed's best "
            "epoch, an optimistic figure since it picks an epoch by its test score. Test error = 100 − mean final acc. "
            "Reference error: the test error LeCun, Bottou, Bengio & Haffner (1998) report for LeNet-5 and for the "
            "784-500-150-10 network, with a different recipe (see docs/statistics.md, 'The 1998 reference errors'). "
            f"Train samples/s: median and range over epochs and seeds, {_steady_note(s.groups)}.", ""]


def _pairwise(s: Section, h: str) -> list[str]:
    if len(s.groups) < 2:
        return []
    rows = []
    for a, b, c in s.comparisons:
        ci = "n/a" if math.isnan(c.ci_low) else f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]"
        p = "n/a" if math.isnan(c.p_value) else f"{c.p_value:.3g}"
        rows.append([a.label, b.label, f"{len(a.finished)} / {len(b.finished)}", f"{100 * c.difference:+.2f}", ci, p])
    return [f"{h} Pairwise comparison of final test accuracy (Welch's t-test)", "",
            table(rows, ["model A", "model B", "n A / n B", "A − B (points)", "95% CI", "p-value"]), "",
            "A − B: difference of mean final test accuracy in percentage points, with its 95% Welch–Satterthwaite "
            "interval and two-sided p-value (n/a with fewer than two seeds a side). With few seeds intervals are "
            "wide; p-values are not corrected for the number of comparisons.", ""]


def _secs(f: RuleFigure) -> str:
    return "—" if f.seconds is None else f"{f.seconds:.2f}"


def _time_to_target(s: Section, h: str) -> list[str]:
    """The three rules side by side (rules.py), then the ratios between recipes of this run."""
    groups = [g for g in s.groups if g.rules]
    if not groups:
        return []
    body = []
    for g in groups:
        fb, ml, fc = (g.rules[k] for k in RULES)
        est = g.final_accuracy()
        acc = "n/a" if est is None else f"{100 * est.mean:.2f} {_ci(est)}"
        ml_seeds = "not recorded (older run files)" if ml.verdict.startswith("not recorded") else ml.seeds
        body.append([g.label, _pct(g.config["target_accuracy"]), _secs(fb), fb.seeds, acc, fb.verdict, _secs(ml), ml_seeds,
                     _secs(fc), fc.seeds])
    lines = [f"{h} Time to accuracy under three rules", "",
             table(body, ["recipe", "target %", "fixed-budget s", "seeds ending ≥ target", "final acc % [95% CI]", "fixed-budget verdict",
                           "mlperf s", "seeds reaching", "first-crossing s (optimistic)", "seeds reaching"]), "",
             "**fixed-budget** (the headline): median total training time of the fixed recipe; met only when the final "
             f"test accuracy of every seed, and of at least {FIXED_BUDGET_MIN_SEEDS} seeds, is at or above the target. "
             "**mlperf**: median wall clock from the first step through the first evaluation at or above the target "
             "(evaluations after every epoch and every `target_eval_every` steps; the clock never stops for them). "
             "**first-crossing**: training time until the first probe at or above the target; selected on test-set noise, "
             "so optimistic. A seed that never reached the target counts as slower than every seed that did. "
             "Seconds are medians over seeds; compare them only within one run (docs/performance.md).", ""]
    if s.ratios:
        rows = [[r["rule"], r["recipe"], r["against"], f"{r['seconds']:.2f}", f"{r['fastest_seconds']:.2f}", f"{r['ratio']:.2f}×"]
                for r in s.ratios]
        lines += [f"{h} Time-to-target ratios (this run)", "",
                  table(rows, ["rule", "recipe", "against the fastest", "s", "fastest s", "time ratio"]), "",
                  "Per rule, each recipe that meets the rule against the fastest one that does: how many times longer it took.", ""]
    return lines


def _roofline(s: Section, h: str) -> list[str]:
    if not any(r.train_gflops is not None for r in s.rows):
        return []
    body = [[r.model, _num(r.train_samples_per_s_median), _num(r.train_flops_per_sample), _num(r.peak_gflops, 1),
             _num(r.train_gflops, 1), _pct(r.train_fraction_of_peak, 1), _num(r.eval_gflops, 1),
             _pct(r.eval_fraction_of_peak, 1)] for r in s.rows]
    return [f"{h} Speed against the compute peak", "",
            table(body, ["model", "train samples/s", "train FLOPs/sample", "peak GFLOP/s", "train GFLOP/s", "% of peak",
                          "eval GFLOP/s", "% of peak"]), "",
            "Peak: a float32 matrix multiply timed on the same device with the same thread count during the run "
            "(best of 5; 2048² on the CPU, 8192² on a GPU). FLOPs per sample are counted by torch.utils.flop_counter "
            "(forward + backward for training); GFLOP/s = FLOPs/sample × median samples/s (first epoch excluded). "
            "Reduced precision (bf16) can exceed the float32 peak. " + _roof_sentence(s), ""] + _roofline_table(s, h)


def _roof_sentence(s: Section) -> str:
    if any(p.placed for p in s.roofline):
        return "The roofline below adds the memory roof: it says which roof binds each model and how far below that roof it runs."
    # runs recorded before the memory roof was measured (every committed folder of 0.1): their summary reads as it did
    return ("Only the compute roof is shown: there is no memory roof, so a low fraction says how far from compute-bound "
            "a model runs, not why.")


def _roofline_table(s: Section, h: str) -> list[str]:
    if not any(p.placed for p in s.roofline):
        return []  # no run of the section measured both roofs: nothing to place (the sentence above says so)
    body = [[p.model, p.phase, _num(p.flops_per_sample), _num(p.bytes_per_sample), _num(p.intensity, 2),
             _num(p.bandwidth_gbs, 1), _num(p.ridge, 2), _num(p.attainable, 1), _num(p.achieved_gflops, 1),
             p.bound or "n/a", _pct(p.fraction_of_attainable, 1) or "n/a"] for p in s.roofline]
    lines = [f"{h} Roofline", "",
             table(body, ["model", "pass", "FLOPs/sample", "bytes/sample", "FLOP/byte", "memory GB/s", "ridge FLOP/byte",
                           "attainable GFLOP/s", "achieved GFLOP/s", "bound", "% of attainable"]), "",
             "Memory roof: the better of STREAM's copy and triad on float32 arrays 4× the last-level cache (64–512 MiB; 256 MiB on a GPU), "
             "timed on the same device with the same thread count during the run (best of 5). Bytes per sample are "
             "counted per layer from the model's structure, each layer's tensors going through memory once "
             "(activations read and written forward and backward, weights read, gradients written, optimizer state "
             "read and written, the last three once per batch; docs/performance.md). FLOP/byte = FLOPs/sample ÷ "
             "bytes/sample; attainable = min(peak, bandwidth × FLOP/byte). Below the ridge point (peak ÷ bandwidth) "
             "a pass is memory-bound, above it compute-bound; % of attainable says how far it runs below the roof "
             "that binds it."]
    if any(not p.placed for p in s.roofline):
        lines += ["", "n/a: runs recorded before the memory roof and bytes per sample were measured; run them again "
                  "to place them."]
    return lines + [""]


def _speedups(s: Section, h: str) -> list[str]:
    if not s.speedups:
        return []
    body = [[x["model"], x["setting"], f"{x['baseline']} → {x['variant']}", f"{x['ratio']:.2f}×",
             _num(x["baseline_samples_per_s"]), _num(x["variant_samples_per_s"])] for x in s.speedups]
    return [f"{h} Speed-ups between settings", "",
            table(body, ["model", "setting", "baseline → variant", "train throughput ratio", "baseline samples/s",
                          "variant samples/s"]), "",
            "Ratio > 1: the variant trains faster than the model's baseline (its first cell in the spec).", ""]


def _data(s: Section, h: str) -> list[str]:
    lines = [f"{h} Data", "", f"Data identity `{s.context.data_identity}` (a hash of the four files' SHA-256):", ""]
    for f in s.data["files"]:
        flag = {True: "official", False: "NOT the official file", None: "unverified (raw file)"}.get(f.get("official"), "unknown")
        lines.append(f"- `{f.get('file')}` — {flag}, sha256 `{f['sha256'][:16]}…`")
    if not all(f.get("official") for f in s.data["files"]):
        lines += ["", "Some data files are not the official ones: read accuracy figures with that caveat."]
    return lines + [""]


def _environment(s: Section, h: str) -> list[str]:
    env = s.environment
    hosts = sorted({h for g in s.groups for h in g.hosts()})
    lines = [
        f"{h} Environment",
        "",
        f"- CPU: {env.get('cpu')} ({env.get('cpu_count')} logical CPUs), threads used: {env.get('threads')}"
        + (f", kernels: {env['cpu_capability']}" if env.get("cpu_capability") else ""),
        f"- GPU: {(env.get('gpu') or {}).get('name', 'none')}",
        f"- Python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), {env.get('os')}",
        f"- Container: {(env.get('container') or {}).get('image', 'none (native)')}",
    ]
    allocators = sorted({str(r.environment["malloc"]) for r in s.records if r.environment.get("malloc")})
    if allocators:  # recorded since the allocator became a choice (docs/performance.md, "The memory allocator")
        lines.append(f"- Memory allocator: {', '.join(allocators)}"
                     + (" (the runs differ: their speed figures mix allocators)" if len(allocators) > 1 else ""))
    if len(hosts) > 1:
        lines.append(f"- Hosts: {len(hosts)} machines of this kind ({', '.join(hosts)}); throughput pools them")
    return lines + [""]


def _figures(figures: list[str]) -> list[str]:
    others = [f for f in figures if f.endswith(".png") and f != "learning_curves.png"]
    if not others:
        return []
    lines = ["## Figures", ""]
    for f in others:
        lines += [f"![{FIGURE_TITLES.get(f, f)}]({f})", ""]
    return lines + ["Each figure is also written as SVG next to the PNG.", ""]


def _error_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _paper_pct(r: SummaryRow) -> str:
    return "—" if r.paper_test_error_pct is None else f"{r.paper_test_error_pct:.2f}"


def _one_section(report: Report, folder: str) -> Section:
    if len(report.sections) != 1:
        raise ValueError(f"{folder}: the README summarises one section, this folder has {len(report.sections)}")
    return report.sections[0]


def readme_results(report: Report, folder: str) -> str:
    """The README's results block: the headline of a one-section report and its pairwise comparisons, in words."""
    s = _one_section(report, folder)
    env = s.environment
    rows = [[f"`{g.row.model}`", f"{g.row.parameters:,}", _mean_std(g.final_accuracy()), _ci(g.final_accuracy()),
             _error_pct(g.row.final_test_error_pct), _paper_pct(g.row), _num(g.row.train_samples_per_s_median),
             _num(g.row.seconds_per_epoch_median, 2)] for g in s.groups]
    text = table(rows, ["model", "parameters", f"final test acc % (mean ± std, {s.rows[0].seeds} seeds)", "95% CI",
                        "test error %", "LeCun et al. 1998 error %", "train samples/s", "s/epoch"])
    words = [f"`{a.label}` − `{b.label}`: {100 * c.difference:+.2f} points (95% CI [{100 * c.ci_low:+.2f}, "
             f"{100 * c.ci_high:+.2f}], p = {c.p_value:.2g})" for a, b, c in s.comparisons if not math.isnan(c.ci_low)]
    return "\n".join([
        f"Measured on {describe_devices(s.records)}, torch {env.get('torch')}, commit {env.get('git_commit')}, "
        f"dataset {s.context.dataset} (data identity `{s.context.data_identity}`); full tables, run files and "
        f"environment in [`{folder}/summary.md`]({folder}/summary.md).",
        "",
        text,
        "",
        "Differences of mean final test accuracy (Welch): " + "; ".join(words) + ".",
        "",
    ])


def readme_rules(report: Report, folder: str) -> str:
    """The README's time-to-accuracy block: the three rules side by side per recipe, and the ratios of this run."""
    s = _one_section(report, folder)
    env = s.environment
    rows = []
    for g in s.groups:
        fb, ml, fc = (g.rules[k] for k in RULES)
        verdict = f"{fb.seeds} seeds ≥ target" if fb.met else fb.verdict
        rows.append([f"`{g.label}`", f"{g.row.parameters:,}", _secs(fb), verdict, _mean_std(g.final_accuracy()),
                     f"{_secs(ml)} ({ml.seeds})", f"{_secs(fc)} ({fc.seeds})"])
    target = _pct(s.groups[0].config.get("target_accuracy"))
    text = table(rows, ["recipe", "parameters", "fixed-budget s", "fixed-budget verdict", "final test acc %",
                        "mlperf s (seeds)", "first-crossing s (seeds), optimistic"])
    words = [f"`{r['recipe']}` took {r['ratio']:.2f}× as long as `{r['against']}` ({r['rule']})" for r in s.ratios]
    return "\n".join([
        f"Time to {target}% test accuracy, measured on {describe_devices(s.records)}, torch {env.get('torch')}, commit "
        f"{env.get('git_commit')}; full tables, run files and environment in [`{folder}/summary.md`]({folder}/summary.md).",
        "",
        text,
        "",
        ("In this run: " + "; ".join(words) + ".") if words else "No two recipes of this run meet one rule: no ratio is given.",
        "",
    ])
