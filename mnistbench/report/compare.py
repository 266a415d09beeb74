"""Two results folders side by side: what changed from A (before) to B (after), configuration by configuration.

Groups are matched across the folders by their resolved configuration minus the seed and the
device setting: the model and every other setting, the dataset included. The device kind and
the data identity are *not* part of the match, because comparing them (CPU against GPU, one
machine against another, old data files against new) is often the point; they are shown for
each side instead. Groups found in one folder only are listed, never compared.

Sign convention: B relative to A, "after − before". Accuracy and loss differences are
mean(B) − mean(A) over finished seeds, with Welch's interval and p-value (``stats.welch``);
throughput is the ratio of medians B / A, with the range min(B)/max(A) to max(B)/min(A) over
steady epochs: the ratios of B's slowest epoch to A's fastest and of B's fastest to A's slowest,
so every epoch-by-epoch ratio lies inside it. It is a range, not a confidence interval.
Throughput measured under load or with a wide epoch spread on either side (``load.py``) is
flagged, and a ``--fail-on`` throughput check refuses to judge it (``Outcome.refused``).

Imports no torch (an import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import MnistbenchError
from ..results import finite_or_none
from .groups import Group, Report, build_reports
from .rows import SummaryRow
from ..train.load import THRESHOLDS
from .stats import Comparison, welch
from .words import table

# Settings that do not decide whether two groups are "the same configuration".
MATCH_IGNORES = ("seed", "device")
METRICS = {
    "accuracy": "B − A of mean final test accuracy, in percentage points",
    "loss": "B − A of mean final test loss",
    "throughput": "B / A of median training samples/s",
}
# Values are rounded to this many decimals before a --fail-on threshold is applied, so that
# -0.2 points computed as 100 × (0.988 − 0.990) = -0.20000000000000018 is not "below -0.2".
CHECK_DECIMALS = 9


@dataclass(frozen=True)
class Check:
    """One ``--fail-on`` condition: fail when ``metric op threshold`` holds for a matched configuration."""

    metric: str  # accuracy | loss | throughput
    op: str  # < | >
    threshold: float

    @property
    def text(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


_CHECK = re.compile(r"\s*([A-Za-z_]+)\s*([<>])\s*(\S+)\s*")


def parse_check(text: str) -> Check:
    """``accuracy<-0.2``, ``loss>0.01``, ``throughput<0.9``; anything else is one-line bad input."""
    m = _CHECK.fullmatch(text)
    if m and m.group(1) in METRICS:
        try:
            threshold = float(m.group(3))
        except ValueError:
            threshold = math.nan
        if math.isfinite(threshold):
            return Check(m.group(1), m.group(2), threshold)
    raise MnistbenchError(
        f"--fail-on {text[:60]!r}: expected METRIC<NUMBER or METRIC>NUMBER with METRIC one of accuracy (B − A, "
        "points), loss (B − A), throughput (B / A), e.g. 'accuracy<-0.2' or 'throughput<0.9'"
    )


@dataclass(frozen=True)
class Ratio:
    """Training throughput of B over A: ratio of medians, and the range of epoch-by-epoch ratios."""

    ratio: float  # median(B) / median(A)
    low: float  # min(B) / max(A)
    high: float  # max(B) / min(A)


@dataclass
class Side:
    """One folder's group of a configuration."""

    group: Group

    @property
    def row(self) -> SummaryRow:
        return self.group.row

    @property
    def config(self) -> dict:
        return self.group.config

    @property
    def context_words(self) -> str:
        c = self.group.context
        return f"{c.spec} · data {c.data_identity[:8]} · {c.device}"


@dataclass
class Match:
    """A configuration present in both folders, and what changed from A to B."""

    label: str
    a: Side
    b: Side
    accuracy: Optional[Comparison]  # B − A, fractions; None without a finished seed on a side
    loss: Optional[Comparison]  # B − A
    throughput: Optional[Ratio]  # B / A; None without throughput on a side

    def throughput_flags(self) -> list[str]:
        """Why either side's throughput is not a clean measurement (load.py), each prefixed by its side."""
        return [f"{tag} {why}" for tag, side in (("A", self.a), ("B", self.b)) for why in side.group.throughput_flags()]


