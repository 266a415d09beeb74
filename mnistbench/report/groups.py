"""Run records -> validated groups with their statistics: the one layer every table and figure reads.

A *section* is one spec on one data identity (the hash of the files' decompressed content)
and one machine kind (``results.Machine``: the CPU model, count, kernel level and flags, or
the GPU). A *group* is one resolved configuration in a section (the thread count as used
included), across seeds; its seeds are unique. Two run files with one cell key on one machine
kind are one measurement: it is counted once and the duplicate is named in a warning. Nothing
from two sections is ever pooled; renderers only read what is computed here.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import MnistbenchError
from ..train.load import throughput_flags
from ..models.facts import builtin_rank, paper_test_error_pct
from ..layout import is_cell_file
from ..results import Machine, RunRecord, complete_machines, load_record, run_files, unify_data
from .roofline import Point, group_points
from .rows import SummaryRow
from .rules import RULES, RuleFigure, median_reached, rule_figures
from .stats import Comparison, Estimate, estimate, welch

# Below this many seeds a 95% interval is too wide to draw; figures show min-max instead.
MIN_SEEDS_FOR_CI = 3
_STATUS_RANK = {"finished": 0, "diverged": 0, "failed": 1}


@dataclass(frozen=True, order=True)
class Context:
    """What the runs of a section share besides their configuration."""

    spec: str
    dataset: str
    data_identity: str
    device: str  # the machine kind in words, e.g. "cpu: AMD EPYC (2 CPUs, AVX512)" or "cuda: NVIDIA H200"
    machine: str = ""  # results.Machine.id: tells apart two machine kinds whose words agree (CPU flags differ)
    named: bool = field(default=False, compare=False)  # show ``machine`` in the title (set where words collide)

    @property
    def title(self) -> str:
        where = f"{self.device} [machine {self.machine}]" if self.named else self.device
        return f"{self.spec} · {self.dataset} (data {self.data_identity[:8]}) · {where}"


def device_kind(r: RunRecord) -> str:
    return r.machine.label


def context_of(r: RunRecord, machine: Optional[Machine] = None) -> Context:
    """The record's section; ``machine``: its machine kind as completed from the folder (``complete_machines``)."""
    m = machine or r.machine
    return Context(r.spec, str(r.config.get("dataset")), r.data["identity"], m.label, m.id)


def settings_of(r: RunRecord) -> dict:
    """A record's configuration with the thread count it ran with (``threads: None`` left the count to torch)."""
    if r.config.get("threads") is None and r.environment.get("threads") is not None:
        return {**r.config, "threads": r.environment["threads"]}
    return r.config


@dataclass
class Spread:
    """A mean over seeds with the interval drawn around it."""

    n: int
    mean: float
    low: float
    high: float


def spread(values: list[float]) -> Spread:
    """Mean with its 95% Student-t interval from 3 seeds up, else the min-max range (a point for one seed)."""
    if len(values) >= MIN_SEEDS_FOR_CI:
        e = estimate(values)
        return Spread(e.n, e.mean, e.ci_low, e.ci_high)
    return Spread(len(values), statistics.fmean(values), min(values), max(values))


def curve(records: list[RunRecord], attr: str, scale: float = 1.0, log: bool = False) -> tuple[list[int], list[Spread]]:
    """Per epoch, the spread over the runs that reached that epoch of ``attr`` times ``scale``. With ``log``, the
    spread of the logarithms taken back: the geometric mean and an interval that stays positive (a loss on a log axis)."""
    by_epoch: dict[int, list[float]] = {}
    for r in records:
        for e in r.epochs:
            value = scale * getattr(e, attr)
            by_epoch.setdefault(e.epoch, []).append(math.log(max(value, 1e-300)) if log else value)
    xs = sorted(by_epoch)
    spreads = [spread(by_epoch[x]) for x in xs]
    if log:
        spreads = [Spread(s.n, math.exp(s.mean), math.exp(s.low), math.exp(s.high)) for s in spreads]
    return xs, spreads


