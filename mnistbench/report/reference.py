"""A run next to the shipped reference: where the reference is, and what differs from it, per configuration.

The project ships measured results in ``reference/<spec name>/`` (tracked by git); a user's runs go to
``results/<spec name>/`` (ignored). After a run, ``mnistbench run`` compares the two with the ``compare``
machinery (A = the reference, B = this run) and writes ``vs_reference.md`` and ``vs_reference.json``
into the results folder. Imports no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Optional

from .compare import FolderComparison, Match, comparison_markdown, compare_folders, to_json
from ..errors import MnistbenchError
from ..files import write_atomic
from .groups import Report
from ..layout import runs_dir
from ..results import load_records
from .words import table

REFERENCE = "reference"
VS_MD, VS_JSON = "vs_reference.md", "vs_reference.json"
# How far up from the spec file a checkout's reference/ is looked for (bench/x.yaml: one level up).
SPEC_PARENTS = 3


def has_runs(folder: Path) -> bool:
    runs = runs_dir(folder)
    return runs.is_dir() and any(runs.glob("*.json"))


def default_reference(spec_name: str, spec_path: Optional[Path] = None, cwd: Optional[Path] = None) -> Optional[Path]:
    """``reference/<spec name>`` next to the working folder, else above the spec file, else in the package checkout."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    bases = [cwd]
    if spec_path is not None:
        bases += list(Path(spec_path).resolve().parents)[:SPEC_PARENTS]
    bases.append(Path(__file__).resolve().parent.parent)  # an editable install's checkout
    for base in bases:
        folder = base / REFERENCE / spec_name
        if has_runs(folder):
            return folder if base != cwd else Path(REFERENCE) / spec_name
    return None


def matching_reference(default: Path, results: Path) -> Path:
    """The reference measured on this run's kind of machine: ``default`` (``reference/<spec name>``) or a folder beside
    it named ``<spec name>-<anything>`` (``reference/cpu-avx2``) whose runs are of the same spec and all on exactly
    this run's machine kind (every field known: CPU model, count, vector units, flags); else ``default``."""
    try:
        records = load_records(results)
    except MnistbenchError:
        return default
    here, specs = {r.machine for r in records}, {r.spec for r in records}
    if not here or any(None in astuple(m) for m in here):
        return default
    for folder in [Path(default)] + sorted(Path(default).parent.glob(f"{Path(default).name}-*")):
        try:
            theirs = load_records(folder) if has_runs(folder) else []
        except MnistbenchError:
            continue
        if theirs and {r.spec for r in theirs} == specs and {r.machine for r in theirs} == here:
            return folder
    return default


def chosen_reference(spec_name: str, spec_path: Path, given: Optional[Path], disabled: bool) -> Optional[Path]:
    """The reference folder a run ends compared with: ``--reference DIR`` (checked), the default one, or None."""
    if disabled:
        if given is not None:
            raise MnistbenchError("--reference and --no-reference exclude each other")
        return None
    if given is None:
        return default_reference(spec_name, spec_path)
    for folder in (Path(given), Path(given) / spec_name):  # a spec's folder, or a root holding <spec name>/
        if has_runs(folder):
            return folder
    raise MnistbenchError(f"--reference {given}: no run files there (expected {runs_dir(Path(given))}/*.json)")


# ---- the comparison ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One configuration here against the reference (accuracy in %, difference and interval in points)."""

    configuration: str
    seeds_here: int
    seeds_reference: int
    accuracy_here: Optional[float]
    accuracy_reference: Optional[float]
    difference: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    within_noise: Optional[bool]  # None: fewer than two seeds a side, the interval is unknown
    throughput_ratio: Optional[float]  # here / reference, median training samples/s

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class VsReference:
    results: Path
    reference: Path
    machine_here: str
    machine_reference: str
    rows: list[Row]
    comparison: FolderComparison
    same_kind: Optional[bool] = None  # None: the reference's records do not say everything that decides its speed


def _pct(x: Optional[float]) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else 100 * x


def row_of(m: Match) -> Row:
    """B is this run, A the reference: differences read "here − reference", the ratio "here / reference"."""
    c = m.accuracy
    known = c is not None and math.isfinite(c.ci_low)
    return Row(
        m.label, len(m.b.group.finished), len(m.a.group.finished),
        _pct(m.b.row.final_test_acc_mean), _pct(m.a.row.final_test_acc_mean),
        None if c is None else _pct(c.difference), _pct(c.ci_low) if known else None, _pct(c.ci_high) if known else None,
        (c.ci_low <= 0 <= c.ci_high) if known else None,
        None if m.throughput is None else m.throughput.ratio,
    )


def _records(report: Report) -> list:
    return [r for s in report.sections for r in s.records]