@dataclass
class Unmatched:
    """A configuration in one folder only, with the settings in which the other folder's closest one differs."""

    label: str
    side: Side
    closest: Optional[dict[str, tuple]]  # {setting: (value in A, value in B)}; None: the other folder lacks the model


@dataclass
class FolderComparison:
    a: Path
    b: Path
    report_a: Report
    report_b: Report
    matches: list[Match]
    only_a: list[Unmatched]
    only_b: list[Unmatched]
    warnings: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """One check applied to one matched configuration (``label`` None: the check had nothing to apply to)."""

    check: Check
    label: Optional[str]
    value: Optional[float]  # in the check's unit: points, loss or ratio
    failed: bool
    message: str
    refused: bool = False  # a throughput check not judged: a side was measured under load or spread widely


def config_key(g: Group) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in g.config.items() if k not in MATCH_IGNORES))


def sides(report: Report) -> list[Side]:
    return [Side(g) for s in report.sections for g in s.groups]


def labeller(all_sides: list[Side]):
    """Label = the model and the settings that vary among the configurations of both folders."""
    configs = [s.config for s in all_sides]
    keys = dict.fromkeys(k for c in configs for k in c)
    varying = sorted(k for k in keys if k not in MATCH_IGNORES + ("model",) and len({repr(c.get(k)) for c in configs}) > 1)
    return lambda side: ", ".join([side.group.model] + [f"{k}={side.config.get(k)}" for k in varying])


def pair(a_sides: list[Side], b_sides: list[Side]) -> tuple[list[tuple[Side, Side]], list[Side], list[Side], list[str]]:
    """Pairs of A and B groups with one configuration; the groups left unpaired on each side; warnings.

    One group a side per configuration is the usual case. If one side has several (several
    sections: devices, data or specs in one folder), each is paired with the other side's one.
    If both have several, only groups with identical spec, data and device are paired.
    """
    by_a, by_b = _by_key(a_sides), _by_key(b_sides)
    pairs, left_a, left_b, warnings = [], [], [], []
    for key in list(by_a) + [k for k in by_b if k not in by_a]:
        ga, gb = by_a.get(key, []), by_b.get(key, [])
        if len(ga) <= 1 or len(gb) <= 1:
            pairs += [(x, y) for x in ga for y in gb]
            left_a += ga if not gb else []
            left_b += gb if not ga else []
            continue
        same = [(x, y) for x in ga for y in gb if x.group.context == y.group.context]
        pairs += same
        left_a += [x for x in ga if all(x is not p[0] for p in same)]
        left_b += [y for y in gb if all(y is not p[1] for p in same)]
        if len(same) < max(len(ga), len(gb)):
            warnings.append(f"{ga[0].group.model}: {len(ga)} groups in A and {len(gb)} in B share one configuration "
                            "(different spec, data or device); only those with identical spec, data and device are compared")
    return pairs, left_a, left_b, warnings


def _by_key(side_list: list[Side]) -> dict[tuple, list[Side]]:
    out: dict[tuple, list[Side]] = {}
    for s in side_list:
        out.setdefault(config_key(s.group), []).append(s)
    return out


def closest(side: Side, others: list[Side], side_is_a: bool) -> Optional[dict[str, tuple]]:
    """The settings (as A value, B value) in which the most similar group of the other folder, same model, differs."""
    mine = side.config
    best = None
    for other in others:
        theirs = other.config
        if theirs.get("model") != mine.get("model"):
            continue
        keys = [k for k in dict.fromkeys([*mine, *theirs]) if k not in MATCH_IGNORES]
        diff = {k: (mine.get(k), theirs.get(k)) if side_is_a else (theirs.get(k), mine.get(k))
                for k in keys if repr(mine.get(k)) != repr(theirs.get(k))}
        if best is None or len(diff) < len(best):
            best = diff
    return best


