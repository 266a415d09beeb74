"""A results folder's ``index.html``: the report's tables, interactive figures and caveats in one offline page.

The page is rendered from the same ``Report`` as ``summary.md`` (the tables are ``summary.md``'s own markdown,
rendered to HTML), so the two never disagree. Plotly's JavaScript is one shared file beside the page
(``plotly.min.js``): identical in every folder, so git stores it once, and the page itself stays small.
Nothing in the output depends on the time or on chance, so a rebuild from the same run files is byte-identical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ...files import write_atomic
from ..groups import Report, describe_devices
from ..tables import summary_markdown
from .extras import extras
from .figures import figures

PAGE = "index.html"
ASSET = "plotly.min.js"
# Files of the folder the page links to when they exist (the tables, the run files).
LINKED = (("summary.md", "summary (markdown)"), ("summary.csv", "summary (CSV)"), ("manifest.json", "manifest"), ("runs", "run files"))


@lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(loader=PackageLoader("mnistbench.report.site", "templates"), autoescape=select_autoescape(default=True),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


@dataclass(frozen=True)
class Caveat:
    """A data caveat shown at the top of the page: ``kind`` names it in one word (CSS class and test hook)."""

    kind: str
    text: str


def caveats(report: Report) -> list[Caveat]:
    """Everything the markdown flags about the data: warnings (duplicates, mixed sections), diverged or failed cells,
    a validation split in place of the test set, data files that are not the official ones."""
    out = [Caveat("warning", w) for w in report.warnings]
    for s in report.sections:
        where = f" ({s.context.title})" if len(report.sections) > 1 else ""
        for status, words in (("diverged", "diverged: left out of every accuracy and loss figure"),
                              ("failed", "failed (the cell raised): left out of every figure")):
            for r in (r for r in s.records if r.status == status):
                out.append(Caveat(status, f"{r.cell}{where} {words}" + (f" — {r.note}" if r.note else "")))
        held_out = sorted({r.config.get("validation") or 0 for r in s.records} - {0})
        if held_out:
            out.append(Caveat("validation", f"runs with a validation split{where} are evaluated on the last "
                                            f"{' or '.join(map(str, held_out))} training samples: their 'test' figures are validation figures"))
        unofficial = [f.get("file") for f in s.data["files"] if not f.get("official")]
        if unofficial:
            out.append(Caveat("data", f"data files that are not the official ones{where}: {', '.join(map(str, unofficial))}; "
                                      "read accuracy figures with that caveat"))
    return out


def summary_html(report: Report) -> str:
    """``summary.md``'s text (without its title and image links) as HTML: real tables with header cells."""
    from markdown_it import MarkdownIt

    text = re.sub(r"\A# .*\n", "", summary_markdown(report, []))
    text = re.sub(r"^(#+) ", r"#\1 ", text, flags=re.M)  # one level down: they sit under the page's "Tables" heading
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def render_page(report: Report, folder: Path, present: set[str] | None = None) -> str:
    """The page's HTML; ``present``: names at the top of the folder the page may link to (default: what is there)."""
    folder = Path(folder)
    present = present if present is not None else {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    s0 = report.sections[0]
    records = [r for s in report.sections for r in s.records]
    return environment().get_template("page.html.j2").render(
        title=report.title,
        subtitle=f"{len(records)} runs on {describe_devices(records)}; torch {s0.environment.get('torch')}, "
                 f"mnistbench {s0.environment.get('mnistbench')} (commit {s0.environment.get('git_commit') or 'unknown'})",
        caveats=caveats(report),
        figures=figures(report),
        extras=extras(folder),
        summary=summary_html(report),
        links=[(name + ("/" if name == "runs" else ""), words) for name, words in LINKED if name in present],
        asset=ASSET,
    )


def write_page(folder: Path, report: Report, source: Path | None = None) -> list[Path]:
    """Write ``index.html`` and ``plotly.min.js`` into ``folder``; ``source``: the results folder the page describes
    (its extra results and files), when ``folder`` is a staging folder. Returns the paths written."""
    folder = Path(folder)
    source = Path(source) if source is not None else folder
    present = {p.name for p in source.iterdir()} | {"summary.md", "summary.csv", "manifest.json"}
    page, asset = folder / PAGE, folder / ASSET
    write_atomic(page, render_page(report, source, present).encode("utf-8"))
    write_atomic(asset, plotly_js().encode("utf-8"))
    return [page, asset]