def machine_words(report: Report) -> str:
    """``cpu: AMD EPYC (2 CPUs, AVX2), 2 threads, torch 2.14.1+cpu``: the machine kinds and the torch of a folder's
    runs (a kind's vector units are missing where older records did not keep them)."""
    records = _records(report)
    if not records:
        return "no runs"
    kinds = sorted(dict.fromkeys(r.machine.label + (f", {r.environment['threads']} threads"
                                                     if r.environment.get("threads") else "") for r in records))
    torches = ", ".join(sorted({str(r.environment.get("torch")) for r in records}))
    return f"{'; '.join(kinds)}, torch {torches}"


def same_kind(here: Report, reference: Report) -> Optional[bool]:
    """Whether both folders ran on one machine kind with one torch: True, False, or None where they agree in what
    both recorded but a record leaves out what decides the speed (older files: no CPU vector units or flags)."""
    facts = lambda rep: {(r.machine, r.environment.get("threads"), r.environment.get("torch"))  # noqa: E731
                         for r in _records(rep)}
    a, b = facts(here), facts(reference)
    if not a or not b:
        return False
    if a == b and all(None not in astuple(m) for m, _, _ in a):
        return True
    agree = all(x.matches(y) and (tx, vx) == (ty, vy) for x, tx, vx in a for y, ty, vy in b)
    return None if agree else False


def compare_with_reference(results: Path, reference: Path) -> VsReference:
    c = compare_folders(Path(reference), Path(results))
    return VsReference(Path(results), Path(reference), machine_words(c.report_b), machine_words(c.report_a),
                       [row_of(m) for m in c.matches], c, same_kind(c.report_b, c.report_a))


# ---- what is printed and written ------------------------------------------------------------------------


def _f(x: Optional[float], fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _noise(row: Row) -> str:
    if row.within_noise is None:
        return "n/a (needs 2 seeds a side)"
    return "yes" if row.within_noise else "no"


def summary_text(vs: VsReference) -> str:
    """The short comparison ``mnistbench run`` prints after its tables."""
    rows = [[r.configuration, f"{r.seeds_here} / {r.seeds_reference}", _f(r.accuracy_here, ".2f"),
             _f(r.accuracy_reference, ".2f"), _f(r.difference, "+.2f"),
             "n/a" if r.ci_low is None else f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]", _noise(r),
             "n/a" if r.throughput_ratio is None else f"{r.throughput_ratio:.2f}×"] for r in vs.rows]
    c = vs.comparison
    same = {True: "the same kind of machine",
            None: "maybe another kind of machine: the reference's records do not say all that decides its speed "
                  "(written before the CPU's vector units were kept), so the speed ratio may compare the machines as "
                  "much as the code",
            False: "a different machine or torch build: the speed ratio compares them as much as the code"}[vs.same_kind]
    lines = [f"Compared with the reference {vs.reference}:",
             f"this machine: {vs.machine_here}; reference: {vs.machine_reference} ({same}).", ""]
    if rows:
        lines += [table(rows, ["configuration", "seeds here/ref", "acc % here", "acc % ref", "diff (points)", "95% CI",
                               "within noise?", "speed here/ref"]), ""]
    else:
        lines.append("No configuration of this run is in the reference.")
    data = sorted({(m.a.group.context.data_identity[:8], m.b.group.context.data_identity[:8]) for m in c.matches})
    if any(ref != here for ref, here in data):
        lines.append("Different data files (" + "; ".join(f"reference {ref}, here {here}" for ref, here in data)
                     + "): accuracy differences may come from the data.")
    if c.only_b or c.only_a:
        lines.append(f"{len(c.only_b)} configurations only here, {len(c.only_a)} only in the reference (not compared).")
    lines.append("Within noise: the 95% Welch interval of the difference holds 0. Speed: ratio of median training "
                 f"samples/s, above 1 when this machine trains faster. Full tables: {vs.results / VS_MD}")
    return "\n".join(lines)


def vs_reference_json(vs: VsReference) -> dict:
    """The comparison as plain data (strict JSON): the short rows, and the full ``compare --json`` document."""
    return {"results": str(vs.results), "reference": str(vs.reference), "this_machine": vs.machine_here,
            "reference_machine": vs.machine_reference, "same_kind_of_machine": vs.same_kind,
            "configurations": [r.to_json() for r in vs.rows],
            "units": "accuracy in %, difference and its 95% Welch interval in points (here − reference), "
                     "throughput_ratio = median training samples/s here / reference",
            "comparison": to_json(vs.comparison, [])}


def write_vs_reference(vs: VsReference) -> list[Path]:
    """``vs_reference.md`` (the short table, then the full ``compare`` report) and ``vs_reference.json``."""
    md = f"# {vs.results} vs the reference\n\n{summary_text(vs)}\n\n## Full comparison (A = reference, B = this run)\n\n"
    md += comparison_markdown(vs.comparison, []).replace("# Compare:", "### Compare:", 1) + "\n"
    paths = [vs.results / VS_MD, vs.results / VS_JSON]
    write_atomic(paths[0], md)
    write_atomic(paths[1], json.dumps(vs_reference_json(vs), indent=2) + "\n")
    return paths