def _welch_b_minus_a(a: Group, b: Group, attr: str) -> Optional[Comparison]:
    xa = [getattr(r.final, attr) for r in a.finished]
    xb = [getattr(r.final, attr) for r in b.finished]
    return welch(xb, xa) if xa and xb else None


def _speeds(r: SummaryRow) -> tuple[Optional[float], Optional[float], Optional[float]]:
    return r.train_samples_per_s_median, r.train_samples_per_s_min, r.train_samples_per_s_max


def throughput_ratio(a: SummaryRow, b: SummaryRow) -> Optional[Ratio]:
    """B / A of the median training samples/s, with the range min(B)/max(A) .. max(B)/min(A)."""
    ka, kb = _speeds(a), _speeds(b)
    if any(v is None for v in ka + kb) or min(ka) <= 0:
        return None
    return Ratio(kb[0] / ka[0], kb[1] / ka[2], kb[2] / ka[1])


def compare_folders(a: Path, b: Path) -> FolderComparison:
    """Every configuration of A and B matched, compared, or listed as present in one folder only."""
    report_a, report_b = build_reports(Path(a), Path(b))
    a_sides, b_sides = sides(report_a), sides(report_b)
    label = labeller(a_sides + b_sides)
    pairs, left_a, left_b, warnings = pair(a_sides, b_sides)
    matches = [
        Match(label(x), x, y, _welch_b_minus_a(x.group, y.group, "test_accuracy"),
              _welch_b_minus_a(x.group, y.group, "test_loss"), throughput_ratio(x.row, y.row))
        for x, y in pairs
    ]
    warnings = [f"A ({a}): {w}" for w in report_a.warnings] + [f"B ({b}): {w}" for w in report_b.warnings] + warnings
    _disambiguate(matches)
    only_a = [Unmatched(label(s), s, closest(s, b_sides, True)) for s in left_a]
    only_b = [Unmatched(label(s), s, closest(s, a_sides, False)) for s in left_b]
    return FolderComparison(Path(a), Path(b), report_a, report_b, matches, only_a, only_b, warnings)


def _disambiguate(matches: list[Match]) -> None:
    """Where one configuration is matched more than once (a folder with several sections), add what tells them apart."""
    by_label: dict[str, list[Match]] = {}
    for m in matches:
        by_label.setdefault(m.label, []).append(m)
    for label, same in by_label.items():
        if len(same) < 2:
            continue
        words = [[] for _ in same]
        for tag in ("a", "b"):
            for attr, show in (("spec", str), ("data_identity", lambda d: f"data {d[:8]}"), ("device", str)):
                values = [getattr(getattr(m, tag).group.context, attr) for m in same]
                if len(set(values)) > 1:
                    for w, v in zip(words, values):
                        w.append(f"{tag.upper()} {show(v)}")
        for m, w in zip(same, words):
            m.label = f"{label} [{'; '.join(w)}]"


def check_value(condition: Check, m: Match) -> tuple[Optional[float], str]:
    """The matched configuration's value in the condition's unit, or None and why there is none."""
    if condition.metric == "throughput":
        return (m.throughput.ratio, "") if m.throughput else (None, "no training throughput on one side")
    c = m.accuracy if condition.metric == "accuracy" else m.loss
    if c is None:
        side = "A" if not m.a.group.finished else "B"
        return None, f"no finished (not diverged, not failed) run in {side}"
    return (100 * c.difference if condition.metric == "accuracy" else c.difference), ""


def check(comparison: FolderComparison, conditions: list[Check]) -> list[Outcome]:
    """Every ``--fail-on`` condition on every matched configuration. A condition fails closed: where it cannot be
    checked (no finished run, no throughput) or when no configuration is in both folders, it fails. A throughput
    condition on a configuration measured under load or with a wide spread is refused, neither passed nor failed."""
    out = []
    for condition in conditions:
        if not comparison.matches:
            out.append(Outcome(condition, None, None, True, f"{condition.text} checked nothing: no configuration is in both folders"))
        out += [_outcome(condition, m) for m in comparison.matches]
    return out


