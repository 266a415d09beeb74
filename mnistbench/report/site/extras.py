"""Results other commands leave in a folder (comparison with the reference, inference, robustness), read tolerantly.

Each is shown only when its file exists and parses as JSON; its layout is not assumed beyond "objects, lists of
objects and plain values", so a new field appears in the page without a change here. A file that cannot be read
is named on the page instead of breaking it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# Nested objects deeper than this are shown as JSON text in their cell.
MAX_DEPTH = 3
EXTRAS = (
    ("reference", "Comparison with the reference", ("vs_reference.json",)),
    ("inference", "Inference", ("inference/*.json",)),
    ("robustness", "Robustness", ("robustness/*.json",)),
)


@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Source:
    """One JSON file: its path relative to the folder, its tables, or why it could not be shown."""

    path: str
    tables: list[Table] = field(default_factory=list)
    error: str = ""


@dataclass
class Extra:
    id: str
    title: str
    sources: list[Source]


def extras(folder: Path) -> list[Extra]:
    """The sections whose files exist in ``folder``, in page order."""
    out = []
    for ident, title, patterns in EXTRAS:
        files = _files(folder, patterns)
        if files:
            out.append(Extra(ident, title, [read_source(folder, p) for p in files]))
    return out


def _files(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted(p for pattern in patterns for p in Path(folder).glob(pattern) if p.is_file())


def read_source(folder: Path, path: Path) -> Source:
    rel = path.relative_to(folder).as_posix()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        return Source(rel, error=f"could not be read: {type(e).__name__}")
    return Source(rel, tables(doc, rel))


def tables(doc: object, caption: str, depth: int = 0) -> list[Table]:
    """A list of objects is one table (a row each); an object gives a table of its plain values, then one per
    list or object inside it."""
    if isinstance(doc, list) and doc and all(isinstance(x, dict) for x in doc):
        headers = list(dict.fromkeys(k for x in doc for k in x))
        return [Table(caption, headers, [[cell(x.get(k)) for k in headers] for x in doc])]
    if not isinstance(doc, dict):
        return [Table(caption, ["value"], [[cell(doc)]])]
    plain = [[str(k), cell(v)] for k, v in doc.items() if not _nested(v) or depth >= MAX_DEPTH]
    out = [Table(caption, ["field", "value"], plain)] if plain else []
    for k, v in doc.items():
        if _nested(v) and depth < MAX_DEPTH:
            out += tables(v, f"{caption} › {k}", depth + 1)
    return out


def _nested(v: object) -> bool:
    return isinstance(v, dict) and bool(v) or isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def cell(v: object) -> str:
    """A value as table text: floats to 4 significant digits, nothing for null, JSON for anything nested."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)[:200]
    return str(v)


def page_input_files(folder: Path) -> list[str]:
    """The extra result files of ``folder`` its page shows, relative to it (the manifest records their hashes)."""
    return sorted(p.relative_to(folder).as_posix() for _, _, patterns in EXTRAS for p in _files(Path(folder), patterns))