@dataclass
class Group:
    """The records of one configuration in one section, one per seed."""

    label: str
    context: Context
    records: list[RunRecord]

    @property
    def config(self) -> dict:
        """The configuration the group's records share (all but the seed)."""
        return self.records[0].config

    @property
    def settings(self) -> dict:
        """The configuration with the thread count as used (``settings_of``)."""
        return settings_of(self.records[0])

    @property
    def model(self) -> str:
        return self.config["model"]

    @functools.cached_property
    def row(self) -> SummaryRow:
        """The group in plain numbers, as summary.csv gives it. Read once the group's records are complete."""
        return summary_row(self)

    def paper_error_pct(self) -> float | None:
        """The 1998 paper's MNIST test error for this configuration's counterpart (with distortions or without);
        none for another dataset or a validation split."""
        if self.config.get("dataset") != "mnist" or self.config.get("validation"):
            return None
        return paper_test_error_pct(self.model, bool(self.config.get("distort")))

    @property
    def finished(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == "finished"]

    def with_status(self, status: str) -> list[RunRecord]:
        return [r for r in self.records if r.status == status]

    def final_accuracy(self) -> Estimate | None:
        return estimate([r.final.test_accuracy for r in self.finished]) if self.finished else None

    def best_accuracy(self) -> Estimate | None:
        return estimate([max(e.test_accuracy for e in r.epochs) for r in self.finished]) if self.finished else None

    def final_loss(self) -> Estimate | None:
        return estimate([r.final.test_loss for r in self.finished]) if self.finished else None

    def steady_epochs(self, attr: str) -> list[float]:
        """Per-epoch values with each run's first (warm-up) epoch left out, unless a run has only one."""
        out = []
        for r in self.records:
            epochs = r.epochs[1:] if len(r.epochs) > 1 else r.epochs
            out += [getattr(e, attr) for e in epochs]
        return out

    def epochs_trained(self) -> int | float:
        """The epochs each run trains: ``epochs``, or with ``max_steps`` the whole ones and the part of the last it
        cut (1.6), to two decimals."""
        first = self.records[0]
        shares = epoch_shares(first)
        return first.config["epochs"] if shares is None else round(sum(shares), 2)

    def seconds_per_epoch(self) -> list[float]:
        """Training seconds of each steady epoch (as ``steady_epochs``), an epoch cut by ``max_steps`` scaled to a
        whole one by the samples it took."""
        out = []
        for r in self.records:
            shares = epoch_shares(r)
            epochs = r.epochs[1:] if len(r.epochs) > 1 else r.epochs
            out += [e.train_seconds / (1.0 if shares is None else shares[e.epoch - 1]) for e in epochs]
        return out

    def train_throughput(self) -> tuple[float | None, float | None, float | None]:
        """Median, min and max training samples/s over steady epochs and seeds."""
        return _median_range(self.steady_epochs("train_samples_per_s"))

    def throughput_flags(self) -> list[str]:
        """Why this configuration's throughput is not a clean measurement, per run (load.py); empty when none is seen."""
        out = []
        for r in self.records:
            reasons = throughput_flags(r.extra.get("load"), [e.train_samples_per_s for e in r.epochs])
            if reasons:
                out.append(f"{r.cell}: {', '.join(reasons)}")
        return out

    @functools.cached_property
    def rules(self) -> dict[str, RuleFigure]:
        """Time to the target accuracy under the three rules (rules.py); empty without a target. Read once the
        group's records are complete."""
        return rule_figures(self.records)

    def hosts(self) -> list[str]:
        return sorted({str(r.environment.get("host")) for r in self.records if r.environment.get("host")})