def _outcome(condition: Check, m: Match) -> Outcome:
    value, why = check_value(condition, m)
    flags = m.throughput_flags() if condition.metric == "throughput" else []
    if flags:
        return Outcome(condition, m.label, value, False, f"{m.label}: {condition.text} not judged: {'; '.join(flags)}", refused=True)
    if value is None:
        return Outcome(condition, m.label, None, True, f"{m.label}: {condition.text} cannot be checked: {why}")
    v = round(value, CHECK_DECIMALS)
    failed = v < condition.threshold if condition.op == "<" else v > condition.threshold
    unit = " points" if condition.metric == "accuracy" else ""
    what = {"accuracy": "accuracy B − A", "loss": "loss B − A", "throughput": "throughput B / A"}[condition.metric]
    verdict = condition.op if failed else ("≥" if condition.op == "<" else "≤")
    shown = f"{value:.4g}" if condition.metric == "throughput" else f"{value:+.4g}"  # a ratio, or a signed difference
    return Outcome(condition, m.label, value, failed, f"{m.label}: {what} = {shown}{unit} {verdict} {condition.threshold:g}")


# ---- JSON -------------------------------------------------------------------------------------------------

CONVENTION = ("B relative to A (after − before): accuracy and loss are mean(B) − mean(A) over finished seeds, accuracy "
              "as a fraction, with Welch's 95% interval and two-sided p-value; throughput is median(B) / median(A) of "
              "training samples/s with the range min(B)/max(A) to max(B)/min(A)")
SIDE_FIELDS = ("seeds", "diverged", "failed", "final_test_acc_mean", "final_test_acc_std", "final_test_loss_mean",
               "final_test_loss_std", "train_samples_per_s_median", "train_samples_per_s_min", "train_samples_per_s_max")


def _comparison_json(c: Optional[Comparison]) -> Optional[dict]:
    if c is None:
        return None
    return {k: finite_or_none(v) for k, v in (("difference", c.difference), ("ci95_low", c.ci_low), ("ci95_high", c.ci_high),
                                       ("p_value", c.p_value), ("dof", c.dof))}


def _side_json(s: Side) -> dict:
    c = s.group.context
    return {"spec": c.spec, "dataset": c.dataset, "data_identity": c.data_identity, "device": c.device,
            "finished": len(s.group.finished), **{k: finite_or_none(getattr(s.row, k)) for k in SIDE_FIELDS}}


def _config_json(s: Side) -> dict:
    return {k: v for k, v in s.config.items() if k not in MATCH_IGNORES}


def _folder_json(folder: Path, report: Report) -> dict:
    return {"folder": str(folder), "run_files": len(report.run_files),
            "sections": [{"spec": s.context.spec, "dataset": s.context.dataset, "data_identity": s.context.data_identity,
                          "device": s.context.device, "groups": len(s.groups)} for s in report.sections]}


def to_json(c: FolderComparison, outcomes: list[Outcome]) -> dict:
    """The comparison as plain data: ``json.dumps`` of it is strict JSON (no NaN)."""
    matched = [{"configuration": m.label, "config": _config_json(m.a), "a": _side_json(m.a), "b": _side_json(m.b),
                "accuracy": _comparison_json(m.accuracy), "loss": _comparison_json(m.loss),
                "throughput": None if m.throughput is None else
                {"ratio": m.throughput.ratio, "low": m.throughput.low, "high": m.throughput.high},
                "throughput_flags": m.throughput_flags()}
               for m in c.matches]
    alone = lambda us: [{"configuration": u.label, "config": _config_json(u.side), **_side_json(u.side),  # noqa: E731
                         "closest": None if u.closest is None else {k: {"a": x, "b": y} for k, (x, y) in u.closest.items()}}
                        for u in us]
    return {
        "a": _folder_json(c.a, c.report_a),
        "b": _folder_json(c.b, c.report_b),
        "convention": CONVENTION,
        "matched": matched,
        "only_in_a": alone(c.only_a),
        "only_in_b": alone(c.only_b),
        "checks": [{"check": o.check.text, "configuration": o.label, "value": finite_or_none(o.value), "failed": o.failed,
                    "refused": o.refused, "message": o.message} for o in outcomes],
        "regressions": sum(o.failed for o in outcomes),
        "refused": sum(o.refused for o in outcomes),
        "warnings": c.warnings,
    }


