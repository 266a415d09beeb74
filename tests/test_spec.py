"""Specs: validated at the boundary, with one-line messages that name the offending key."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import TINY_SPEC, write_spec
from mnistbench.errors import MnistbenchError, SpecErrors
from mnistbench.spec.schema import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent


def spec_error(raw: dict) -> str:
    with pytest.raises(MnistbenchError) as e:
        parse_spec(raw, "t")
    message = str(e.value)
    assert "\n" not in message
    return message


def test_the_matrix_expands_into_the_cartesian_product(tmp_path):
    spec = load_spec(write_spec(tmp_path / "tiny.yaml", TINY_SPEC))
    cells = spec.cells()
    assert [c.id for c in cells] == ["lenet5_seed-0", "lenet5_seed-1", "mlp-matched_seed-0", "mlp-matched_seed-1"]
    assert all(c.config.epochs == 2 and c.config.lr == 3e-3 for c in cells)


def test_any_scalar_setting_can_be_a_matrix_axis():
    spec = parse_spec({"matrix": {"model": ["lenet5"], "loader": ["tensor", "torchvision"], "batch_size": [64, 128]}}, "t")
    ids = [c.id for c in spec.cells()]
    assert ids == [
        "lenet5_loader-tensor_batch_size-64_seed-0",
        "lenet5_loader-tensor_batch_size-128_seed-0",
        "lenet5_loader-torchvision_batch_size-64_seed-0",
        "lenet5_loader-torchvision_batch_size-128_seed-0",
    ]


def test_plain_yaml_exponents_are_numbers(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.yaml", "model: lenet5\nlr: 1e-3\n"))
    assert spec.cells()[0].config.lr == 0.001


# bench/infer-*.yaml are inference specs (tests/test_infer.py checks them), not training specs.
@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "bench").glob("*.yaml") if not p.name.startswith("infer-")),
                         ids=lambda p: p.name)
def test_every_shipped_spec_is_valid(path):
    assert load_spec(path).cells()


def test_an_unknown_model_lists_the_known_ones():
    msg = spec_error({"matrix": {"model": ["lenet5", "resnet"]}})
    assert msg.startswith("t: matrix.model:") and "unknown model 'resnet'" in msg and "lenet5, custom-mlp, mlp-matched" in msg


@pytest.mark.parametrize(
    "raw, key, words",
    [
        ({"model": "lenet5", "epoch": 3}, "epoch", "unknown key"),
        ({"model": "lenet5", "matrix": {"seeds": [1]}}, "matrix.seeds", "unknown key"),
        ({"model": "lenet5", "epochs": "ten"}, "epochs", "valid integer"),
        ({"model": "lenet5", "epochs": 0}, "epochs", "greater than 0"),
        ({"model": "lenet5", "batch_size": -8}, "batch_size", "greater than 0"),
        ({"model": "lenet5", "lr": 0}, "lr", "greater than 0"),
        ({"model": "lenet5", "matrix": {"seed": [0, -1]}}, "matrix.seed", "greater than or equal to 0"),
        ({"model": "lenet5", "optimizer": "rmsprop"}, "optimizer", "'sgd', 'adam', 'adamw', 'adadelta' or 'muon'"),
        ({"model": "lenet5", "schedule": "linear"}, "schedule", "'none', 'step', 'cosine' or 'onecycle'"),
        ({"model": "lenet5", "dataset": "cifar10"}, "dataset", "unknown dataset 'cifar10' (known: mnist, fashion-mnist)"),
        ({"model": "lenet5", "device": "tpu"}, "device", "'cpu', 'cuda' or 'auto'"),
        ({"model": "lenet5", "matrix": {"seed": []}}, "matrix.seed", "empty"),
        ({"model": "lenet5", "matrix": ["seed"]}, "matrix", "mapping"),
        ({"model": "lenet5", "epochs": True}, "epochs", "valid integer"),
        ({"seed": 1}, "model", "missing"),
    ],
)
def test_bad_settings_name_the_key(raw, key, words):
    msg = spec_error(raw)
    assert msg.startswith(f"t: {key}:") and words in msg


def test_a_yaml_syntax_error_gives_the_line(tmp_path):
    path = write_spec(tmp_path / "bad.yaml", "model: lenet5\nmatrix:\n  seed: [0, 1\nepochs: 2\n")
    with pytest.raises(MnistbenchError, match=r"bad.yaml: YAML syntax error at line \d+, column \d+") as e:
        load_spec(path)
    assert "\n" not in str(e.value)


def test_a_missing_spec_file_is_named(tmp_path):
    with pytest.raises(MnistbenchError, match="spec file not found: .*nope.yaml"):
        load_spec(tmp_path / "nope.yaml")


def test_the_cell_key_changes_with_the_configuration_and_the_data():
    a, b = parse_spec({"matrix": {"model": ["lenet5"], "epochs": [1, 2]}}, "t").cells()
    assert a.config.key(["x"]) != b.config.key(["x"])
    assert a.config.key(["x"]) != a.config.key(["y"])
    assert a.config.key(["x"]) == a.config.key(["x"])


def test_variants_repeat_each_matrix_cell_with_one_change_at_a_time():
    spec = parse_spec({"matrix": {"model": ["lenet5"], "seed": [0]}, "variants": [{}, {"channels_last": True}, {"batch_size": 256}]}, "t")
    cells = spec.cells()
    assert [c.id for c in cells] == ["lenet5_seed-0", "lenet5_seed-0_channels_last-True", "lenet5_seed-0_batch_size-256"]
    assert [(c.config.channels_last, c.config.batch_size) for c in cells] == [(False, 128), (True, 128), (False, 256)]
    assert spec_error({"model": "lenet5", "variants": [{"chanels_last": True}]}).startswith("t: variants[0].chanels_last: unknown key")


def test_an_unknown_key_names_the_closest_settings_and_stays_short():
    message = spec_error({"model": "lenet5", "label_smothing": 0.1})
    assert message.startswith("t: label_smothing: unknown key (did you mean label_smoothing?")
    assert "docs/specs.md" in message and len(message) < 200
    assert "did you mean" not in spec_error({"model": "lenet5", "zzzzzz": 1})
    assert "did you mean variants?" in spec_error({"model": "lenet5", "variant": [{}]})


def test_a_spec_is_read_and_checked_without_importing_torch():
    """spec/ names models and datasets from torch-free registries (lint-imports checks the imports; this, a real run)."""
    code = ("import sys\nfrom mnistbench.spec.schema import parse_spec\n"
            "spec = parse_spec({'matrix': {'model': ['lenet5', 'examples-net', 'small=./nets.py:build'],"
            " 'dataset': ['mnist', 'fashion-mnist']}}, 't')\n"
            "assert len(spec.cells()) == 6\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'ray', 'filelock')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_the_model_names_a_spec_knows_without_the_zoo_are_the_zoo_models():
    from mnistbench.models import zoo
    from mnistbench.models.names import BUILTIN_MODELS

    assert tuple(zoo.MODELS.names()[:len(BUILTIN_MODELS)]) == BUILTIN_MODELS


def test_the_spec_structure_is_a_pydantic_model_whose_keys_are_the_settings():
    """Spec itself refuses what parse_spec refuses: settings, axes and variants are keyed by CellConfig's settings."""
    for bad in ({"settings": {"epoch": 3}}, {"matrix": {"sed": [1]}}, {"matrix": {"seed": []}}, {"matrix": {"seed": [1, 1]}},
                {"variants": [{"ep": 1}]}, {"variants": []}, {"cell_timeout": 0}, {"cell_timeout": True}, {"name": ".."}):
        with pytest.raises(ValidationError):
            Spec.model_validate({"name": "x", **bad})
    spec = Spec.model_validate({"name": "x", "settings": {"model": "lenet5"}, "matrix": {"seed": 3}, "cell_timeout": 5})
    assert spec.matrix == {"seed": [3]} and spec.cell_timeout == 5.0 and len(spec.cells()) == 1


