"""The docs a newcomer reads: every page reachable from the README, the module map drawn from the code, the
results-folder layout described once, and the README's spec example true to the schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_docs_page_is_linked_from_the_readme():
    readme = text(ROOT / "README.md")
    unlinked = [p.name for p in DOCS if f"](docs/{p.name})" not in readme and f"](docs/{p.name}#" not in readme]
    assert unlinked == []


def test_the_module_map_in_development_md_is_generated_from_the_package():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "module_map.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_module_of_the_package_is_named_in_development_md():
    page = text(ROOT / "docs" / "development.md")
    named = set(re.findall(r"^\*\*`(mnistbench/(?:\w+/)*)`\*\*", page, re.M))
    missing = []
    for module in sorted((ROOT / "mnistbench").rglob("*.py")):
        folder = module.parent.relative_to(ROOT).as_posix() + "/"
        shown = folder in named and f"- `{module.name}`" in section(page, folder)
        if not shown and not (module.name == "__init__.py" and folder in named and folder != "mnistbench/"):
            missing.append(module.relative_to(ROOT).as_posix())
    assert missing == [], "run python scripts/module_map.py"


def section(page: str, folder: str) -> str:
    """The part of the module map under one folder's heading."""
    start = page.index(f"**`{folder}`**")
    following = page.find("\n**`", start + 1)
    return page[start:following if following > 0 else len(page)]


def test_the_results_folder_layout_is_drawn_in_one_page_only():
    """A tree of a results folder (a code block listing runs/ and summary.csv) appears once, in docs/results.md."""
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *DOCS]
    drawn = [p.name for p in pages for block in re.findall(r"```[^\n]*\n(.*?)```", text(p), re.S)
             if re.search(r"^\s+runs/", block, re.M) and "summary.csv" in block]
    assert drawn == ["results.md"]


def test_the_readme_spec_example_lists_the_schedules_the_schema_accepts():
    """The optimizers' line is checked in test_new_user.py; the schedules' line beside it is checked here."""
    from mnistbench.spec.schema import Schedule

    listed = re.search(r"^schedule: \S+ +# (.+)$", text(ROOT / "README.md"), re.M)
    assert listed and listed.group(1).split(" | ") == list(get_args(Schedule))


def test_the_command_outputs_the_docs_link_are_generated_not_pasted():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_outputs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_page_reads_like_a_work_log():
    phrases = ["this session", "we tried", "we measured", "i measured", "for now", "so far", "at the time of writing"]
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *DOCS]
    found = [f"{p.name}: {phrase}" for p in pages for phrase in phrases if phrase in text(p).lower()]
    assert found == []


def test_the_ecosystem_page_stays_a_page():
    """It held two pasted command outputs once (550 lines); outputs are now committed files it links."""
    assert len(text(ROOT / "docs" / "ecosystem.md").splitlines()) <= 250