@dataclass
class Section:
    """One spec on one data identity and one device kind, with everything the tables say about it."""

    context: Context
    groups: list[Group]
    comparisons: list[tuple[Group, Group, Comparison]]
    speedups: list[dict]
    overhead: Optional[tuple[float, float]]
    ratios: list[dict] = field(default_factory=list)  # time-to-target ratios per rule (rule_ratios)
    roofline: list[Point] = field(default_factory=list)  # training and inference of each group on the roofline

    @property
    def rows(self) -> list[SummaryRow]:
        return [g.row for g in self.groups]

    @property
    def records(self) -> list[RunRecord]:
        return [r for g in self.groups for r in g.records]

    @property
    def environment(self) -> dict:
        return self.records[0].environment

    @property
    def data(self) -> dict:
        return self.records[0].data


@dataclass
class Report:
    """A results folder as validated data: its sections, and what was set aside (duplicates)."""

    sections: list[Section]
    warnings: list[str] = field(default_factory=list)
    run_files: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        specs = sorted({s.context.spec for s in self.sections})
        return specs[0] if len(specs) == 1 else " + ".join(specs)

    def groups(self) -> list[Group]:
        """Every group; labels carry their section when there are several, so no two read alike."""
        if len(self.sections) == 1:
            return self.sections[0].groups
        return [Group(f"{g.label} [{s.context.title}]", g.context, g.records) for s in self.sections for g in s.groups]

    def roofline_points(self) -> list[Point]:
        """Every section's roofline points, labelled as ``groups`` labels them."""
        if len(self.sections) == 1:
            return self.sections[0].roofline
        return [dataclasses.replace(p, model=f"{p.model} [{s.context.title}]") for s in self.sections for p in s.roofline]


def load_runs(results_dir: Path) -> list[tuple[str, RunRecord]]:
    """(file name, record) of every run file; a bad file stops with one line naming it."""
    out = [(p.name, load_record(p)) for p in run_files(results_dir)]
    if not out:
        raise MnistbenchError(f"no run files in {Path(results_dir) / 'runs'}")
    return out


def deduplicate(runs: list[tuple[str, RunRecord]], machines: Optional[dict[Machine, Machine]] = None) -> tuple[list[RunRecord], list[str]]:
    """One record per measurement (cell key on one machine kind), and warnings naming the duplicates.

    Kept: a finished or diverged record before a failed one, then the file named after its
    cell before a copy, then the first file name.
    """
    machines = machines or {}
    by_key: dict[tuple, list[tuple[str, RunRecord]]] = {}
    for name, r in runs:
        by_key.setdefault((r.key, machines.get(r.machine, r.machine)), []).append((name, r))
    kept, warnings = [], []
    for same in by_key.values():
        same.sort(key=lambda nr: (_STATUS_RANK[nr[1].status], not is_cell_file(nr[0], nr[1].cell), nr[0]))
        kept.append(same[0][1])
        if len(same) > 1:
            warnings.append(
                f"{', '.join(n for n, _ in same[1:])} repeat{'s' if len(same) == 2 else ''} the configuration and seed of "
                f"{same[0][0]} (cell key {same[0][1].key}): counted once"
            )
    return kept, warnings


def build_report(results_dir: Path) -> Report:
    """The report of a results folder's run files."""
    return report_from_runs(load_runs(results_dir))


def build_reports(*folders: Path) -> list[Report]:
    """The reports of several folders, their records' data identities made comparable across them (``unify_data``).

    Machine kinds are completed within each folder only: a record that did not say its CPU's vector units (0.1's) is
    never given those of another folder's machine, which may be another VM of the same CPU model.
    """
    loaded = [load_runs(f) for f in folders]
    unify_data([r for runs in loaded for _, r in runs])
    return [report_from_runs(runs) for runs in loaded]


def report_from_runs(runs: list[tuple[str, RunRecord]]) -> Report:
    """The report of one folder's runs; a record missing a machine field is completed from the folder's others
    (``complete_machines``)."""
    unify_data([r for _, r in runs])
    machines = complete_machines([r.machine for _, r in runs])
    records, warnings = deduplicate(runs, machines)
    by_context: dict[Context, list[RunRecord]] = {}
    for r in records:
        by_context.setdefault(context_of(r, machines[r.machine]), []).append(r)
    contexts = _named(list(by_context))
    sections = [make_section(contexts[c], rs) for c, rs in sorted(by_context.items())]
    if len(sections) > 1:
        warnings.append(
            f"this folder holds runs of {len(sections)} different spec/data/machine combinations; "
            "each is reported in its own section and never pooled"
        )
    return Report(sections, warnings, [n for n, _ in runs])


