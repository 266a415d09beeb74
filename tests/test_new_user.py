"""What a new user met on a fresh clone (issue 21, "Smaller defects"): each story fails on the code before the fix."""

from __future__ import annotations

import shlex
import sys
from io import StringIO
from pathlib import Path

from typer.testing import CliRunner

from conftest import write_spec
from cli_helpers import resume_hint
from mnistbench.cli import app
from test_makefile import Host

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


# ---------------------------------------------------------------- the resume hint works where it is printed


def test_under_make_the_resume_hint_is_the_make_command_with_the_options_in_args(monkeypatch):
    monkeypatch.setenv("MNISTBENCH_INVOKED_AS", "make bench-cpu SPEC=bench/cpu.yaml")
    hint = resume_hint("bench/cpu.yaml", "--data-dir", "/data/m nist", "--no-download")
    assert hint == "make bench-cpu SPEC=bench/cpu.yaml ARGS=" + shlex.quote("--data-dir '/data/m nist' --no-download")
    assert shlex.split(shlex.split(hint)[-1].removeprefix("ARGS="))[1] == "/data/m nist"  # the shell gives it back
    assert resume_hint("bench/cpu.yaml") == "make bench-cpu SPEC=bench/cpu.yaml"
    assert resume_hint("bench/cpu.yaml", "--results-dir", "elsewhere") == \
        "make bench-cpu SPEC=bench/cpu.yaml ARGS='--results-dir elsewhere'"


def test_outside_the_venv_the_resume_hint_names_the_program_by_its_path(monkeypatch, tmp_path):
    program = tmp_path / "venv" / "bin" / "mnistbench"
    monkeypatch.setattr(sys, "argv", [str(program), "run"])
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))  # not on PATH, as after `make bench-smoke`
    monkeypatch.delenv("MNISTBENCH_INVOKED_AS", raising=False)
    assert resume_hint("s.yaml") == f"{program} run s.yaml --results-dir results"


def test_make_bench_cpu_tells_mnistbench_how_it_was_invoked(tmp_path):
    host = Host(tmp_path)
    seen = tmp_path / "invoked-as"
    (host.venv / "bin" / "mnistbench").write_text(f'#!/usr/bin/env bash\nprintf "%s" "$MNISTBENCH_INVOKED_AS" > {seen}\n')
    assert host.make("bench-cpu", "SPEC=bench/smoke.yaml").returncode == 0
    assert seen.read_text() == "make bench-cpu SPEC=bench/smoke.yaml"


# ---------------------------------------------------------------- validate: every problem at once


def test_validate_names_every_problem_of_a_spec_at_once_each_on_its_own_line(tmp_path):
    bad = write_spec(tmp_path / "typos.yaml", "modle: lenet5\nepochs: -1\nlr: fast\nmatrix:\n  seeds: [0, 1]\n")
    also_bad = write_spec(tmp_path / "other.yaml", "model: lenet5\nbatch_size: 0\n")
    result = cli("validate", bad, also_bad)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert all(line.startswith("mnistbench: error: ") for line in lines), lines
    assert [line.split(": ")[3] for line in lines] == ["modle", "matrix.seeds", "epochs", "lr", "batch_size"], lines
    assert "did you mean model?" in lines[0] and "did you mean seed?" in lines[1]


