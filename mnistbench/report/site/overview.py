"""The site index: one page linking every results folder's page, with a cross-folder table of the headline figures
and the machine each ran on. Figures are read from each folder's run files through ``groups.py``, as its report is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import MnistbenchError
from ...files import write_atomic
from ..groups import Group, build_report, describe_devices
from ...layout import runs_dir
from ..rules import RULES
from ..tables import _ci, _mean_std, _num
from .page import PAGE, environment

# Where `mnistbench site` looks when given no folders: shipped results first, then local runs.
ROOTS = ("reference", "results")


@dataclass(frozen=True)
class Folder:
    """One results folder as the index lists it; ``href`` is relative to the index page."""

    name: str
    href: str
    spec: str
    machines: str
    runs: int
    status: str  # "up to date", or why the page or tables are stale, or that the folder has no page yet


@dataclass(frozen=True)
class Headline:
    folder: str
    href: str
    machine: str
    model: str
    seeds: str
    accuracy: str
    interval: str
    throughput: str
    fixed_budget: str


def discover(base: Path = Path("."), roots: tuple[str, ...] = ROOTS) -> list[Path]:
    """Every folder with run files under ``roots`` (relative to ``base``), in order: reference, then local."""
    found = []
    for root in roots:
        found += sorted({p.parent for p in (base / root).rglob("runs") if p.is_dir() and "runs" not in p.parent.parts})
    return found


def _status(folder: Path) -> str:
    from ..build import check_report

    if not (folder / PAGE).is_file():
        return f"no page yet: run mnistbench report {folder}"
    problems = check_report(folder)
    return "up to date" if not problems else f"stale ({problems[0]}): run mnistbench report {folder}"


def _headline(name: str, href: str, machine: str, g: Group) -> Headline:
    fb = g.rules.get(RULES[0])
    fixed = "" if fb is None else (f"{fb.seconds:.2f}" if fb.met else fb.verdict)
    med, _, _ = g.train_throughput()
    return Headline(name, href, machine, g.label, str(len(g.records)), _mean_std(g.final_accuracy()), _ci(g.final_accuracy()),
                    _num(med), fixed if g.config.get("target_accuracy") is not None else "")


def entries(folders: list[Path], out: Path) -> tuple[list[Folder], list[Headline]]:
    folders_out, rows = [], []
    for folder in folders:
        if not runs_dir(folder).is_dir():
            raise MnistbenchError(f"{folder} is not a results folder: it has no runs/ folder")
        report = build_report(folder)
        target = folder / PAGE if (folder / PAGE).is_file() else folder / "summary.md"
        href = Path(os.path.relpath(target.resolve(), out.resolve())).as_posix()
        name = _shown(folder)
        records = [r for s in report.sections for r in s.records]
        folders_out.append(Folder(name, href, report.title, describe_devices(records), len(records), _status(folder)))
        for s in report.sections:
            rows += [_headline(name, href, describe_devices(s.records), g) for g in s.groups]
    return folders_out, rows


def _shown(folder: Path) -> str:
    """The folder as the user would type it: relative to the working folder when it lies below it."""
    rel = os.path.relpath(folder.resolve())
    return Path(rel if not rel.startswith("..") else folder).as_posix()


def build_site(folders: list[Path], out: Path) -> Path:
    """Write ``out/index.html`` over ``folders``; return its path."""
    if not folders:
        raise MnistbenchError(f"no results folders given or found under {' or '.join(ROOTS)}/")
    out = Path(out)
    folder_list, rows = entries([Path(f) for f in folders], out)
    html = environment().get_template("site.html.j2").render(folders=folder_list, rows=rows)
    write_atomic(out / PAGE, html.encode("utf-8"))
    return out / PAGE