def _named(contexts: list[Context]) -> dict[Context, Context]:
    """Each context, with its machine id shown where another context's title reads the same."""
    titles = [c.title for c in contexts]
    return {c: dataclasses.replace(c, named=titles.count(c.title) > 1) for c in contexts}


def _group_key(r: RunRecord) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in settings_of(r).items() if k not in ("seed", "device")))


def make_section(context: Context, records: list[RunRecord]) -> Section:
    """Group by every setting but the seed; label by the model and the settings that vary in the section.

    Groups come in the model registry's order (lenet5, custom-mlp, mlp-matched), then by
    the varying settings; records within a group by seed. File names play no part.
    """
    varying = sorted(
        k for k in dict.fromkeys(k for r in records for k in r.config)
        if k not in ("model", "seed", "device", "model_sha256") and len({repr(settings_of(r).get(k)) for r in records}) > 1
    )
    # A model's file hash is part of its identity, shown only where one model ran with two versions of its file.
    if any(len({r.config.get("model_sha256") for r in records if r.config["model"] == m}) > 1 for m in {r.config["model"] for r in records}):
        varying.append("model_sha256")
    label_keys = _label_keys(records, varying)
    groups: dict[tuple, Group] = {}
    for r in records:
        groups.setdefault(_group_key(r), Group(_label(r, label_keys), context, [])).records.append(r)
    for g in groups.values():
        g.records.sort(key=lambda r: (_sortable(r.config.get("seed")), r.cell))
    ordered = sorted(groups.values(), key=lambda g: (builtin_rank(g.model), g.model,
                                                     tuple(_sortable(g.settings.get(k)) for k in varying)))
    comparisons = [
        (a, b, welch([r.final.test_accuracy for r in a.finished], [r.final.test_accuracy for r in b.finished]))
        for a, b in itertools.combinations(ordered, 2)
        if a.finished and b.finished
    ]
    return Section(context, ordered, comparisons, speedups(ordered), harness_overhead(records), rule_ratios(ordered),
                   [p for g in ordered for p in group_points(g.label, g.records)])


def _label_keys(records: list[RunRecord], varying: list[str]) -> list[str]:
    """The settings a label shows: with named recipes, the recipe and only what varies within one recipe."""
    if "recipe" not in varying:
        return varying
    by_recipe: dict[str, list[RunRecord]] = {}
    for r in records:
        by_recipe.setdefault(str(r.config.get("recipe")), []).append(r)
    within = [k for k in varying if k != "recipe" and any(len({repr(settings_of(r).get(k)) for r in rs}) > 1 for rs in by_recipe.values())]
    return ["recipe"] + within


def _label(r: RunRecord, varying: list[str]) -> str:
    """The model's display name (a referenced model's, else its registered name), then the varying settings
    (a named recipe by its name alone)."""
    def shown(k: str) -> str:
        if k == "recipe":
            return str(r.config.get(k) or "(unnamed)")
        return f"{k}={str(r.config.get(k))[:12] if k == 'model_sha256' else settings_of(r).get(k)}"

    values = [shown(k) for k in varying]
    return ", ".join([str(r.model.get("name") or r.config["model"])] + values)


def _sortable(v: object) -> tuple:
    # Numbers compare as numbers (lr 0.001 < 0.01 < 0.1), everything else as text.
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, repr(v))


def describe_devices(records: list[RunRecord]) -> str:
    """The hardware the runs measured: GPU names for CUDA runs, the CPU model otherwise."""
    words = []
    for r in records:
        env = r.environment
        if r.device_type == "cuda" and env.get("gpu"):
            words.append(env["gpu"]["name"])
        else:
            threads = f", {env['threads']} threads" if env.get("threads") else ""
            words.append(f"{env.get('cpu') or 'unknown CPU'}{threads}")
    return ", ".join(sorted(dict.fromkeys(words)))


