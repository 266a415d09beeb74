"""Property-based fuzzing (hypothesis): specs, run files, checkpoints and IDX files from hostile hands.

Each input goes through the function the CLI uses and must end in success or a
``MnistbenchError`` whose message is one short line, never another exception, within a
time cap (hypothesis' deadline) and, for the pure-Python parsers, a memory cap.
Examples are derandomized and bounded, so the run is repeatable and takes ~20 s
(README, "Testing"). Inputs these tests once broke on are pinned with ``@example``.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import struct
import tempfile
import tracemalloc
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from records_factory import make_record, write_records
from typer.testing import CliRunner

from conftest import TINY_SPEC
from mnistbench.run.checkpoint import load_checkpoint
from mnistbench.cli import app
from mnistbench.data.datasets import read_idx
from mnistbench.errors import MnistbenchError
from mnistbench.report.build import check_report, write_report
from mnistbench.results import load_record
from mnistbench.spec.safeyaml import load_bounded
from mnistbench.spec.schema import SETTINGS, load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent
MAX_MESSAGE = 600  # characters; the longest legitimate message lists every known setting
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=5),  # a hang cap, loose enough for a busy 2-core CI machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)


def fuzz(examples: int, deadline_s: float = 5) -> settings:
    """The shared settings with a bounded number of examples (MNISTBENCH_FUZZ_SCALE=10 for a deeper, random search)."""
    scale = int(os.environ.get("MNISTBENCH_FUZZ_SCALE", "1"))
    return settings(FUZZ, max_examples=examples * scale, derandomize=scale == 1, deadline=timedelta(seconds=deadline_s))


def assert_one_line(error: MnistbenchError) -> None:
    message = str(error)
    assert message and "\n" not in message and len(message) <= MAX_MESSAGE, message[:2000]


@contextmanager
def memory_cap(mib: float):
    """Fail if Python allocations (numpy's included) peak above ``mib`` inside the block."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
        assert peak < mib * 2**20, f"peak {peak / 2**20:.1f} MiB"
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- specs

SPEC_TEXTS = [TINY_SPEC] + [p.read_text() for p in sorted((ROOT / "bench").glob("*.yaml"))]
YAML_TOKENS = ["[", "]", "{", "}", ": ", ", ", "- ", "&a ", "*a", "&b ", "*b", "<<: ", "!!str ", "!!int ", "!!float ", "!!binary ",
               "!!set ", "!!timestamp ", "? ", "|", ">", "'", '"', "#", "\n", "\n  ", "\t", "~", ".inf", ".nan", "-.inf", "1e400",
               "0x1F", "0o17", "1_000", "2001-12-14", "yes", "null", "\\x00", "\u2028", "%YAML 1.1\n", "---\n", "...\n"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["lenet5", "mlp-matched", "custom-mlp", "cpu", "adam", "sgd", "onecycle", "mnist"]),
)
KEYS = st.one_of(st.sampled_from(list(SETTINGS) + ["name", "description", "matrix", "variants"]), st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12)


@st.composite
def mutated_spec_text(draw) -> str:
    """A shipped spec with a few random cuts, insertions of YAML syntax and swapped lines."""
    text = draw(st.sampled_from(SPEC_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["cut", "insert", "token", "dup-line"]))
        if action == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        elif action == "insert":
            text = text[:at] + draw(st.text(max_size=8)) + text[at:]
        elif action == "token":
            text = text[:at] + draw(st.sampled_from(YAML_TOKENS)) + text[at:]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                line = draw(st.sampled_from(lines))
                text = text + line
    return text


def load_spec_text(tmp_path: Path, text: str):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "replace"))
    with memory_cap(64):
        try:
            return load_spec(path)
        except MnistbenchError as e:
            assert_one_line(e)
            return None


@fuzz(150)
@given(text=mutated_spec_text())
def test_mutated_specs_load_or_fail_in_one_line(tmp_path, text):
    spec = load_spec_text(tmp_path, text)
    if spec is not None:
        assert spec.cells()


@fuzz(100)
@given(text=st.lists(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=6)), max_size=40).map("".join))
@example(text="a: &a [*a]")
@example(text="\x1f")  # a control character: PyYAML's reader raised before the loader's try
@example(text="!!timestamp ")  # AttributeError inside PyYAML's constructor
@example(text="? [a]\n: 1")
@example(text="seed: 2001-13-45")
@example(text="!!binary x")
@example(text="- &a [1]\n- *a\n- !!set {*a}")
def test_random_yaml_loads_or_fails_in_one_line(tmp_path, text):
    load_spec_text(tmp_path, text)


