"""The cell key has one owner (mnistbench.spec.keys), and committed results keep their keys."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnistbench import results
from mnistbench.results import load_record
from mnistbench.spec import keys
from mnistbench.spec.keys import DISTORT_RANGES, KEY_OMITTED_AT_DEFAULT, cell_key
from mnistbench.spec.schema import CellConfig

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = sorted((ROOT / "reference").glob("*/runs"))


def test_settings_added_later_are_left_out_of_the_key_at_the_defaults_cellconfig_gives_them():
    for name, default in KEY_OMITTED_AT_DEFAULT.items():
        assert CellConfig.model_fields[name].default == default, name
    config = CellConfig(model="lenet5", device="cpu").model_dump()
    before = {k: v for k, v in config.items() if k not in KEY_OMITTED_AT_DEFAULT}  # as 0.1 wrote it
    assert cell_key(config, ["x"]) == cell_key(before, ["x"])
    assert cell_key({**config, "deterministic": True}, ["x"]) != cell_key(config, ["x"])


def test_distortion_ranges_enter_the_key_only_with_distort_on_whoever_computes_it():
    config = CellConfig(model="lenet5", device="cpu").model_dump()
    wider = {**config, "distort_translate": 3.0}
    assert cell_key(wider, ["x"]) == cell_key(config, ["x"])  # the dict form (a record's config) as the spec's form
    on = {**config, "distort": True}
    assert cell_key({**on, "distort_translate": 3.0}, ["x"]) != cell_key(on, ["x"]) != cell_key(config, ["x"])
    assert set(DISTORT_RANGES) <= set(KEY_OMITTED_AT_DEFAULT)


def test_the_thread_count_used_stands_for_threads_none():
    config = CellConfig(model="lenet5", device="cpu")
    assert config.key(["x"], threads=2) == CellConfig(model="lenet5", device="cpu", threads=2).key(["x"])
    assert config.key(["x"], threads=2) != config.key(["x"])


def test_the_run_record_and_the_spec_share_one_key_function():
    assert results.cell_key is keys.cell_key
    assert not hasattr(results, "KEY_OMITTED_AT_DEFAULT")


def test_the_key_module_imports_nothing_heavy():
    code = ("import sys\nimport mnistbench.spec.keys\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pydantic', 'yaml', 'numpy')"
            " or (m.startswith('mnistbench.') and m not in ('mnistbench.spec', 'mnistbench.spec.keys'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def recomputed_key(path: Path) -> str:
    """The key a current run computes for a committed record's cell: on the files' content hashes and the threads
    it ran with, or (records written before content hashing) on their stored hashes alone."""
    raw = json.loads(path.read_text())
    files = raw["data"]["files"]
    config = CellConfig(**raw["config"]).resolved(raw["device"].split(":")[0], raw["config"].get("model_sha256"))
    if all(f.get("content_sha256") for f in files):
        return config.key([f["content_sha256"] for f in files], raw["environment"]["threads"])
    return config.key([f["sha256"] for f in files])


@pytest.mark.parametrize("runs", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_records_keep_their_keys(runs):
    """Every committed results folder still counts as done: its records' keys are what the code computes now."""
    for path in sorted(runs.glob("*.json"))[:2]:
        assert load_record(path).key == recomputed_key(path), path
