"""The results page (index.html, written by `mnistbench report`) and the site index, from synthetic records:
tables, figures and their traces, caveats, the extra results sections, staleness, determinism, offline assets."""

from __future__ import annotations

import json
import shutil
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnistbench.cli import app
from mnistbench.report.groups import build_report
from mnistbench.report.build import check_report, write_report
from mnistbench.report.site import render_page
from records_factory import DATA, comparison, make_record, write_records

pytestmark = pytest.mark.figures  # these tests look at the figures a report draws

ROOT = Path(__file__).resolve().parents[1]


class Page(HTMLParser):
    """What a test reads from a page: tables with their header cells, figure JSON, caveats, links, script sources."""

    def __init__(self, html: str):
        super().__init__()
        self.tables, self.figures, self.caveats, self.links, self.scripts, self.ids = [], {}, [], [], [], set()
        self._in: list[str] = []
        self._figure: str | None = None
        self._caveat: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.ids |= {a["id"]} if "id" in a else set()
        if tag == "table":
            self.tables.append({"th": [], "rows": 0})
        elif tag == "th":
            self._in.append("th")
            self.tables[-1]["th"].append("")
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"] += 1
        elif tag == "script":
            self.scripts.append(a.get("src"))
            if "figure-data" in (a.get("class") or ""):
                self._figure = a["data-target"]
                self.figures[self._figure] = ""
        elif tag == "li" and "caveat" in (a.get("class") or ""):
            self._caveat = []
        elif tag == "a":
            self.links.append(a.get("href"))

    def handle_endtag(self, tag):
        if tag == "th" and self._in:
            self._in.pop()
        elif tag == "script":
            self._figure = None
        elif tag == "li" and self._caveat is not None:
            self.caveats.append("".join(self._caveat))
            self._caveat = None

    def handle_data(self, data):
        if self._in:
            self.tables[-1]["th"][-1] += data
        if self._figure:
            self.figures[self._figure] += data
        if self._caveat is not None:
            self._caveat.append(data)

    def figure(self, ident: str) -> dict:
        return json.loads(self.figures[ident])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three models x 3 seeds, one extra diverged seed, a duplicate run file and a data file that is not the official one."""
    folder = comparison(tmp_path_factory.mktemp("site") / "demo", seeds=3)
    unofficial = {**DATA, "files": [{**DATA["files"][0], "official": False}] + DATA["files"][1:]}
    for name in ("lenet5_seed-0.json", "custom-mlp_seed-0.json", "custom-mlp_seed-1.json", "custom-mlp_seed-2.json",
                 "mlp-matched_seed-0.json", "mlp-matched_seed-1.json", "mlp-matched_seed-2.json", "lenet5_seed-1.json",
                 "lenet5_seed-2.json"):
        path = folder / "runs" / name
        doc = json.loads(path.read_text())
        path.write_text(json.dumps({**doc, "data": unofficial}))
    diverged = make_record("lenet5", 3, status="diverged")
    diverged.data = unofficial
    write_records(folder, [diverged])
    shutil.copy(folder / "runs" / "lenet5_seed-0.json", folder / "runs" / "lenet5_seed-0.copy.json")
    write_report(folder, plots=False, page=True)  # the page does not need matplotlib's figures
    return folder


@pytest.fixture(scope="module")
def page(folder) -> Page:
    return Page((folder / "index.html").read_text(encoding="utf-8"))


def test_report_writes_the_page_and_its_script_in_the_manifest(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"index.html", "plotly.min.js"} <= set(manifest["outputs"])
    assert manifest["page_inputs"] == {}
    assert check_report(folder) == []


def test_page_has_real_sortable_tables_with_header_cells(page):
    headline = next(t for t in page.tables if "final test acc % (mean ± std)" in t["th"])
    assert headline["th"][0] == "model" and headline["rows"] == 4  # the header row and one per model
    assert len(page.tables) == 3 and all(t["th"] for t in page.tables)  # headline, across seeds, pairwise


def test_page_has_every_figure_with_one_trace_per_seed_and_mean(page):
    assert list(page.figures) == ["fig-learning-curves", "fig-final-error", "fig-throughput"]
    curves = page.figure("fig-learning-curves")
    # Per model and panel (accuracy, loss): 3 seeds, the mean, and the band's two edges; lenet5's diverged seed is not drawn.
    assert len(curves["data"]) == 3 * 2 * (3 + 1 + 2)
    seeds = [t for t in curves["data"] if t["name"].startswith("lenet5 · seed")]
    assert sorted(t["meta"][1] for t in seeds) == ["0", "0", "1", "1", "2", "2"]
    assert all("seed %{meta[1]}" in t["hovertemplate"] and "epoch %{x}" in t["hovertemplate"] for t in seeds)
    assert len({t["legendgroup"] for t in seeds}) == 3  # one legend entry hides a seed in both panels
    assert len(page.figure("fig-final-error")["data"]) == 3 * 2 + 1  # seeds and mean per model, the 1998 paper's errors
    assert len(page.figure("fig-throughput")["data"]) == 3


def test_figures_are_valid_plotly_with_titles_and_axis_labels(page):
    import plotly.graph_objects as go

    for ident in page.figures:
        fig = go.Figure(page.figure(ident))  # raises on a property Plotly does not know
        assert fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


def test_groups_differ_by_dash_and_marker_not_colour_alone(page):
    means = [t for t in page.figure("fig-learning-curves")["data"] if "mean" in t["name"] and t["yaxis"] == "y"]
    assert len({t["line"]["dash"] for t in means}) == len({t["marker"]["symbol"] for t in means}) == 3


def test_caveats_name_the_diverged_cell_the_duplicate_and_the_unofficial_file(page):
    text = "\n".join(page.caveats)
    assert "lenet5_seed-3" in text and "diverged" in text
    assert "lenet5_seed-0.copy.json" in text and "counted once" in text
    assert "not the official ones: train-images-idx3-ubyte.gz" in text


def test_page_is_offline_and_its_links_resolve(folder, page):
    assert page.scripts.count("plotly.min.js") == 1 and all(s in (None, "plotly.min.js") for s in page.scripts)
    for href in page.links:
        assert href.startswith("#") and href[1:] in page.ids or (folder / href).exists(), href
    from plotly.offline import get_plotlyjs

    assert (folder / "plotly.min.js").read_text(encoding="utf-8") == get_plotlyjs()


def test_page_is_deterministic(folder):
    report = build_report(folder)
    assert render_page(report, folder) == render_page(build_report(folder), folder) == (folder / "index.html").read_text(encoding="utf-8")


def test_report_check_finds_a_stale_or_edited_page(folder, tmp_path):
    copy = shutil.copytree(folder, tmp_path / "copy")
    (copy / "index.html").write_text((copy / "index.html").read_text(encoding="utf-8").replace("lenet5", "lenet6"), encoding="utf-8")
    assert check_report(copy) == ["index.html is not the one built with the others"]
    (copy / "inference").mkdir()
    (copy / "inference" / "latency.json").write_text("{}")
    result = CliRunner().invoke(app, ["report", "--check", str(copy)])
    assert result.exit_code == 1 and "inference/latency.json is not on the page (index.html)" in result.output


def test_extra_results_are_shown_when_present_and_a_broken_file_is_named(folder, tmp_path):
    copy = shutil.copytree(folder, tmp_path / "copy")
    (copy / "vs_reference.json").write_text(json.dumps({"reference": "reference/cpu", "models": [
        {"model": "lenet5", "accuracy_diff_points": 0.04}, {"model": "custom-mlp", "accuracy_diff_points": -0.1}]}))
    (copy / "inference").mkdir()
    (copy / "inference" / "onnx.json").write_text(json.dumps([{"backend": "onnxruntime", "latency_ms_p50": 0.21}]))
    (copy / "robustness").mkdir()
    (copy / "robustness" / "broken.json").write_text("{not json")
    write_report(copy, plots=False, page=True)
    page = Page((copy / "index.html").read_text(encoding="utf-8"))
    assert {"reference", "inference", "robustness"} <= page.ids
    assert any("accuracy_diff_points" in t["th"] for t in page.tables) and any("latency_ms_p50" in t["th"] for t in page.tables)
    assert "could not be read: JSONDecodeError" in (copy / "index.html").read_text(encoding="utf-8")
    assert check_report(copy) == []
    (copy / "inference" / "onnx.json").write_text("[]")
    assert check_report(copy) == ["inference/onnx.json changed after the page was built"]


def test_time_to_accuracy_figure_has_one_series_per_rule(tmp_path):
    folder = write_records(tmp_path / "ttt", [make_record(m, s, 0.99, target_accuracy=0.98) for m in ("lenet5", "mlp-matched")
                                              for s in range(3)])
    page = Page(render_page(build_report(folder), folder))
    fig = page.figure("fig-time-to-accuracy")
    assert [t["name"] for t in fig["data"]] == ["fixed-budget", "mlperf", "first-crossing (optimistic)"]
    assert all(len(t["x"]) == 2 for t in fig["data"])


def test_site_index_links_every_folder_and_lists_each_configuration(folder, tmp_path):
    other = comparison(tmp_path / "results" / "other", seeds=2)
    out = tmp_path / "site"
    result = CliRunner().invoke(app, ["site", str(folder), str(other), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = Page((out / "index.html").read_text(encoding="utf-8"))
    folders = next(t for t in page.tables if t["th"][:3] == ["folder", "spec", "machine"])
    headline = next(t for t in page.tables if "final test acc %" in t["th"])
    assert folders["rows"] == 3 and headline["rows"] == 1 + 3 + 3
    targets = {(out / h).resolve() for h in page.links}
    assert targets == {(folder / "index.html").resolve(), (other / "summary.md").resolve()}  # other has no page yet
    assert "no page yet" in (out / "index.html").read_text(encoding="utf-8")


def test_site_refuses_a_folder_without_runs_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["site", str(tmp_path), "--out", str(tmp_path / "site")])
    assert result.exit_code == 2 and "has no runs/ folder" in result.output and "Traceback" not in result.output


def test_templates_are_package_data():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "templates/*" in pyproject["tool"]["setuptools"]["package-data"]["mnistbench.report.site"]
    assert (ROOT / "mnistbench" / "report" / "site" / "templates" / "page.html.j2").is_file()


def test_a_nan_or_a_closing_tag_in_the_data_cannot_break_the_page():
    from mnistbench.report.site.figures import Figure

    text = Figure("f", "t", "c", [{"name": "</script><b>x", "y": [1.0, float("nan"), float("inf")]}], {}).json()
    assert "</script>" not in text and json.loads(text)["data"][0] == {"name": "</script><b>x", "y": [1.0, None, None]}


def test_a_validation_split_is_a_caveat(tmp_path):
    folder = write_records(tmp_path / "val", [make_record("lenet5", s, validation=5000) for s in range(2)])
    page = Page(render_page(build_report(folder), folder))
    assert any("validation" in c and "5000" in c for c in page.caveats)