@fuzz(150)
@given(raw=st.dictionaries(KEYS, VALUES, max_size=8))
@example(raw={"model": "lenet5", "epochs": 10**5000})
@example(raw={"model": "lenet5", "matrix": {"seed": [10**5000, 1]}})
@example(raw={"name": 10**5000})
@example(raw={10**5000: 1})
def test_random_settings_parse_or_fail_in_one_line(raw):
    try:
        spec = parse_spec(raw, "fuzz")
    except MnistbenchError as e:
        assert_one_line(e)
        return
    assert spec.cells()
    round_trip = load_bounded(yaml.safe_dump(copy.deepcopy(raw)), "fuzz")  # the same settings written as YAML
    assert parse_spec(round_trip, "fuzz").cells() == spec.cells()


@fuzz(20)
@given(text=mutated_spec_text())
def test_validate_on_the_command_line_exits_0_or_2_with_the_prefix(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "replace"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:  # every problem of the spec, each on its own line
        lines = result.output.strip().splitlines()
        assert lines and all(line.startswith("mnistbench: error: ") for line in lines), result.output[:2000]


# --------------------------------------------------------------------------- run files

GOOD_RUN = json.loads(make_record("lenet5", 0, epochs=3).to_json())
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(value, prefix=()) -> list[tuple]:
    """Every path into a JSON value (keys and list indices), the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


RUN_PATHS = [p for p in _paths(GOOD_RUN) if p]


@st.composite
def mutated_run_file(draw) -> str:
    """The text of a good run file after a few random deletions, replacements and cuts."""
    record = copy.deepcopy(GOOD_RUN)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(RUN_PATHS))
        parent = record
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(JSON_VALUES)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed this path
    text = json.dumps(record)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


@pytest.fixture
def report_folder(tmp_path) -> Path:
    """A folder with one good run file and its tables; fuzzed run files are added next to it."""
    folder = write_records(tmp_path / "demo", [make_record("lenet5", 1, epochs=3)])
    write_report(folder, plots=False)
    return folder


def _with(section: str, **values) -> str:
    return json.dumps({**GOOD_RUN, section: {**GOOD_RUN[section], **values}})


@fuzz(120)
@given(text=mutated_run_file())
@example(text=_with("data", identity=[]))  # unhashable in the report's grouping
@example(text=_with("data", identity=None))  # compared with strings when sorting sections
@example(text=_with("config", target_accuracy=[]))  # formatted as a number in the time-to-target table
@example(text=_with("environment", gpu=True))  # .get() on a bool in the environment lines
def test_mutated_run_files_are_reported_or_named_in_one_line(report_folder, text):
    (report_folder / "runs" / "fuzzed.json").write_text(text)
    before = (report_folder / "summary.csv").read_bytes()
    try:
        load_record(report_folder / "runs" / "fuzzed.json")
        write_report(report_folder, plots=False)
    except MnistbenchError as e:
        assert_one_line(e)
        assert "fuzzed.json" in str(e)
        assert (report_folder / "summary.csv").read_bytes() == before  # the old tables stay
        return
    assert check_report(report_folder) == []


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def cell_and_checkpoint(tmp_path_factory):
    """A one-epoch-of-two cell on tiny data, its task and the checkpoint payload after epoch 1."""
    from conftest import make_dataset
    from mnistbench.run.checkpoint import save_checkpoint
    from mnistbench.train.engine import run_cell
    from mnistbench.run.runner import plan_run

    root = tmp_path_factory.mktemp("fuzz-ckpt")
    data = make_dataset(root / "data", n_train=64, n_test=32)
    spec = parse_spec({"model": "mlp-matched", "device": "cpu", "epochs": 2, "batch_size": 32, "threads": 1}, "fuzz")
    plan = plan_run(spec, root, data, allow_download=False, force=False)
    task, path = plan.tasks[0], root / "first.pt"

    def save_first(metrics, state):
        if metrics.epoch == 1:
            save_checkpoint(path, task.key, state())

    run_cell(task.cell.config, plan.datasets["mnist"], on_epoch=save_first)
    return plan, torch.load(path, weights_only=True)


TENSORS = st.builds(lambda shape: torch.zeros(shape), st.lists(st.integers(0, 5), max_size=3).map(tuple))
PAYLOAD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=5), TENSORS,
                           st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@st.composite
def mutated_payload(draw, payload: dict) -> dict:
    """The payload with a few top-level or nested entries dropped or replaced by random values and tensors."""
    payload = copy.deepcopy(payload)
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(sorted(payload)))
        target = payload
        if isinstance(payload[section], dict) and payload[section] and draw(st.booleans()):
            target, key = payload[section], draw(st.sampled_from(sorted(payload[section], key=str)))
        else:
            key = section
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(PAYLOAD_VALUES)
    return payload


@fuzz(25, deadline_s=20)  # each example trains the cell (2 epochs of 64 samples)
@given(data=st.data())
def test_mutated_checkpoints_resume_or_are_set_aside_and_the_cell_finishes(cell_and_checkpoint, tmp_path, data):
    from mnistbench.run.cell import execute

    plan, payload = cell_and_checkpoint
    task = plan.tasks[0]
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    task = type(task)(task.spec, task.cell, task.key, task.index, task.total, folder)
    path = folder / "checkpoints" / f"{task.cell.id}.pt"
    path.parent.mkdir(parents=True)
    if data.draw(st.booleans()):
        torch.save(data.draw(mutated_payload(payload)), path)
    else:
        blob = bytearray(_checkpoint_bytes(payload))
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(blob[: data.draw(st.integers(0, len(blob)))]))
    warnings = []
    record = execute(task, plan.datasets["mnist"], lambda e: warnings.append(e.message) if e.kind == "warning" else None)
    assert record.status == "finished" and len(record.epochs) == 2, record.note
    assert all("\n" not in w and len(w) < 400 for w in warnings)
    if warnings:
        assert os.path.lexists(path.with_name(path.name + ".bad"))


def _checkpoint_bytes(payload: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@fuzz(40)
@given(blob=st.binary(max_size=600))
def test_random_bytes_as_a_checkpoint_are_set_aside_not_raised(tmp_path, blob):
    path = tmp_path / "c.pt"
    path.write_bytes(blob)
    state, message = load_checkpoint(path, "0123456789abcdef", 2)
    assert state is None and "\n" not in message
    path.with_name("c.pt.bad").unlink(missing_ok=True)


# --------------------------------------------------------------------------- IDX files


@st.composite
def idx_files(draw) -> bytes:
    """An IDX header (sometimes a wrong magic) with dimensions up to 2**32-1 and a body near the size they promise."""
    ndim = draw(st.integers(0, 4))
    magic = bytes([draw(st.sampled_from([0, 0, 0, 1])), 0, draw(st.sampled_from([8, 8, 8, 9, 13])), ndim])
    dims = draw(st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)), min_size=ndim, max_size=ndim))
    expected = math.prod(dims) if dims else 0
    size = draw(st.one_of(st.just(expected), st.integers(0, 2000))) if expected <= 2000 else draw(st.integers(0, 2000))
    header = magic + struct.pack(f">{len(dims)}I", *dims)
    return header[: draw(st.integers(0, len(header)))] if draw(st.integers(0, 9)) == 0 else header + bytes(size)


@fuzz(200)
@given(blob=st.one_of(idx_files(), st.binary(max_size=300)), gz=st.booleans())
@example(blob=struct.pack(">4B3I", 0, 0, 8, 3, 2**21, 2**21, 2**22), gz=False)  # 2**64 bytes: 0 in int64
@example(blob=struct.pack(">4B3I", 0, 0, 8, 3, 0, 2**32 - 1, 2**32 - 1), gz=False)  # no data, but a shape numpy refuses
@example(blob=b"\x00\x00\x08\x02\x00\x00\x00\x15\x00\x0c/b", gz=False)  # read(16.7 MB) reserved it all for an empty body
def test_random_idx_files_parse_or_fail_in_one_line(tmp_path, blob, gz):
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with memory_cap(16):
        try:
            array = read_idx(path)
        except MnistbenchError as e:
            assert_one_line(e)
            return
    assert isinstance(array, np.ndarray) and array.size == len(blob) - 4 - 4 * array.ndim
