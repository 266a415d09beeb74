"""Project metadata agrees with itself: one version everywhere, the license and the citation."""

import re
from pathlib import Path

import pytest
import yaml

from mnistbench import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_version_license_and_citation_agree():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__ and project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 mnistbench contributors\n")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and str(citation["version"]) == __version__
    paper = citation["references"][0]
    assert paper["doi"] == "10.1109/5.726791" and paper["year"] == 1998
    assert [a["family-names"] for a in paper["authors"]] == ["LeCun", "Bottou", "Bengio", "Haffner"]
    assert (paper["volume"], paper["issue"], paper["start"], paper["end"]) == (86, "11", 2278, 2324)


def test_changelog_has_an_unreleased_section_and_the_current_version():
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == "Unreleased" and __version__ in headings
