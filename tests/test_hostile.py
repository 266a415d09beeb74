"""Untrusted input never crashes, hangs or escapes (issue 10): each case a new user hit, as a regression test.

Every bad spec, run file, checkpoint or data file ends in one line (``mnistbench: error: ...``,
exit 2) in bounded time and memory, and leaves earlier results as they were.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_spec
from mnistbench.cli import app
from mnistbench.errors import MnistbenchError
from mnistbench.safeyaml import MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES
from mnistbench.spec import MAX_CELLS, load_spec, parse_spec

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, words: str = "") -> str:
    """The single stderr/stdout line of a failed command: exit 2, ``mnistbench: error:``, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mnistbench: error: "), result.output[:2000]
    assert words in lines[0], lines[0]
    return lines[0]


def spec_error(tmp_path: Path, text: str, name: str = "s.yaml", max_seconds: float = 2.0, max_mib: float = 64) -> str:
    """Load a spec that must fail; return its message after checking it is one short line, found fast and lean."""
    path = write_spec(tmp_path / name, text)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(MnistbenchError) as e:
            load_spec(path)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - started < max_seconds
    assert peak < max_mib * 2**20, f"peak {peak / 2**20:.0f} MiB"
    message = str(e.value)
    assert "\n" not in message and len(message) < 400, message[:1000]
    return message


def laughs(levels: int, fanout: int, where: str = "model") -> str:
    """A "billion laughs" spec: each anchor repeats the previous one ``fanout`` times."""
    lines = [f"{where}:", "  - &a0 [" + ", ".join(["lol"] * fanout) + "]"]
    for i in range(1, levels):
        lines.append(f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- YAML that expands or nests


@pytest.mark.parametrize("levels, fanout", [(8, 9), (6, 9), (12, 12)])
def test_aliases_that_expand_exponentially_stop_at_the_node_limit_in_one_short_line(tmp_path, levels, fanout):
    message = spec_error(tmp_path, laughs(levels, fanout))
    assert f"aliases expand to more than {MAX_NODES} values" in message and "model[" in message


def test_an_alias_bomb_under_the_matrix_is_refused_the_same_way(tmp_path):
    text = laughs(8, 9, where="anchors").replace("anchors:", "matrix:\n  seed:").replace("\n  - ", "\n    - ")
    assert "aliases expand to more than" in spec_error(tmp_path, "model: lenet5\n" + text)


def test_aliases_within_the_limit_still_work(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.yaml", "model: lenet5\nmatrix:\n  seed: &s [0, 1]\nvariants:\n  - &v {lr: 0.1}\n"
                                                     "  - {<<: *v, epochs: 2}\n"))
    assert [c.config.epochs for c in spec.cells()] == [10, 2, 10, 2] and spec.cells()[1].config.lr == 0.1


def test_a_list_nested_3000_deep_is_one_line_naming_the_key_not_a_recursion_error(tmp_path):
    message = spec_error(tmp_path, "model: lenet5\nmatrix:\n  seed: " + "[" * 3000 + "]" * 3000 + "\n")
    assert message.startswith(f"{tmp_path / 's.yaml'}: matrix.seed[0][0]")
    assert f"nested deeper than {MAX_DEPTH} levels" in message


def test_nesting_through_aliases_counts_too(tmp_path):
    deep = "[" * 30 + "]" * 30
    message = spec_error(tmp_path, f"model: lenet5\nmatrix:\n  seed: [&d {deep}, [[[[[[[[[[[[[[[[[[[[[[*d]]]]]]]]]]]]]]]]]]]]]]]\n")
    assert f"aliases nest deeper than {MAX_DEPTH} levels" in message


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    assert "an alias refers to a value that contains it" in spec_error(tmp_path, "model: &m [lenet5, *m]\n")


def test_a_spec_file_over_1_mib_is_refused_without_reading_it_all(tmp_path):
    message = spec_error(tmp_path, "model: lenet5\ndescription: '" + "x" * MAX_SPEC_BYTES + "'\n")
    assert f"larger than {MAX_SPEC_BYTES} bytes" in message


