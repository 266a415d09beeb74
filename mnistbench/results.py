"""Run records: one strict-JSON file per cell, the single source every table and plot is built from.

A record's ``key`` is the canonical cell key (``spec.keys.cell_key``): the model, every resolved
setting (the device as used, not ``auto``; the thread count as used, not ``None``), the seed
and the SHA-256 of the data files' decompressed content. A *measurement* is a key on one
machine kind (``Machine``): two records of one measurement are one result, whatever their
file names; a measurement never takes the file of another (``run_file_for``). A record's
``status`` follows from its metrics when it is built and again when it is loaded: any
non-finite loss makes it ``diverged``; a cell that raised is ``failed``.

Files are strict JSON: a non-finite number is stored as ``null`` and named, with its
value, in ``non_finite`` (``{"epochs[3].train_loss": "nan"}``). Files written by 0.1
(schema 1, bare ``NaN``, no key) still load.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import asdict, astuple, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from typing_extensions import Required, TypedDict

from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError

from .errors import MnistbenchError
from .files import write_atomic
from .spec.keys import cell_key, with_later_defaults

SCHEMA = 2
STATUSES = ("finished", "diverged", "failed")


@dataclass
class EpochMetrics:
    epoch: StrictInt
    train_loss: StrictFloat
    train_accuracy: StrictFloat
    test_loss: StrictFloat
    test_accuracy: StrictFloat
    train_seconds: StrictFloat
    eval_seconds: StrictFloat
    train_samples_per_s: StrictFloat
    eval_samples_per_s: StrictFloat
    lr: StrictFloat
    # Wall clock of the epoch's training loop (probes included) and its evaluation; None in files before 0.2.
    wall_seconds: Optional[StrictFloat] = None


@dataclass
class RunRecord:
    spec: StrictStr
    cell: StrictStr
    config: dict[str, Any]  # the cell's full resolved CellConfig (device as used)
    config_hash: StrictStr  # equal to ``key``; kept under its 0.1 name for readers of old files
    status: StrictStr  # "finished", "diverged" or "failed"
    model: dict[str, Any]  # name, parameters, forward_flops, train_flops
    data: dict[str, Any]  # dataset, identity, official, files: [{role, file, sha256, md5, official}]
    epochs: list[EpochMetrics]
    environment: dict[str, Any]
    started: StrictStr
    finished: StrictStr
    device: StrictStr = "cpu"
    time_to_target_s: Optional[StrictFloat] = None
    epochs_to_target: Optional[StrictFloat] = None
    # MLPerf-style: wall clock from the first step through the first evaluation at or above the target (never stopped).
    wall_to_target_s: Optional[StrictFloat] = None
    peak_memory_bytes: Optional[StrictInt] = None
    note: StrictStr = ""
    extra: dict[str, Any] = field(default_factory=dict)  # measurements added by later features (roofline, ...)
    key: StrictStr = ""
    schema: StrictInt = SCHEMA

    @property
    def final(self) -> EpochMetrics:
        return self.epochs[-1]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    def to_json(self) -> str:
        raw = asdict(self)
        non_finite: dict[str, str] = {}
        raw = _finite_only(raw, "", non_finite)
        if non_finite:
            raw["non_finite"] = non_finite
        return json.dumps(raw, indent=2, allow_nan=False) + "\n"

    @property
    def machine(self) -> "Machine":
        return machine_of(self.device_type, self.environment)

    def file_in(self, runs_dir: Path, stem: Optional[str] = None) -> Path:
        """Its run file in a ``runs/`` folder: ``<stem>.json``, the cell's id unless the run chose another
        (``run_file_for``); its weights go beside it (layout.weights_file)."""
        return Path(runs_dir) / f"{stem or self.cell}.json"

    def save(self, runs_dir: Path, stem: Optional[str] = None) -> Path:
        path = self.file_in(runs_dir, stem)
        write_atomic(path, self.to_json())
        return path


_RECORD = TypeAdapter(RunRecord)
Number = Optional[StrictInt | StrictFloat]


class _Config(TypedDict, total=False):
    model: Required[StrictStr]
    seed: Required[StrictInt]
    dataset: Required[StrictStr]
    epochs: Required[StrictInt]
    device: StrictStr
    target_accuracy: Number
    max_steps: Optional[StrictInt]


class _DataFile(TypedDict, total=False):
    role: StrictStr
    file: StrictStr
    sha256: Required[StrictStr]
    content_sha256: StrictStr
    md5: StrictStr
    official: Optional[StrictBool]


class _Data(TypedDict, total=False):
    dataset: StrictStr
    identity: StrictStr
    official: Optional[StrictBool]
    files: Required[list[_DataFile]]


class _Traffic(TypedDict):
    forward_elements: StrictInt
    backward_elements: StrictInt
    parameters: StrictInt


class _Model(TypedDict, total=False):
    name: StrictStr
    parameters: Required[StrictInt]
    forward_flops: Number
    train_flops: Number
    traffic: _Traffic  # models/traffic.py: per-sample element counts behind the bytes a sample moves


class _Gpu(TypedDict, total=False):
    name: StrictStr
    capability: Optional[StrictStr]


class _Container(TypedDict, total=False):
    image: Optional[StrictStr]


class _Environment(TypedDict, total=False):
    cpu: Optional[StrictStr]
    cpu_count: Optional[StrictInt]
    threads: Optional[StrictInt]
    cpu_capability: Optional[StrictStr]
    cpu_flags: Optional[list[StrictStr]]
    malloc: Optional[StrictStr]
    host: Optional[StrictStr]
    gpu: Optional[_Gpu]
    container: Optional[_Container]


class _Roofline(TypedDict, total=False):
    peak_gflops: Required[Number]
    train_gflops: Required[Number]
    eval_gflops: Required[Number]
    train_fraction_of_peak: Required[Number]
    eval_fraction_of_peak: Required[Number]
    # The memory roof and the bytes per sample (absent in records written before they were measured).
    bandwidth_gbs: Number
    copy_gbs: Number
    triad_gbs: Number
    stream_array_bytes: StrictInt
    train_bytes_per_sample: Number
    eval_bytes_per_sample: Number


class _Load(TypedDict, total=False):
    cpu_count: Optional[StrictInt]
    others_cpu_share: Number
    steal_share: Number
    load_avg_1m_max: Number


class _Extra(TypedDict, total=False):
    cell_index: StrictInt
    roofline: _Roofline
    load: _Load  # load.py: the machine's load while the cell ran
    epoch_samples: StrictInt  # with max_steps: the training samples of a whole epoch


# The parts of a record's free-form mappings that the tables and figures read, with the types they rely on.
_NESTED = {name: TypeAdapter(kind) for name, kind in
           (("config", _Config), ("data", _Data), ("model", _Model), ("environment", _Environment), ("extra", _Extra))}


def data_identity(data_sha256s: list[str] | tuple[str, ...]) -> str:
    """A short name for the data a run trained and tested on: of the files' content hashes (of their stored
    hashes in records written before content hashing)."""
    return hashlib.sha256("".join(data_sha256s).encode()).hexdigest()[:12]


# Decompressed-content SHA-256 of .gz files that records written before content hashing name by their stored SHA-256
# alone: the MNIST files the shipped reference results were measured on (/work/shared/data/mnist: three official files
# and the restored training images), so those records share a data identity with runs on the same files, gzip or raw.
KNOWN_CONTENT: dict[str, str] = {
    "bec7c817266cec5355717ac3000f9cf4762ae68539c6767e49d02c0ed9eb0d9d": "374ba378bee06c633f4800ac6a495f71d1b80b0e82bf763acbfa4c7e9c379f75",
    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def unify_data(records: list[RunRecord], known: Optional[dict[str, str]] = None) -> None:
    """Give records that name their data files by stored SHA-256 alone (written before content hashing) the content
    hashes and identity of the same files, where ``known`` or another of ``records`` (which hash both) tells them."""
    table = dict(KNOWN_CONTENT if known is None else known)
    for r in records:
        table.update({f["sha256"]: f["content_sha256"] for f in r.data["files"] if f.get("content_sha256")})
    for r in records:
        files = r.data["files"]
        if all(f.get("content_sha256") for f in files) or not all(f["sha256"] in table for f in files):
            continue
        files = [{**f, "content_sha256": table[f["sha256"]]} for f in files]
        r.data = {**r.data, "files": files, "identity": data_identity([f["content_sha256"] for f in files])}


@dataclass(frozen=True)
class Machine:
    """The machine kind a measurement ran on, as far as it decides the figures: the device kind, the CPU's model, count,
    kernel level and instruction-set flags (or the GPU's name and compute capability). None: not recorded (older files).
    The host name is not part of it: nodes of one kind (a cluster's, a cloud's VMs) give one measurement."""

    device: str
    name: Optional[str]
    count: Optional[int]
    capability: Optional[str]
    flags: Optional[tuple[str, ...]]

    def matches(self, other: "Machine") -> bool:
        """Equal in every field both know: a record written before a field existed matches on the others."""
        return all(a is None or b is None or a == b for a, b in zip(astuple(self), astuple(other)))

    @property
    def label(self) -> str:
        if self.device == "cuda":
            return f"cuda: {self.name or 'unknown GPU'}" + (f" (compute {self.capability})" if self.capability else "")
        level = f", {self.capability}" if self.capability else ""
        return f"{self.device}: {self.name or 'unknown CPU'} ({self.count or '?'} CPUs{level})"

    @property
    def id(self) -> str:
        return hashlib.sha256(json.dumps(astuple(self)).encode()).hexdigest()[:8]


def machine_of(device_type: str, env: dict) -> Machine:
    """The machine kind of an environment record (``environment.environment()``) for a run on ``device_type``."""
    if device_type == "cuda":
        gpu = env.get("gpu") or {}
        return Machine("cuda", gpu.get("name"), None, gpu.get("capability"), None)
    flags = env.get("cpu_flags")
    return Machine(device_type, env.get("cpu"), env.get("cpu_count"), env.get("cpu_capability"),
                   None if flags is None else tuple(flags))


def complete_machines(machines: list[Machine]) -> dict[Machine, Machine]:
    """Each machine missing a field, mapped to the one fuller machine of the list it matches (if exactly one does):
    a folder's records written before a field existed join the section of the same machine's newer records."""
    full = [m for m in dict.fromkeys(machines) if None not in astuple(m)]
    out = {}
    for m in dict.fromkeys(machines):
        fits = [f for f in full if f.matches(m)]
        out[m] = fits[0] if None in astuple(m) and len(fits) == 1 else m
    return out


@dataclass(frozen=True)
class Measurement:
    """What a run of one cell measures: its key on a machine kind. ``legacy_key`` is the key the same cell had before
    data were hashed by content and thread counts resolved (records of earlier versions carry it); such a record
    counts only if it ran with ``threads``."""

    key: str
    machine: Machine
    threads: Optional[int] = None
    legacy_key: str = ""

    def holds(self, record: RunRecord) -> bool:
        """Whether ``record`` is a result of this measurement."""
        legacy = bool(self.legacy_key) and record.key == self.legacy_key and \
            record.environment.get("threads") in (None, self.threads)
        return (record.key == self.key or legacy) and self.machine.matches(record.machine)

    @property
    def suffix(self) -> str:
        """Eight hex digits that tell this measurement's files from another's of the same cell."""
        return hashlib.sha256(f"{self.key} {self.machine.id}".encode()).hexdigest()[:8]


def run_file_for(runs: Path, cell: str, measurement: Measurement, present: dict[str, RunRecord]) -> Path:
    """The run file a measurement of ``cell`` writes: the candidate (``<cell>.json``, then ``<cell>~<suffix>.json``)
    that already holds it, else the first that holds nothing, so a finished result of another key or machine is never
    replaced. ``present``: the folder's records by file name."""
    from .layout import file_stems

    candidates = [Path(runs) / f"{stem}.json" for stem in file_stems(cell, measurement.suffix)]
    for path in candidates:
        if path.name in present and measurement.holds(present[path.name]):
            return path
    for path in candidates:
        if path.name not in present and not path.exists():
            return path
    raise MnistbenchError(f"{candidates[0]} and {candidates[-1].name} hold other configurations of cell {cell}: "
                          "move one of them away, or use another --results-dir")


def derive_status(epochs: list[EpochMetrics], failed: str = "") -> tuple[str, str]:
    """(status, note) from the metrics alone: failed if the cell raised, diverged on any non-finite loss."""
    if failed:
        return "failed", failed
    for e in epochs:
        for name in ("train_loss", "test_loss"):
            value = getattr(e, name)
            if not math.isfinite(value):
                return "diverged", f"{name.replace('_', ' ')} became {value} in epoch {e.epoch}"
    return "finished", ""


def finite_or_none(x: Any) -> Any:
    """``x``, or None for a non-finite float: a value strict JSON can hold (NaN and infinity have no JSON form)."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def now() -> str:
    """The current time as run files store it (``started``, ``finished``): UTC, ISO 8601, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _finite_only(value: Any, path: str, found: dict[str, str]) -> Any:
    """``value`` with every non-finite float replaced by None, its path and value noted in ``found``."""
    if isinstance(value, float) and not math.isfinite(value):
        found[path] = repr(value)
        return None
    if isinstance(value, dict):
        return {k: _finite_only(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_only(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    return value


def _restore_non_finite(raw: dict, non_finite: Any) -> None:
    if not isinstance(non_finite, dict):
        raise ValueError("non_finite: must be a mapping of path -> value")
    for path, text in non_finite.items():
        if text not in ("nan", "inf", "-inf"):
            raise ValueError(f"non_finite.{path}: {str(text)[:20]!r} is not nan, inf or -inf")
        parts = path.replace("]", "").replace("[", ".").split(".")
        target = raw
        for p in parts[:-1]:
            target = target[int(p)] if isinstance(target, list) else target[p]
        last = parts[-1]
        if isinstance(target, list):
            target[int(last)] = float(text)
        elif isinstance(target, dict) and last in target and target[last] is None:
            target[last] = float(text)
        else:
            raise ValueError(f"non_finite.{path}: names no null value")


def record_from_dict(raw: Any) -> RunRecord:
    """A validated record from parsed JSON; raises ValueError naming the first problem."""
    if not isinstance(raw, dict):
        raise ValueError(f"a run file holds a JSON object, not {type(raw).__name__}")
    schema = raw.get("schema")
    if schema not in (1, SCHEMA):
        raise ValueError(f"schema {str(schema)[:20]!r}, expected 1 or {SCHEMA}")
    raw = dict(raw)
    if "non_finite" in raw:
        try:
            _restore_non_finite(raw, raw.pop("non_finite"))
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise ValueError(f"non_finite: names a value that is not there ({e})") from None
    known = {f.name for f in fields(RunRecord)}
    raw = {k: v for k, v in raw.items() if k in known}
    try:
        record = _RECORD.validate_python(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "record"
        raise ValueError(f"{where}: {err['msg']}") from None
    _check_contents(record)
    # Settings that did not exist when the file was written had their default value.
    record.config = with_later_defaults(record.config)
    if not record.key:  # schema 1: the key is computed as a current run would compute it
        config = {**record.config, "device": record.device_type}
        record.key = cell_key(config, [f["sha256"] for f in record.data["files"]])
    if "identity" not in record.data:
        record.data = {**record.data, "identity": data_identity([f["sha256"] for f in record.data["files"]])}
    unify_data([record])  # files known by their stored hash alone get their content's identity
    if record.status != "failed":
        record.status, note = derive_status(record.epochs)
        record.note = record.note or note
    record.schema = SCHEMA
    return record


def _check_contents(record: RunRecord) -> None:
    """What the types alone do not say: the keys every reader relies on."""
    if record.status not in STATUSES:
        raise ValueError(f"status: {record.status[:20]!r} is not one of {', '.join(STATUSES)}")
    for name, adapter in _NESTED.items():
        try:
            adapter.validate_python(getattr(record, name))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in (name, *err["loc"]))
            raise ValueError(f"{where}: {err['msg']}") from None
    if not record.epochs and record.status != "failed":
        raise ValueError("epochs: empty, but the run is not marked failed")
    if any(e.epoch != i for i, e in enumerate(record.epochs, start=1)):
        raise ValueError("epochs: not numbered 1, 2, 3, ...")
    if len(record.epochs) > record.config["epochs"]:
        raise ValueError(f"epochs: {len(record.epochs)} recorded, config says {record.config['epochs']}")


def load_record(path: Path) -> RunRecord:
    """Read and validate one run file; any problem is one line naming the file."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise MnistbenchError(f"{path}: not a readable run file ({getattr(e, 'strerror', None) or e})") from None
    try:
        return record_from_dict(json.loads(text))
    except (ValueError, RecursionError) as e:
        raise MnistbenchError(f"{path}: not a valid run file ({str(e)[:200]})") from None


def run_files(results_dir: Path) -> list[Path]:
    """The run files of one spec's results folder, in file-name order."""
    runs = Path(results_dir) / "runs"
    if not runs.is_dir():
        raise MnistbenchError(f"no run files in {results_dir} (expected {runs}/*.json)")
    return sorted(runs.glob("*.json"))


def load_records(results_dir: Path) -> list[RunRecord]:
    """All run files of one results folder, in file-name order; a bad file stops with one line naming it."""
    return [load_record(p) for p in run_files(results_dir)]