# ---- Markdown ---------------------------------------------------------------------------------------------


def _n(m: Match) -> str:
    return f"{len(m.a.group.finished)} / {len(m.b.group.finished)}"


def _mean(x: Optional[float], scale: float, digits: int) -> str:
    return "n/a" if x is None else f"{scale * x:.{digits}f}"


def _diff(c: Optional[Comparison], scale: float, digits: int) -> list[str]:
    """B − A, its interval and p-value as table cells."""
    if c is None:
        return ["n/a", "n/a", "n/a"]
    ci = "n/a" if math.isnan(c.ci_low) else f"[{scale * c.ci_low:+.{digits}f}, {scale * c.ci_high:+.{digits}f}]"
    return [f"{scale * c.difference:+.{digits}f}", ci, "n/a" if math.isnan(c.p_value) else f"{c.p_value:.3g}"]


def _speed(row: SummaryRow) -> str:
    med, lo, hi = _speeds(row)
    return "n/a" if med is None else f"{med:,.0f} [{lo:,.0f}–{hi:,.0f}]"


def _header(c: FolderComparison) -> list[str]:
    def folder(tag: str, path: Path, report: Report) -> str:
        where = "; ".join(s.context.title for s in report.sections)
        return f"- {tag}: `{path}` — {len(report.run_files)} run files; {where}"

    lines = [f"# Compare: {c.a} → {c.b}", "", folder("A (before)", c.a, c.report_a), folder("B (after)", c.b, c.report_b), "",
             "Every difference is B − A (after − before): a positive accuracy difference means B is more accurate, a "
             "positive loss difference means B's test loss is higher; throughput is the ratio B / A, above 1 when B "
             "trains faster.", "",
             f"{len(c.matches)} configuration{'s' if len(c.matches) != 1 else ''} in both folders, {len(c.only_a)} only in A, "
             f"{len(c.only_b)} only in B. Configurations are matched on the model and every setting but the seed and "
             "the device; device and data are shown, not matched.", ""]
    devices = {(m.a.group.context.device, m.b.group.context.device) for m in c.matches}
    data = {(m.a.group.context.data_identity, m.b.group.context.data_identity) for m in c.matches}
    if any(x != y for x, y in devices):
        lines += ["**Different devices:** " + "; ".join(f"A {x}, B {y}" for x, y in sorted(devices) if x != y)
                  + ". Throughput compares the machines as much as the code.", ""]
    if any(x != y for x, y in data):
        lines += ["**Different data files:** " + "; ".join(f"A data {x[:8]}, B data {y[:8]}" for x, y in sorted(data) if x != y)
                  + ". Accuracy and loss differences may come from the data.", ""]
    return lines


def _several_sections(c: FolderComparison) -> bool:
    return len(c.report_a.sections) > 1 or len(c.report_b.sections) > 1


def _accuracy_and_loss(c: FolderComparison) -> list[str]:
    acc = [[m.label, _n(m), _mean(m.a.row.final_test_acc_mean, 100, 2), _mean(m.b.row.final_test_acc_mean, 100, 2),
            *_diff(m.accuracy, 100, 2)] for m in c.matches]
    loss = [[m.label, _n(m), _mean(m.a.row.final_test_loss_mean, 1, 4), _mean(m.b.row.final_test_loss_mean, 1, 4),
             *_diff(m.loss, 1, 4)] for m in c.matches]
    return [
        "## Final test accuracy", "",
        table(acc, ["configuration", "n A / n B", "A %", "B %", "B − A (points)", "95% CI", "p-value"]), "",
        "## Final test loss", "",
        table(loss, ["configuration", "n A / n B", "A", "B", "B − A", "95% CI", "p-value"]), "",
        "n: finished seeds (diverged and failed runs are left out). Means over seeds; B − A with its 95% "
        "Welch–Satterthwaite interval and two-sided p-value (n/a with fewer than two seeds a side). p-values are "
        "not corrected for the number of configurations.", "",
    ]