def test_an_endless_spec_file_is_refused_in_bounded_time():
    with pytest.raises(MnistbenchError, match="larger than"):
        load_spec("/dev/zero")


@pytest.mark.parametrize(
    "text, words",
    [
        ("model: lenet5\nseed: " + "9" * 5000 + "\n", "a value YAML cannot read: Exceeds the limit"),
        ("model: lenet5\nseed: 2001-13-45\n", "a value YAML cannot read: month must be in 1..12"),
        ("model: !!python/object/apply:os.system [ls]\n", "YAML syntax error"),
    ],
    ids=["5000-digit integer", "impossible date", "python object tag"],
)
def test_values_yaml_itself_cannot_build_are_one_line(tmp_path, text, words):
    assert words in spec_error(tmp_path, text)


# --------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    "text, key, lines",
    [
        ("model: lenet5\nepochs: 1\nepochs: 2\n", "epochs", (2, 3)),
        ("model: lenet5\nmatrix:\n  seed: [0, 1]\n  seed: [2]\n", "matrix.seed", (3, 4)),
        ("model: lenet5\nvariants:\n  - {lr: 0.1, 'lr': 0.2}\n", "variants[0].lr", (3, 3)),
    ],
)
def test_a_key_given_twice_is_an_error_naming_its_path_and_lines(tmp_path, text, key, lines):
    message = spec_error(tmp_path, text)
    assert f"s.yaml: {key}: duplicate key (lines {lines[0]} and {lines[1]})" in message


def test_a_duplicate_key_no_longer_replaces_an_earlier_run_file(tmp_path):
    """It used to load with the last value winning; a run then rewrote the earlier run file under the same name."""
    spec = write_spec(tmp_path / "s.yaml", "name: dup\nmodel: lenet5\ndevice: cpu\nepochs: 1\nepochs: 2\n")
    results = tmp_path / "results"
    one_line_error(cli("run", spec, "--results-dir", results, "--no-download"), "epochs: duplicate key")
    assert not results.exists()


# --------------------------------------------------------------------------- values quoted briefly


def test_a_huge_wrong_value_is_quoted_in_at_most_about_100_characters():
    message = str(pytest.raises(MnistbenchError, parse_spec, {"model": "lenet5", "epochs": "x" * 100_000}, "t").value)
    assert message.startswith("t: epochs: Input should be a valid integer, got 'xxx") and len(message) < 200


def test_a_huge_unknown_model_name_is_quoted_briefly(tmp_path):
    message = spec_error(tmp_path, "model: " + "m" * 50_000 + "\n")
    assert "model: unknown model 'mmm" in message and "(known: lenet5" in message


def test_a_huge_unknown_key_is_quoted_briefly():
    message = str(pytest.raises(MnistbenchError, parse_spec, {"model": "lenet5", "k" * 10_000: 1}, "t").value)
    assert message.startswith("t: 'kkk") and "unknown key" in message and len(message) < 600


@pytest.mark.parametrize("setting", ["weight_decay", "lr", "momentum", "gamma", "target_accuracy"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused_in_every_float_setting(tmp_path, setting, value):
    message = spec_error(tmp_path, f"model: lenet5\n{setting}: {value}\n")
    assert message.startswith(f"{tmp_path / 's.yaml'}: {setting}: ")


def test_a_matrix_that_would_expand_past_the_cell_limit_is_refused_before_expanding():
    matrix = {"model": ["lenet5"], **{k: list(range(1, 11)) for k in ("seed", "epochs", "batch_size", "eval_batch_size", "step_size")}}
    started = time.perf_counter()
    message = str(pytest.raises(MnistbenchError, parse_spec, {"matrix": matrix}, "t").value)
    assert time.perf_counter() - started < 1
    assert message == f"t: matrix: 1 x 10 x 10 x 10 x 10 x 10 x 1 variants is more than {MAX_CELLS} cells (the limit for a spec)"