def test_one_problem_is_still_one_line(tmp_path):
    result = cli("validate", write_spec(tmp_path / "one.yaml", "model: lenet5\nepochs: 0\n"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "epochs" in result.stderr


# ---------------------------------------------------------------- help text


def test_help_shows_the_ray_extra_and_no_bool_label_on_flags():
    run_help, top_help = cli("run", "--help").stdout, cli("--help").stdout
    assert "pip install 'mnistbench[ray]'" in run_help
    assert "<bool>" not in run_help and "<bool>" not in top_help
    assert "--version" in top_help and "--max-retries" in run_help


# ---------------------------------------------------------------- learning-curve bands respect the scale


def test_learning_curve_bands_stay_inside_what_the_axes_can_show(tmp_path):
    from records_factory import make_record, write_records
    from mnistbench.report.groups import build_report
    from mnistbench.report.plots import _learning_curves

    losses = [[3.0, 0.1, 0.01], [3.0, 0.1, 0.02], [3.2, 0.2, 0.3]]  # a symmetric interval at epoch 3 runs below 0
    accuracy = [[0.90, 0.97, 0.99], [0.90, 0.97, 0.999], [0.85, 0.93, 0.95]]  # ... and above 100% here
    folder = write_records(tmp_path / "wide", [make_record("lenet5", s, test_accuracy=accuracy[s], test_loss=losses[s])
                                               for s in range(3)])
    fig = _learning_curves("wide", "", build_report(folder).sections[0].groups)
    ax_acc, _, ax_loss = fig.axes[:3]
    band = lambda ax: [y for c in ax.collections for p in c.get_paths() for _, y in p.vertices]  # noqa: E731
    assert ax_loss.get_yscale() == "log" and band(ax_loss) and min(band(ax_loss)) > 0
    assert band(ax_acc) and max(band(ax_acc)) <= 100.0
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("clipped to accuracy ≤ 100%" in t for t in legend), legend
    assert "geometric mean" in ax_loss.get_ylabel()


# ---------------------------------------------------------------- the run's last line


def test_the_wall_clock_in_the_last_line_counts_from_the_start_of_the_command(monkeypatch, capsys):
    import time

    import psutil

    from mnistbench import cli as cli_module
    from mnistbench.run.runner import RunSummary
    from records_factory import make_record

    started = psutil.Process().create_time()
    monkeypatch.setattr(time, "time", lambda: started + 17.3)  # the command has run 17.3 s, imports included
    summary = RunSummary(Path("results/demo"), ran=[make_record("lenet5", 0)], wall_seconds=10.6)
    cli_module._print_run_summary(summary, as_json=False)
    line = capsys.readouterr().out
    assert "1 cell run (1 finished, 0 diverged, 0 failed)" in line
    assert "wall clock 17.3s since the command started" in line and "10.6" not in line


def test_one_is_singular_in_progress_and_dry_run(tmp_path):
    from mnistbench.run.events import Event
    from mnistbench.run.progress import progress_for
    from mnistbench.spec.schema import Cell, CellConfig

    spec = write_spec(tmp_path / "one.yaml", "model: lenet5\nepochs: 1\noptimizer: adam\n")
    dry = cli("run", spec, "--dry-run").stdout
    assert "spec 'one': 1 cell\n" in dry
    cell = Cell("lenet5_seed-0", CellConfig(model="lenet5", epochs=1))
    out = StringIO()
    with progress_for(out) as progress:
        progress(Event("start", total=1, message="here"))
        progress(Event("cell", cell, 1, 1, epochs=1))
    assert "running 1 cell -> here" in out.getvalue() and "lenet5_seed-0: 1 epoch\n" in out.getvalue()


def test_dry_run_lists_only_the_settings_that_apply(tmp_path):
    (tmp_path / "nets.py").write_text("from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    adam = cli("run", write_spec(tmp_path / "adam.yaml", "model: ./nets.py:build\noptimizer: adam\n"), "--dry-run").stdout
    fixed = adam.split("fixed settings: ")[1]
    assert "momentum" not in fixed and "model_sha256" not in fixed and "optimizer=adam" in fixed
    sgd = cli("run", write_spec(tmp_path / "sgd.yaml", "model: lenet5\noptimizer: sgd\n"), "--dry-run").stdout
    assert "momentum=0.9" in sgd.split("fixed settings: ")[1]


# ---------------------------------------------------------------- the words match the code


def text(path: str) -> str:
    return (Path(__file__).resolve().parent.parent / path).read_text()


def test_the_smoke_spec_says_which_models_it_runs():
    from mnistbench.models.zoo import MODELS
    from mnistbench.spec.schema import load_spec

    root = Path(__file__).resolve().parent.parent
    ran = {c.config.model for c in load_spec(root / "bench" / "smoke.yaml").cells()}
    assert set(MODELS.names()) - ran, "smoke.yaml runs every registered model: the words below would then be right"
    assert "every model" not in text("bench/smoke.yaml").splitlines()[0]
    assert "every model" not in text("docs/specs.md")


def test_every_optimizer_and_every_shipped_spec_is_in_the_docs():
    from typing import get_args

    from mnistbench.spec.schema import Optimizer

    listed = " | ".join(get_args(Optimizer))
    assert f"# {listed}\n" in text("README.md") and f"# {listed}\n" in text("docs/specs.md")
    root = Path(__file__).resolve().parent.parent
    missing = [p.name for p in sorted((root / "bench").glob("*.yaml")) if f"bench/{p.name}" not in text("docs/specs.md")]
    assert missing == []


def test_the_makefiles_pointers_name_sections_that_exist():
    import re

    for doc, section in re.findall(r'\((README|docs/[a-z-]+\.md), "([^"]+)"\)', text("Makefile")):
        headings = re.findall(r"^#+ (.+)$", text("README.md" if doc == "README" else doc), re.M)
        assert section in headings, f"Makefile points to {doc}, {section!r}, which has no such heading"
    assert 'docs/performance.md, "Micro-benchmarks"' in text("Makefile")


def test_the_readme_says_what_the_founding_document_is_where_it_first_names_it():
    readme = text("README.md")
    first = readme.index("founding document")
    assert "brief" in readme[first - 100:first] and "784-500-150-10" in readme[first:first + 300]


def test_the_docs_say_mnistbench_report_takes_the_report_lock_as_the_code_does():
    import inspect

    from mnistbench import cli as cli_module

    assert "report_lock(results_dir)" in inspect.getsource(cli_module.report)
    robustness = text("docs/robustness.md")
    assert "`mnistbench report` takes no lock" not in robustness and "`mnistbench report` takes the folder's report lock" in robustness


def test_timings_are_ranges_per_machine_kind_and_name_the_cpu_features():
    performance = text("docs/performance.md")
    assert "## Timings" in performance and "AVX-512" in performance and "AVX2" in performance
    assert "docs/performance.md#timings" in text("README.md") and "3 to 6 minutes" not in text("README.md")
    assert "about 10 s on 2 idle CPU cores" not in text("Makefile")