def seeds_words(groups: list[Group]) -> str:
    """``3 seeds`` or ``2-3 seeds`` when groups differ."""
    counts = sorted({len(g.records) for g in groups})
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{n} seed{'' if counts == [1] else 's'}"


def epoch_shares(record: RunRecord) -> Optional[list[float]]:
    """With ``max_steps``: the share of a whole epoch each epoch of ``record`` trained (1.0, ..., then the cut part);
    None without it, or in a record that does not say how many samples an epoch holds."""
    samples = record.extra.get("epoch_samples")
    if record.config.get("max_steps") is None or not samples:
        return None
    from ..spec.schema import CellConfig

    per_epoch = CellConfig.model_validate(record.config).samples_per_epoch(samples)
    return [n / samples for n in per_epoch]


def _median_range(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def summary_row(g: Group) -> SummaryRow:
    """One row of plain numbers per group: the data behind both tables."""
    first = g.records[0]
    acc, best, loss = g.final_accuracy(), g.best_accuracy(), g.final_loss()
    train_med, train_min, train_max = g.train_throughput()
    eval_med, _, _ = _median_range(g.steady_epochs("eval_samples_per_s"))
    epoch_s, _, _ = _median_range(g.seconds_per_epoch())
    targeted = [r for r in g.records if r.config.get("target_accuracy") is not None and r.status != "failed"]
    ttt = [r.time_to_target_s for r in targeted]
    return SummaryRow(
        model=g.label,
        parameters=first.model["parameters"],
        epochs=g.epochs_trained(),
        seeds=len(g.records),
        diverged=len(g.with_status("diverged")),
        final_test_acc_mean=acc.mean if acc else None,
        final_test_acc_std=acc.std if acc else None,
        final_test_acc_ci95_low=acc.ci_low if acc else None,
        final_test_acc_ci95_high=acc.ci_high if acc else None,
        best_test_acc_mean=best.mean if best else None,
        best_test_acc_max=max(max(e.test_accuracy for e in r.epochs) for r in g.finished) if g.finished else None,
        final_test_loss_mean=loss.mean if loss else None,
        final_test_loss_std=loss.std if loss else None,
        final_test_error_pct=100 * (1 - acc.mean) if acc else None,
        paper_test_error_pct=g.paper_error_pct(),
        train_samples_per_s_median=train_med,
        train_samples_per_s_min=train_min,
        train_samples_per_s_max=train_max,
        throughput_flag="; ".join(g.throughput_flags()),
        eval_samples_per_s_median=eval_med,
        seconds_per_epoch_median=epoch_s,
        target_accuracy=first.config.get("target_accuracy"),
        time_to_target_s_median=median_reached(ttt),
        epochs_to_target_median=median_reached([r.epochs_to_target for r in targeted]),
        target_reached=f"{sum(t is not None for t in ttt)}/{len(ttt)}" if ttt else None,
        **_rule_columns(g),
        **_roofline_columns(g),
        peak_memory_mib_max=_peak_memory_mib(g),
        failed=len(g.with_status("failed")),
        spec=g.context.spec,
        dataset=g.context.dataset,
        data_identity=g.context.data_identity,
        device=g.context.device,
        hosts=len(g.hosts()) or None,
    )


def _peak_memory_mib(g: Group) -> float | None:
    """The largest training peak over seeds (CPU: the process's RSS high-water mark; CUDA: max_memory_allocated);
    None for records written before it was measured."""
    peaks = [r.extra.get("peak_rss_bytes") if r.peak_memory_bytes is None else r.peak_memory_bytes for r in g.records]
    peaks = [p for p in peaks if isinstance(p, int)]
    return max(peaks) / 2**20 if peaks else None


def _rule_columns(g: Group) -> dict:
    """Per rule (fixed-budget, mlperf, first-crossing): median seconds, seeds meeting it, and the verdict."""
    figures = g.rules
    out = {}
    for rule in RULES:
        f = figures.get(rule)
        name = rule.replace("-", "_")
        out |= {f"{name}_s_median": f and f.seconds, f"{name}_seeds": f and f.seeds, f"{name}_verdict": f and f.verdict}
    return out


def rule_ratios(groups: list[Group]) -> list[dict]:
    """Time-to-target ratios within one run: per rule, every group that meets it against the fastest that does."""
    out = []
    for rule in RULES:
        met = [(g, g.rules[rule]) for g in groups if rule in g.rules and g.rules[rule].met]
        targets = {g.config.get("target_accuracy") for g, _ in met}
        if len(met) < 2 or len(targets) != 1:
            continue
        fastest, best = min(met, key=lambda m: m[1].seconds)
        out += [{"rule": rule, "recipe": g.label, "against": fastest.label, "seconds": f.seconds,
                 "fastest_seconds": best.seconds, "ratio": f.seconds / best.seconds} for g, f in met if g is not fastest]
    return out


ROOFLINE_COLUMNS = ("train_flops_per_sample", "peak_gflops", "train_gflops", "train_fraction_of_peak", "eval_gflops",
                    "eval_fraction_of_peak")


def _roofline_columns(g: Group) -> dict:
    """Median over seeds of the achieved GFLOP/s stored with each run (None where no run has them)."""
    rates = [r.extra["roofline"] for r in g.records if isinstance(r.extra.get("roofline"), dict)]
    if not rates:
        return dict.fromkeys(ROOFLINE_COLUMNS)
    med = lambda k: statistics.median(x[k] for x in rates)  # noqa: E731
    return {"train_flops_per_sample": g.records[0].model.get("train_flops"), **{k: med(k) for k in ROOFLINE_COLUMNS[1:]}}


def speedups(groups: list[Group]) -> list[dict]:
    """Training throughput of each variant against its model's baseline, where they differ in one setting.

    The baseline is the model's group that comes first in the spec (the first matrix value, or
    the first entry of ``variants``, normally the default).
    """
    def position(g: Group) -> int:
        return min(r.extra.get("cell_index", i) for i, r in enumerate(g.records))

    out = []
    by_model: dict[str, list[Group]] = {}
    for g in groups:
        by_model.setdefault(g.model, []).append(g)
    for model, members in by_model.items():
        base = min(members, key=position)
        base_cfg = base.settings
        for g in members:
            cfg = g.settings
            diff = [k for k in cfg if k not in ("seed", "device") and cfg.get(k) != base_cfg.get(k)]
            base_speed, speed = base.row.train_samples_per_s_median, g.row.train_samples_per_s_median
            if g is base or len(diff) != 1 or not base_speed or not speed:
                continue
            out.append({"model": model, "setting": diff[0], "baseline": base_cfg.get(diff[0]), "variant": cfg.get(diff[0]),
                        "ratio": speed / base_speed, "baseline_samples_per_s": base_speed, "variant_samples_per_s": speed})
    return out


def harness_overhead(records: list[RunRecord]) -> tuple[float, float] | None:
    """Summed wall time of the cells and the fraction of it spent outside measured training and evaluation."""
    walls = [(r.extra["wall_seconds"], r.extra["measured_seconds"]) for r in records
             if isinstance(r.extra.get("measured_seconds"), (int, float)) and isinstance(r.extra.get("wall_seconds"), (int, float))]
    wall = sum(w for w, _ in walls)
    if not walls or wall <= 0:
        return None
    return wall, max(0.0, wall - sum(m for _, m in walls)) / wall


def measured_throughputs(groups: list[Group]) -> list[tuple[int, Group, float, float, float]]:
    """(position, group, median, min, max) of training samples/s for each group that measured any (plots and page)."""
    return [(i, g, *t) for i, g in enumerate(groups) if (t := g.train_throughput())[0] is not None]
