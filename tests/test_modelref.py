"""Bring your own model: a file or module reference trains through `run`, is traced to its code, and fails in one line."""

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import make_dataset, write_spec
from mnistbench.models import factory
from mnistbench.cli import app
from mnistbench.errors import MnistbenchError
from mnistbench.models.factory import checked_model, load_unchanged, parse_model_ref
from mnistbench.spec.schema import parse_spec
from cli_helpers import assert_one_line_error

runner = CliRunner()

NETS = '''\
from torch import nn


class SmallCNN(nn.Module):
    """Eight 3x3 filters and a linear read-out."""

    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3)
        self.fc = nn.Linear(width * 13 * 13, 10)

    def forward(self, x):
        return self.fc(nn.functional.max_pool2d(self.conv(x).relu(), 2).flatten(1))


def build():
    return SmallCNN(width=4)
'''

SPEC = """\
name: byo
device: cpu
epochs: 1
batch_size: 64
eval_batch_size: 128
lr: 3.0e-3
threads: 1
matrix:
  model: [mlp-matched, "small=./nets.py:build"]
  seed: [0]
"""


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A spec folder with its own model file, and a first run of it."""
    root = tmp_path_factory.mktemp("byo")
    (root / "specs").mkdir()
    (root / "specs" / "nets.py").write_text(NETS)
    spec = write_spec(root / "specs" / "byo.yaml", SPEC)
    data = make_dataset(root / "data")
    result = cli("run", spec, "--results-dir", root / "results", "--data-dir", data)
    assert result.exit_code == 0, result.output
    return root, spec, data


@pytest.mark.slow  # a model file trained through the isolation child (fork server, check, cell): make test-slow
def test_a_model_from_a_file_next_to_the_spec_trains_and_is_traced_to_its_code(project):
    root = project[0]
    out = root / "results" / "byo"
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == ["mlp-matched_seed-0.json", "small_seed-0.json"]
    record = json.loads((out / "runs" / "small_seed-0.json").read_text())
    sha = hashlib.sha256((root / "specs" / "nets.py").read_bytes()).hexdigest()
    assert record["status"] == "finished" and record["config"]["model"] == "small=./nets.py:build"
    assert record["config"]["model_sha256"] == sha
    assert record["model"] == {"name": "small", "parameters": 4 * 9 + 4 + 4 * 169 * 10 + 10, "forward_flops": record["model"]["forward_flops"],
                               "train_flops": record["model"]["train_flops"], "traffic": record["model"]["traffic"],
                               "reference": "small=./nets.py:build", "file": "nets.py", "sha256": sha}
    assert record["model"]["forward_flops"] > 0 and str(root) not in json.dumps(record)
    assert record["model"]["traffic"]["parameters"] == record["model"]["parameters"]  # bytes per sample are counted for it too
    builtin = json.loads((out / "runs" / "mlp-matched_seed-0.json").read_text())
    assert builtin["config"]["model_sha256"] is None and "reference" not in builtin["model"]
    summary = (out / "summary.md").read_text()
    assert "| small " in summary and "| mlp-matched " in summary and "model_sha256" not in summary.split("## Model sources")[0]
    assert f"- small: `small=./nets.py:build` — `nets.py`, sha256 `{sha[:16]}…`" in summary
    assert "small" in (out / "summary.csv").read_text()


@pytest.mark.slow  # a model file trained through the isolation child (fork server, check, cell): make test-slow
def test_a_changed_model_file_is_run_again_and_an_unchanged_one_skipped(project, tmp_path):
    root, _, data = project
    import shutil

    shutil.copytree(root / "specs", tmp_path / "specs")
    shutil.copytree(root / "results", tmp_path / "results")
    spec = tmp_path / "specs" / "byo.yaml"
    same = cli("run", spec, "--results-dir", tmp_path / "results", "--data-dir", data)
    assert "0 cells run (0 finished, 0 diverged, 0 failed), 2 skipped" in same.output, same.output
    (tmp_path / "specs" / "nets.py").write_text(NETS.replace("width=4", "width=5"))
    changed = cli("run", spec, "--results-dir", tmp_path / "results", "--data-dir", data)
    assert "1 cell run (1 finished, 0 diverged, 0 failed), 1 skipped" in changed.output, changed.output
    # The first version's record is kept; the new version's goes beside it (docs/results.md, run-file names).
    runs = {p.name: json.loads(p.read_text()) for p in (tmp_path / "results" / "byo" / "runs").glob("small_seed-0*.json")}
    assert sorted(r["model"]["parameters"] for r in runs.values()) == [4 * 9 + 4 + 4 * 169 * 10 + 10, 5 * 9 + 5 + 5 * 169 * 10 + 10]
    assert runs["small_seed-0.json"]["model"]["parameters"] == 4 * 9 + 4 + 4 * 169 * 10 + 10


BAD_MODELS = {  # file contents (None: no file), model reference, words of the one line
    "missing module": (None, "no_such_pkg.nets:Net", "importing no_such_pkg.nets raised ModuleNotFoundError"),
    "missing file": (None, "./absent.py:build", "file not found:"),
    "missing attribute": (NETS, "./nets.py:biuld", "./nets.py has no attribute 'biuld' (did you mean build?)"),
    "wrong output shape": (NETS.replace("* 13 * 13, 10)", "* 13 * 13, 5)"), "./nets.py:SmallCNN",
                           "model './nets.py:SmallCNN' returned shape (1, 5), expected (1, 10) logits"),
    "factory raising": (NETS + "\ndef broken():\n    raise ValueError('no weights here')\n", "./nets.py:broken",
                        "calling broken() raised ValueError: no weights here"),
    "file raising on import": ("import torch\nraise RuntimeError('half-written')\n", "./nets.py:build",
                               "importing nets.py raised RuntimeError: half-written"),
    "syntax error": ("def build(:\n", "./nets.py:build", "importing nets.py raised SyntaxError"),
    "not a module": (NETS + "\ndef numbers():\n    return [1, 2]\n", "./nets.py:numbers", "numbers() returned a list, not a torch.nn.Module"),
    "an instance": (NETS + "\nnet = SmallCNN()\n", "./nets.py:net", "net is a model instance, not a factory"),
    "forward raising": (NETS.replace("self.fc(", "self.fc(x.flatten(1)) + self.fc("), "./nets.py:SmallCNN",
                        "the forward pass of a 1x1x28x28 batch raised RuntimeError"),
    "not a tensor": (NETS.replace("return self.fc(", "return 'logits', self.fc("), "./nets.py:SmallCNN",
                     "returned a tuple, expected a (1, 10) tensor of logits"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_a_bad_model_reference_is_one_line_naming_it_and_exit_2(case, tmp_path):
    source, ref, words = BAD_MODELS[case]
    if source is not None:
        (tmp_path / "nets.py").write_text(source)
    spec = write_spec(tmp_path / "s.yaml", SPEC.replace('"small=./nets.py:build"', f'"{ref}"'))
    result = cli("run", spec, "--results-dir", tmp_path / "results", "--data-dir", make_dataset(tmp_path / "data"), "--no-download")
    assert_one_line_error(result, words)
    assert f"model {ref!r}" in result.output
    assert not (tmp_path / "results" / "byo" / "runs").exists()  # nothing trained


@pytest.mark.parametrize(
    "text, words",
    [
        ("lenet5=./nets.py:build", "would be shown as 'lenet5', which names another model"),
        ("./nets.py:lenet5", "would be shown as 'lenet5'"),
        ("small=lenet5", "a display name goes with an import path or a file"),
        ("./nets:build", "is neither a dotted module path nor a .py file"),
        ("./nets.py:2fast", "is not an attribute name"),
        ("my net=./nets.py:build", "display name 'my net' must be"),
        ("resnet50", "unknown model 'resnet50' (known: lenet5, custom-mlp, mlp-matched"),
        ("resnet50", "; or a reference such as my_pkg.nets:SmallCNN or ./nets.py:build)"),
    ],
)
def test_a_malformed_reference_is_a_spec_error_without_importing_anything(text, words):
    with pytest.raises(MnistbenchError) as e:
        parse_spec({"model": text}, "t")
    assert str(e.value).startswith("t: model:") and words in str(e.value)


def test_cell_ids_and_labels_use_the_display_name_or_the_attribute():
    spec = parse_spec({"matrix": {"model": ["lenet5", "./nets.py:SmallCNN", "tiny=pkg.mod:make"], "seed": [0]}}, "t")
    assert [c.id for c in spec.cells()] == ["lenet5_seed-0", "SmallCNN_seed-0", "tiny_seed-0"]
    assert parse_model_ref("pkg.mod:Outer.make") == factory.ModelRef("pkg.mod:Outer.make", "make", "module", "pkg.mod", "Outer.make")


def test_two_references_shown_alike_are_a_spec_error():
    with pytest.raises(MnistbenchError, match="two different cells would share the id build_seed-0"):
        parse_spec({"matrix": {"model": ["./a.py:build", "./b.py:build"]}}, "t")


def test_a_module_reference_and_the_models_command(tmp_path, monkeypatch):
    pkg = tmp_path / "my_nets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cnn.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    source, model = checked_model("my_nets.cnn:SmallCNN")
    assert source.file == "cnn.py" and source.sha256 == hashlib.sha256(NETS.encode()).hexdigest()
    monkeypatch.chdir(tmp_path)
    listing = cli("models", "--detail", "--model", "my_nets.cnn:SmallCNN")
    assert listing.exit_code == 0, listing.output
    assert "\nSmallCNN\n" in listing.output and "| conv " in listing.output and "Eight 3x3 filters" in listing.output
    assert "| lenet5 " in listing.output  # the built-ins are listed too
    assert_one_line_error(cli("models", "--model", "my_nets.cnn:Missing"), "my_nets.cnn has no attribute 'Missing'")


def test_an_installed_package_registers_a_model_by_entry_point(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "ep_nets").mkdir(parents=True)
    (site / "ep_nets" / "__init__.py").write_text(NETS)
    dist = site / "ep_nets-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-nets\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text("[mnistbench.models]\nep-cnn = ep_nets:SmallCNN\n")
    monkeypatch.syspath_prepend(str(site))
    factory.entry_points.cache_clear()
    try:
        assert parse_model_ref("ep-cnn").kind == "entry-point"
        assert [c.id for c in parse_spec({"model": "ep-cnn"}, "t").cells()] == ["ep-cnn_seed-0"]
        source, _ = checked_model("ep-cnn")
        assert source.provenance()["package"] == "ep-nets 1.2" and source.file == "__init__.py"
        assert "| ep-cnn " in cli("models").output
    finally:
        factory.entry_points.cache_clear()


def test_a_file_changed_after_planning_stops_the_cell_in_one_line(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    planned = load_unchanged("./nets.py:build", tmp_path).sha256
    (tmp_path / "nets.py").write_text(NETS + "\n# edited\n")
    with pytest.raises(MnistbenchError, match=r"model './nets.py:build': nets.py changed since the run was planned"):
        load_unchanged("./nets.py:build", tmp_path, planned)


def test_validate_imports_and_checks_referenced_models(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    good = write_spec(tmp_path / "good.yaml", SPEC)
    result = cli("validate", good)
    assert result.exit_code == 0 and "ok, spec 'byo', 2 cells, models checked: small=./nets.py:build" in result.output
    bad = write_spec(tmp_path / "bad.yaml", SPEC.replace("small=./nets.py:build", "./nets.py:SmallCNN").replace("model: [", "model: [x=./nets.py:Gone, "))
    assert_one_line_error(cli("validate", bad), "model 'x=./nets.py:Gone': ./nets.py has no attribute 'Gone'")