def test_every_structure_problem_is_one_line_found_in_one_pass():
    with pytest.raises(SpecErrors) as e:
        parse_spec({"model": "lenet5", "name": "a/b", "epoch": 3, "matrix": {"sed": [1], "lr": [0.1]}, "lr": 0.2,
                    "variants": [{"ep": 1}], "cell_timeout": 0, "resources": {"cpu": 1}, "batch_size": -1}, "t")
    assert [line.split(": ")[1] for line in e.value.lines] == [
        "name", "epoch", "matrix.sed", "variants[0].ep", "resources.cpu", "cell_timeout", "lr", "batch_size"]
    assert e.value.lines[4] == "t: resources.cpu: unknown key (known: cpus, gpus)"
    assert e.value.lines[5] == "t: cell_timeout: seconds, a number above 0 and at most 2592000, got 0"


def test_an_unknown_key_of_any_type_is_named_as_written():
    assert spec_error({"model": "lenet5", "matrix": {10**5000: [1]}}).startswith(
        "t: matrix.<an integer of 16610 bits>: unknown key")
    with pytest.raises(SpecErrors) as e:
        parse_spec({"model": "lenet5", "variants": [{"ep": 1}, 5]}, "t")
    assert e.value.lines == ["t: variants[0].ep: unknown key (every setting is listed in docs/specs.md)",
                             "t: variants: must be a non-empty list of mappings of settings"]
