"""summary.csv and summary.md, built from synthetic run files the way `mnistbench report` builds them."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from records_factory import comparison, final_accuracy, make_record, report_of, write_records

from mnistbench.errors import MnistbenchError
from mnistbench.report.rules import median_reached
from mnistbench.report.build import write_report
from mnistbench.report.tables import summary_markdown
from mnistbench.results import load_records
from mnistbench.spec.keys import KEY_OMITTED_AT_DEFAULT

T_975_DOF2 = 4.302652729911275


def read_csv(folder: Path) -> list[dict]:
    with open(folder / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def three_seeds(tmp_path: Path) -> Path:
    return comparison(tmp_path / "demo", seeds=3)


def test_summary_csv_holds_mean_std_and_student_t_interval_per_model(three_seeds):
    write_report(three_seeds, plots=False)
    rows = {r["model"]: r for r in read_csv(three_seeds)}
    lenet = rows["lenet5"]
    # Seeds 98.9%, 99.0%, 99.1%: mean 99.0%, std 0.1 points, half-width t(0.975, 2)·0.001/√3.
    half = T_975_DOF2 * 0.001 / math.sqrt(3)
    assert float(lenet["final_test_acc_mean"]) == pytest.approx(0.99)
    assert float(lenet["final_test_acc_std"]) == pytest.approx(0.001)
    assert float(lenet["final_test_acc_ci95_low"]) == pytest.approx(0.99 - half, abs=1e-6)
    assert float(lenet["final_test_acc_ci95_high"]) == pytest.approx(0.99 + half, abs=1e-6)
    assert float(lenet["final_test_error_pct"]) == pytest.approx(1.0)
    assert float(lenet["final_test_loss_mean"]) == pytest.approx(0.04)
    assert float(lenet["final_test_loss_std"]) == pytest.approx(0.002)
    assert int(lenet["seeds"]) == 3 and int(lenet["diverged"]) == 0
    assert int(lenet["parameters"]) == 44_426


def test_summary_csv_has_the_paper_reference_error_for_models_with_a_counterpart(three_seeds):
    write_report(three_seeds, plots=False)
    paper = {r["model"]: r["paper_test_error_pct"] for r in read_csv(three_seeds)}
    assert paper == {"lenet5": "0.95", "custom-mlp": "2.95", "mlp-matched": ""}


def test_throughput_leaves_out_each_runs_first_epoch(tmp_path):
    speeds = [[500.0, 2000.0, 2100.0], [600.0, 1900.0, 2200.0]]
    records = [make_record("lenet5", s, train_samples_per_s=v, epochs=3) for s, v in enumerate(speeds)]
    folder = write_records(tmp_path / "demo", records)
    write_report(folder, plots=False)
    row = read_csv(folder)[0]
    assert float(row["train_samples_per_s_min"]) == 1900
    assert float(row["train_samples_per_s_max"]) == 2200
    assert float(row["train_samples_per_s_median"]) == pytest.approx(2050)
    assert "first (warm-up) epoch of each run excluded" in (folder / "summary.md").read_text()


def test_models_come_in_registry_order_not_file_name_order(three_seeds):
    # File names sort custom-mlp first; the registry lists lenet5 first.
    assert sorted(p.name for p in (three_seeds / "runs").iterdir())[0].startswith("custom-mlp")
    write_report(three_seeds, plots=False)
    assert [r["model"] for r in read_csv(three_seeds)] == ["lenet5", "custom-mlp", "mlp-matched"]
    md = (three_seeds / "summary.md").read_text()
    assert md.index("| lenet5 ") < md.index("| custom-mlp ") < md.index("| mlp-matched ")


def test_settings_that_vary_label_the_groups_and_sort_as_numbers(tmp_path):
    records = [make_record("lenet5", s, lr=lr) for lr in (0.01, 0.001, 0.1) for s in range(2)]
    groups = report_of(records, tmp_path).sections[0].groups
    assert [g.label for g in groups] == ["lenet5, lr=0.001", "lenet5, lr=0.01", "lenet5, lr=0.1"]
    assert all([r.seed for r in g.records] == [0, 1] for g in groups)


def test_summary_md_has_the_statistics_the_paper_column_and_the_comparisons(three_seeds):
    write_report(three_seeds, plots=False)
    md = (three_seeds / "summary.md").read_text()
    assert "## Across seeds (95% Student-t intervals)" in md
    assert "reference error % (LeCun et al. 1998)" in md
    lenet_row = next(line for line in md.splitlines() if line.startswith("| lenet5 ") and "[98." in line)
    cells = [c.strip() for c in lenet_row.strip("|").split("|")]
    assert cells[2] == "99.00 ± 0.10"  # final accuracy
    assert cells[3] == "[98.75, 99.25]"  # 99 ± 4.3027·0.1/√3 = 99 ± 0.248
    assert cells[8:10] == ["1.00", "0.95"]  # measured error next to the paper's
    assert "## Pairwise comparison of final test accuracy (Welch's t-test)" in md
    comp = next(line for line in md.splitlines() if line.startswith("| lenet5 ") and "| custom-mlp " in line)
    cells = [c.strip() for c in comp.strip("|").split("|")]
    assert cells[:4] == ["lenet5", "custom-mlp", "3 / 3", "+1.00"]
    assert cells[4] == "[+0.77, +1.23]"  # equal variances, dof 4: 1 ± 2.776·√(2·0.1²/3)
    assert float(cells[5]) < 0.001


def test_writing_the_report_twice_gives_identical_files(three_seeds):
    write_report(three_seeds, plots=False)
    first = [(three_seeds / n).read_bytes() for n in ("summary.csv", "summary.md")]
    write_report(three_seeds, plots=False)
    assert [(three_seeds / n).read_bytes() for n in ("summary.csv", "summary.md")] == first


def test_a_diverged_run_is_counted_but_left_out_of_the_accuracy_figures(three_seeds):
    write_records(three_seeds, [make_record("lenet5", 7, final_accuracy=0.10, status="diverged")])
    write_report(three_seeds, plots=False)
    lenet = read_csv(three_seeds)[0]
    assert (lenet["seeds"], lenet["diverged"]) == ("4", "1")
    assert float(lenet["final_test_acc_mean"]) == pytest.approx(0.99)
    md = (three_seeds / "summary.md").read_text()
    assert "4 (1 diverged)" in md
    assert "lenet5_seed-7 (loss became nan" in md


def test_one_seed_gives_values_without_intervals_or_p_values(tmp_path):
    folder = comparison(tmp_path / "demo", seeds=1)
    write_report(folder, plots=False)
    row = read_csv(folder)[0]
    assert row["final_test_acc_ci95_low"] == "nan"
    md = (folder / "summary.md").read_text()
    assert "99.00 (one seed)" in md
    comp = next(line for line in md.splitlines() if line.startswith("| lenet5 ") and "| custom-mlp " in line)
    assert [c.strip() for c in comp.strip("|").split("|")][3:] == ["+1.00", "n/a", "n/a"]


def test_two_seeds_give_an_interval_and_a_p_value(tmp_path):
    folder = comparison(tmp_path / "demo", seeds=2)
    write_report(folder, plots=False)
    row = read_csv(folder)[0]
    assert float(row["final_test_acc_mean"]) == pytest.approx(final_accuracy("lenet5", 0, 2) + 0.0005)
    assert float(row["final_test_acc_ci95_high"]) - float(row["final_test_acc_ci95_low"]) > 0.01  # t(1) = 12.7


@pytest.mark.figures
def test_the_learning_curves_are_embedded_when_plots_are_written(three_seeds):
    written = write_report(three_seeds)
    assert [p.name for p in written[:2]] == ["summary.csv", "summary.md"]
    assert {p.name for p in written[2:]} >= {"learning_curves.png", "final_error.png", "throughput.png"}
    md = (three_seeds / "summary.md").read_text()
    assert "](learning_curves.png)" in md
    assert "](final_error.png)" in md and "](throughput.png)" in md
    write_report(three_seeds, plots=False)
    assert "learning_curves.png" not in (three_seeds / "summary.md").read_text()


def test_a_folder_without_run_files_is_an_error(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(MnistbenchError, match="no run files"):
        write_report(tmp_path)


def test_time_to_target_median_counts_seeds_that_missed_it_as_slowest():
    assert median_reached([10.0, 12.0, None]) == 12.0
    assert median_reached([10.0, None, None]) is None
    assert median_reached([10.0, 12.0, 14.0]) == 12.0


def test_records_round_trip_through_the_run_files(tmp_path):
    from dataclasses import asdict

    written = [make_record(m, s, final_accuracy=0.9 + 0.01 * s) for m in ("lenet5", "custom-mlp") for s in range(2)]
    written.append(make_record("lenet5", 5, status="diverged"))
    loaded = {r.cell: r for r in load_records(write_records(tmp_path / "demo", written))}
    for r in written:
        back = asdict(loaded[r.cell])
        later = {k: v for k, v in KEY_OMITTED_AT_DEFAULT.items() if k not in r.config}  # settings added later, at their default
        expected = {**asdict(r), "config": {**r.config, **later}}
        assert repr(back) == repr(expected)  # repr: NaN compares equal to itself there


def test_speedups_compare_each_variant_with_its_models_first_cell(tmp_path):
    records = []
    for index, (loader, speed) in enumerate([("torchvision", 3_000.0), ("tensor", 12_000.0)], start=1):
        r = make_record("lenet5", 0, epochs=3, train_samples_per_s=[speed / 2, speed, speed], loader=loader)
        r.extra["cell_index"] = index
        records.append(r)
    report = report_of(records, tmp_path)
    assert report.sections[0].speedups == [{"model": "lenet5", "setting": "loader", "baseline": "torchvision",
                                            "variant": "tensor", "ratio": 4.0, "baseline_samples_per_s": 3_000.0,
                                            "variant_samples_per_s": 12_000.0}]
    # A section of its own, at the level of the others (one section: "##"), not nested under the one before it.
    headings = [line for line in summary_markdown(report).splitlines() if line.startswith("#")]
    assert "## Speed-ups between settings" in headings
    assert {h.split(" ")[0] for h in headings[1:]} == {"##"}


def test_roofline_and_harness_overhead_appear_in_the_summary(tmp_path):
    r = make_record("lenet5", 0, epochs=3)
    r.extra.update(
        wall_seconds=100.0,
        measured_seconds=96.0,
        roofline={"peak_gflops": 150.0, "train_gflops": 45.0, "eval_gflops": 30.0,
                  "train_fraction_of_peak": 0.3, "eval_fraction_of_peak": 0.2},
    )
    text = summary_markdown(report_of([r], tmp_path))
    assert "| lenet5 " in text and "| 150.0 " in text and "| 45.0 " in text and "| 30.0 " in text
    assert "Harness overhead: 4.0% of the cells' 100.0 s wall time" in text


def test_the_environment_names_the_allocator_and_says_when_the_runs_differ(tmp_path):
    from records_factory import ENVIRONMENT

    def runs(*allocators):
        return [make_record("lenet5", s, environment={**ENVIRONMENT, "malloc": a}) for s, a in enumerate(allocators)]

    one = summary_markdown(report_of(runs("tcmalloc", "tcmalloc"), tmp_path / "one"))
    assert "- Memory allocator: tcmalloc\n" in one
    mixed = summary_markdown(report_of(runs("libc", "tcmalloc"), tmp_path / "mixed"))
    assert "- Memory allocator: libc, tcmalloc (the runs differ: their speed figures mix allocators)" in mixed
    # Records written before the allocator was recorded keep the page they had.
    assert "Memory allocator" not in summary_markdown(report_of(runs(None, None)[:1], tmp_path / "old"))