def _throughput(c: FolderComparison) -> list[str]:
    rows = []
    for m in c.matches:
        t = m.throughput
        rows.append([m.label, _speed(m.a.row), _speed(m.b.row), "n/a" if t is None else f"{t.ratio:.3f}×",
                     "n/a" if t is None else f"[{t.low:.3f}–{t.high:.3f}]"])
    return ["## Training throughput", "",
            table(rows, ["configuration", "A samples/s median [min–max]", "B samples/s median [min–max]", "B / A",
                          "range"]), "",
            "Samples/s: median and range over steady epochs (each run's first epoch left out) and seeds. B / A: ratio "
            "of the medians; range: B's slowest over A's fastest to B's fastest over A's slowest epoch, which holds "
            "every epoch-by-epoch ratio (a range, not a confidence interval).", ""] + _flagged(c)


def _flagged(c: FolderComparison) -> list[str]:
    """The configurations whose throughput was measured under load or spread widely on a side: not judged."""
    flagged = [(m.label, m.throughput_flags()) for m in c.matches]
    flagged = [(label, flags) for label, flags in flagged if flags]
    if not flagged:
        return []
    return [f"**⚠ Throughput not judged** (measured under load or with a wide spread: {THRESHOLDS}; "
            "docs/statistics.md): rerun these on a quiet machine before reading their ratio.", ""] + \
        [f"- {label}: {'; '.join(flags)}" for label, flags in flagged] + [""]


def _sides_table(c: FolderComparison) -> list[str]:
    if not c.matches or not _several_sections(c):
        return []
    rows = [[m.label, m.a.context_words, m.b.context_words] for m in c.matches]
    return ["## Where each side ran", "", table(rows, ["configuration", "A", "B"]), ""]


def _closest_words(u: Unmatched, other: str) -> str:
    if u.closest is None:
        return f"no {u.side.group.model} in {other}"
    return f"closest in {other}: " + ", ".join(f"{k} {x} → {y}" for k, (x, y) in u.closest.items())


def _unmatched(c: FolderComparison) -> list[str]:
    lines = []
    for tag, other, us in (("A", "B", c.only_a), ("B", "A", c.only_b)):
        if us:
            lines += [f"## Only in {tag} (not compared)", ""]
            lines += [f"- {u.label} ({len(u.side.group.records)} seeds; {u.side.context_words}); {_closest_words(u, other)}"
                      for u in us] + [""]
    return lines + (["Closest: the same model's configuration in the other folder that differs in the fewest settings, "
                     "given as A → B.", ""] if lines else [])


def _checks(outcomes: list[Outcome]) -> list[str]:
    if not outcomes:
        return []
    lines = ["## Checks (`--fail-on`)", ""]
    for text in dict.fromkeys(o.check.text for o in outcomes):
        mine = [o for o in outcomes if o.check.text == text]
        bad, refused = [o for o in mine if o.failed], [o for o in mine if o.refused]
        if mine[0].label is None:
            lines.append(f"- `{text}`: **failed**: {mine[0].message}")
            continue
        verdict = "**failed**" if bad else "not judged" if refused else "passed"
        not_judged = f", {len(refused)} not judged" if refused else ""
        lines.append(f"- `{text}`: {verdict} ({len(bad)} of {len(mine)} configuration{'s' if len(mine) != 1 else ''} "
                     f"failing{not_judged})")
        lines += [f"  - {o.message}" for o in bad + refused]
    return lines + [""]


def comparison_markdown(c: FolderComparison, outcomes: list[Outcome]) -> str:
    """``compare``'s report: the matched configurations' differences, those in one folder only, and the checks."""
    body = _header(c)
    if c.matches:
        body += _accuracy_and_loss(c) + _throughput(c) + _sides_table(c)
    return "\n".join(body + _unmatched(c) + _checks(outcomes)).rstrip("\n")
