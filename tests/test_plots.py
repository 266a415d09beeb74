"""Figures written from synthetic run files: present, well-formed, reproducible, with any number of seeds."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from records_factory import comparison, make_record, write_records

from mnistbench.report.groups import build_report, curve, spread
from mnistbench.report.plots import _zoom_limits, write_plots
from mnistbench.results import load_records

pytestmark = pytest.mark.figures  # these tests look at the figures a report draws

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["learning_curves", "final_error", "throughput"]


def plot(folder: Path) -> list[Path]:
    return write_plots(folder, build_report(folder))


def check_figures(folder: Path, written: list[Path]) -> None:
    assert written == [folder / f"{n}.{ext}" for n in NAMES for ext in ("png", "svg")]
    for path in written:
        data = path.read_bytes()
        assert len(data) > 1000, path
        if path.suffix == ".png":
            assert data.startswith(PNG_SIGNATURE)
        else:
            assert ET.fromstring(data).tag.endswith("svg")
    assert not list(folder.glob(".*.tmp")), "temporary files left behind"


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory) -> tuple[Path, list[Path]]:
    folder = comparison(tmp_path_factory.mktemp("plots") / "demo", seeds=3, epochs=6)
    write_records(folder, [make_record("lenet5", 9, final_accuracy=0.2, epochs=6, status="diverged")])
    return folder, plot(folder)


def test_three_figures_are_written_as_png_and_svg(three_seeds):
    check_figures(*three_seeds)


def test_titles_name_dataset_device_and_seeds_and_the_legend_mentions_diverged_runs(three_seeds):
    folder, _ = three_seeds
    # Text is drawn as paths; matplotlib keeps each string in an SVG comment.
    svg = (folder / "learning_curves.svg").read_text()
    assert "mnist on Test CPU 9000, 2 threads, 3–4 seeds" in svg
    assert "1 of 4 diverged, not shown" in svg
    assert "band: 95% CI of the mean" in svg
    assert "accuracy (%)" in svg and "epoch" in svg
    error = (folder / "final_error.svg").read_text()
    assert "final test error (%)" in error and "LeCun et al. 1998" in error
    assert "samples/s" in (folder / "throughput.svg").read_text()


def test_plotting_twice_gives_identical_files(three_seeds):
    folder, written = three_seeds
    before = {p: p.read_bytes() for p in written}
    plot(folder)
    assert {p: p.read_bytes() for p in written} == before


@pytest.mark.parametrize("seeds", [1, 2])
def test_one_or_two_seeds_draw_a_min_max_band(tmp_path, seeds):
    folder = comparison(tmp_path / "demo", seeds=seeds, epochs=3)
    check_figures(folder, plot(folder))
    svg = (folder / "learning_curves.svg").read_text()
    assert ("band: min–max over seeds" in svg) == (seeds == 2)


def test_single_epoch_runs_and_all_diverged_models_still_give_figures(tmp_path):
    records = [make_record("lenet5", 0, epochs=1), make_record("custom-mlp", 0, epochs=1, status="diverged")]
    folder = write_records(tmp_path / "demo", records)
    check_figures(folder, plot(folder))
    assert "all diverged, not shown" in (folder / "learning_curves.svg").read_text()


def test_spread_is_a_t_interval_from_three_seeds_and_min_max_below():
    s = spread([97.0, 98.0, 99.0])
    assert (s.mean, s.n) == (98.0, 3)
    assert s.high - s.mean == pytest.approx(4.302652729911275 / 3**0.5)
    assert (spread([97.0, 99.0]).low, spread([97.0, 99.0]).high) == (97.0, 99.0)
    assert (spread([98.0]).low, spread([98.0]).high) == (98.0, 98.0)


def test_curves_average_over_seeds_per_epoch():
    records = [make_record("lenet5", 0, test_accuracy=[0.9, 0.98]), make_record("lenet5", 1, test_accuracy=[0.92, 0.99])]
    xs, spreads = curve(records, "test_accuracy", 100)
    assert xs == [1, 2]
    assert [s.mean for s in spreads] == pytest.approx([91.0, 98.5])


def test_the_zoomed_axis_holds_the_final_accuracies():
    records = [make_record("lenet5", s, final_accuracy=0.990 + 0.001 * s, epochs=8) for s in range(3)]
    test = curve(records, "test_accuracy", 100)[1]
    train = curve(records, "train_accuracy", 100)[1]
    lo, hi = _zoom_limits([(test, train)])
    assert lo < test[-1].low and test[-1].high < hi <= 100
    assert lo > 95  # zoomed: the first epochs' 95% fall below it


def test_importing_report_and_plots_does_not_import_torch():
    code = "import sys, mnistbench.report.build, mnistbench.report.plots; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
