"""Benchmark specs: a YAML file of settings plus a matrix, validated and expanded into cells.

A spec is flat: every scalar setting of a cell (``CellConfig``) may stand at the top
level (one value for all cells) or in ``matrix`` (a list: one cell per value, and
the cartesian product over all matrix keys). ``variants`` is an optional list of
partial settings (e.g. ``[{}, {channels_last: true}, {precision: bf16}]``): each
matrix cell is repeated once per variant, so options can be measured one at a time
against the default instead of in every combination.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..data.catalog import DATASETS
from ..errors import MnistbenchError, SpecErrors, brief
from ..models.names import display_name, parse_model_ref
from .keys import DISTORT_RANGES, cell_key
from .safeyaml import MAX_SPEC_BYTES, load_bounded

Optimizer = Literal["sgd", "adam", "adamw", "adadelta"]
Schedule = Literal["none", "step", "cosine", "onecycle"]


class CellConfig(BaseModel):
    """Everything that defines one training run: one model, one seed, one configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    model: str
    seed: int = Field(0, ge=0, lt=2**32)
    dataset: str = "mnist"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    loader: Literal["tensor", "torchvision"] = "tensor"
    epochs: int = Field(10, gt=0, le=10_000)
    batch_size: int = Field(128, gt=0, le=1_000_000)
    eval_batch_size: int = Field(1000, gt=0, le=1_000_000)
    optimizer: Optimizer = "adam"
    lr: float = Field(1e-3, gt=0, le=100)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Schedule = "none"
    warmup: float = Field(0.3, gt=0, lt=1)  # fraction of the steps spent rising to the peak lr, for schedule 'onecycle'
    step_size: int = Field(1, gt=0)  # epochs between decays, for schedule 'step'
    gamma: float = Field(0.1, gt=0, le=1)  # decay factor, for schedule 'step'
    optimizer_impl: Literal["default", "for-loop", "foreach", "fused"] = "default"  # PyTorch's implementation of the update
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # of the training loss (evaluation loss stays plain cross-entropy)
    ema: Optional[float] = Field(None, gt=0, lt=1)  # decay of an exponential moving average of the weights, evaluated instead of them
    batch_size_start: Optional[int] = Field(None, gt=0, le=1_000_000)  # batch-size ramp: epoch 1's batch, rising geometrically to batch_size
    threads: Optional[int] = Field(None, gt=0, le=1024)  # CPU threads; None: torch's default
    channels_last: bool = False  # NHWC memory format for the conv layers and their input
    compile: bool = False  # torch.compile the model (compilation time counts as training time)
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast forward and loss to bfloat16
    target_accuracy: Optional[float] = Field(None, gt=0, le=1)  # for time-to-accuracy
    target_eval_every: Optional[int] = Field(None, gt=0)  # also check the target every N batches (untimed)
    stop_at_target: bool = False  # MLPerf-style: end the cell after the first epoch whose evaluation meets the target
    recipe: str = Field("", max_length=40, pattern=r"^[A-Za-z0-9._-]*$")  # a short name for a variant's settings, used as its label
    deterministic: bool = False  # torch.use_deterministic_algorithms for the cell (README, "When runs repeat")
    # Random affine distortions of each training batch (docs/paper.md); the ranges apply only with distort: true.
    distort: bool = False
    distort_translate: float = Field(2.0, ge=0, le=14)  # pixels, each axis, uniform in ±value
    distort_scale: float = Field(0.1, ge=0, lt=1)  # zoom factor uniform in 1 ± value
    distort_squeeze: float = Field(0.1, ge=0, lt=1)  # width × (1 + q), height ÷ (1 + q), q uniform in ±value
    distort_shear: float = Field(10.0, ge=0, lt=60)  # horizontal shear angle, degrees, uniform in ±value
    distort_rotate: float = Field(0.0, ge=0, le=180)  # rotation, degrees, uniform in ±value (none in the paper)
    validation: int = Field(0, ge=0)  # hold out the last N training samples and evaluate on them instead of the test set
    model_sha256: Optional[str] = None  # resolved by the run: SHA-256 of the file defining a referenced model

    # The spec file's folder, for model references to files (./nets.py:build); never part of the key or the record.
    _base_dir: str = PrivateAttr("")

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        parse_model_ref(v)  # raises ValueError with a one-line message
        return v

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(DATASETS.unknown_message(v))
        return v

    @model_validator(mode="after")
    def _ramp_needs_tensor_batches(self) -> "CellConfig":
        if self.batch_size_start is not None and self.loader != "tensor":
            raise ValueError("batch_size_start (a batch-size ramp) needs loader: tensor")
        if self.batch_size_start is not None and self.schedule == "step":
            raise ValueError("batch_size_start (a batch-size ramp) does not combine with schedule: step (epochs of unequal steps)")
        if self.stop_at_target and (self.target_accuracy is None or self.target_eval_every is not None):
            raise ValueError("stop_at_target needs target_accuracy and evaluates at epoch ends only (no target_eval_every)")
        if self.optimizer_impl == "fused" and self.optimizer == "adadelta":
            raise ValueError("optimizer_impl: fused: PyTorch has no fused Adadelta (use foreach or for-loop)")
        return self

    def epoch_batch_size(self, epoch: int) -> int:
        """The batch size of an epoch (1-based): ``batch_size``, or with a ramp from ``batch_size_start`` at epoch 1
        to ``batch_size`` at the last epoch, geometrically in between."""
        if self.batch_size_start is None or self.epochs == 1:
            return self.batch_size
        t = (epoch - 1) / (self.epochs - 1)
        return max(1, round(self.batch_size_start * (self.batch_size / self.batch_size_start) ** t))

    def steps_per_epoch(self, samples: int) -> list[int]:
        """The number of optimizer steps of each epoch over ``samples`` training samples (the last batch may be short)."""
        return [-(-samples // self.epoch_batch_size(e)) for e in range(1, self.epochs + 1)]

    @property
    def base_dir(self) -> str:
        """The folder a file reference in ``model`` is relative to (the spec's folder; the working folder without one)."""
        return self._base_dir

    def in_folder(self, base_dir: str) -> "CellConfig":
        """The same configuration, with file references in ``model`` resolved relative to ``base_dir``."""
        copy = self.model_copy()
        copy._base_dir = base_dir
        return copy

    def resolved(self, device_type: str, model_sha256: Optional[str] = None) -> "CellConfig":
        """The configuration as it runs: ``device: auto`` replaced by the device used, a referenced model's file hash set."""
        return self.model_copy(update={"device": device_type, "model_sha256": model_sha256})

    def key(self, data_sha256s: list[str] | tuple[str, ...] = (), threads: Optional[int] = None) -> str:
        """The canonical cell key (``keys.cell_key``: what enters it); call it on a ``resolved`` configuration.
        ``threads``: the CPU threads the cell runs with, in place of ``threads: None``."""
        return cell_key(self.model_dump(), data_sha256s, threads)


RESOLVED = ("model_sha256",)  # set by the run, not in specs
SETTINGS = tuple(k for k in CellConfig.model_fields if k not in RESOLVED)
# Settings that change nothing unless another one calls for them (`run --dry-run` lists them only where they apply).
_APPLIES_WHEN = {
    "momentum": lambda c: c.optimizer == "sgd",  # Adam's betas are not this momentum
    "warmup": lambda c: c.schedule == "onecycle",
    "step_size": lambda c: c.schedule == "step",
    "gamma": lambda c: c.schedule == "step",
    **{k: (lambda c: c.distort) for k in DISTORT_RANGES},
    **{k: (lambda c: False) for k in RESOLVED},
}


def applies(config: CellConfig, key: str) -> bool:
    """Whether setting ``key`` has any effect on a cell with this configuration."""
    return _APPLIES_WHEN.get(key, lambda c: True)(config)


class Resources(BaseModel):
    """What a distributed engine reserves for each cell (``--engine ray``); the sequential runner ignores it.

    Unset values take per-device defaults (``executors.ray_options``): a CPU cell gets its
    ``threads`` (else 1) CPUs and no GPU, a CUDA cell 1 CPU and 1 GPU. ``gpus`` below 1
    (0.5, 0.25) packs several cells on one GPU.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    cpus: Optional[float] = Field(None, gt=0, le=1024)
    gpus: Optional[float] = Field(None, ge=0, le=1024)

    @field_validator("gpus")
    @classmethod
    def _share_or_whole(cls, v: Optional[float]) -> Optional[float]:
        if v is not None and v > 1 and v != int(v):
            raise ValueError("a share of one GPU (0.5, 0.25) or a whole number of GPUs")
        return v


@dataclass(frozen=True)
class Cell:
    id: str
    config: CellConfig


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    settings: dict[str, Any]
    matrix: dict[str, list[Any]]
    variants: list[dict[str, Any]] = [{}]
    resources: Resources = Resources()
    cell_timeout: Optional[float] = None  # seconds a cell may take in its own process (docs/specs.md); None: no bound
    source: str = ""  # the spec file: referenced models' files are relative to its folder

    def axes(self) -> list[str]:
        """The settings that vary between cells: matrix keys, then keys the variants override."""
        return list(self.matrix) + [k for k in dict.fromkeys(k for v in self.variants for k in v) if k not in self.matrix]

    def folder(self) -> str:
        """The spec file's folder (absolute), which file references to models are relative to."""
        return str(Path(self.source).absolute().parent) if self.source else str(Path.cwd())

    def cells(self, invalid: Optional[list[dict]] = None) -> list[Cell]:
        """The cartesian product of the matrix over the fixed settings, in matrix order. With ``invalid``, a cell
        that fails validation adds its errors (pydantic's) there and is left out, instead of raising."""
        keys, axes = list(self.matrix), self.axes()
        cells = []
        for values in itertools.product(*(self.matrix[k] for k in keys)):
            combo = dict(zip(keys, values))
            for variant in self.variants:
                try:
                    config = CellConfig(**{**self.settings, **combo, **variant}).in_folder(self.folder())
                except ValidationError as e:
                    if invalid is None:
                        raise
                    invalid.extend(e.errors())
                    continue
                named = [k for k in axes if k in variant]
                if "recipe" in variant:  # a named recipe stands for its settings in the id: model_recipe-NAME_seed-N
                    named = [k for k in named if k in ("recipe", "seed")]
                cells.append(Cell(cell_id(config, keys + named), config))
        return cells


def cell_id(config: CellConfig, matrix_keys: list[str]) -> str:
    """A readable, file-name-safe id: the model, every other varying key with its value, and the seed."""
    keys = [k for k in matrix_keys if k != "model"]
    if "seed" not in keys:
        keys.append("seed")
    parts = [display_name(config.model)] + [f"{k}-{getattr(config, k)}" for k in keys]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts))[:MAX_ID_LENGTH]


MAX_ID_LENGTH = 200  # file names of run files and checkpoints stay well under the usual 255-byte limit


def check_unique(cells: list[Cell], where: str) -> None:
    """Two cells with one configuration, or two configurations with one id, are a spec error."""
    seen_ids: dict[str, CellConfig] = {}
    seen_configs: dict[CellConfig, str] = {}
    for cell in cells:
        if cell.config in seen_configs:
            raise MnistbenchError(f"{where}: cell {cell.id} is listed twice (the same settings and seed), e.g. by repeated variants")
        if cell.id in seen_ids:
            raise MnistbenchError(f"{where}: two different cells would share the id {cell.id}: make their settings differ in a readable way")
        seen_ids[cell.id], seen_configs[cell.config] = cell.config, cell.id


def _loc(error: dict, matrix_keys: set[str]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "spec"
    root = str(error["loc"][0]) if error["loc"] else ""
    return f"matrix.{key}" if root in matrix_keys else key


def _one_line(error: dict) -> str:
    msg = error["msg"]
    msg = msg.removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return unknown_key(error["loc"][-1] if error["loc"] else "")
    if error["type"] == "missing":
        return "missing (every cell needs one)"
    msg = msg if len(msg) <= 300 else msg[:299] + "…"
    if "input" in error and error["type"] not in ("value_error",):
        msg = f"{msg}, got {brief(error['input'])}"
    return msg


SPEC_KEYS = ("name", "description", "matrix", "variants", "resources", "cell_timeout")


def unknown_key(key: Any, extra: tuple[str, ...] = ()) -> str:
    """'unknown key', with the closest known settings when the key looks like a typo, and where all are listed."""
    close = difflib.get_close_matches(key, extra + SETTINGS, n=3, cutoff=0.6) if isinstance(key, str) else []
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"unknown key ({hint}every setting is listed in docs/specs.md)"


MAX_CELLS = 10_000  # cells one spec may expand to; checked before any is built


def _key_text(key: Any) -> str:
    """A key as an error message names it: short strings as they are, anything else quoted briefly."""
    return key if isinstance(key, str) and len(key) <= 100 else brief(key)


def _has_repeats(values: list) -> bool:
    """Whether a matrix axis lists one value twice (``1`` and ``True`` differ); no repr, so any integer is fine."""
    seen: set = set()
    for v in values:
        try:
            ident = (type(v).__name__, v)
            hash(ident)
        except TypeError:  # a list or mapping: compared by its repr (bounded by the loader's 10,000 values)
            try:
                ident = ("repr", repr(v))
            except ValueError:  # holds an integer too long to print: treated as unique
                ident = ("id", id(v))
        if ident in seen:
            return True
        seen.add(ident)
    return False


def check_cell_count(matrix: dict[str, list], variants: list, where: str) -> None:
    """Refuse a matrix whose cartesian product exceeds ``MAX_CELLS``, before expanding it."""
    count = len(variants)
    for key, values in matrix.items():
        count *= len(values)
        if count > MAX_CELLS:
            sizes = " x ".join(str(len(v)) for v in matrix.values())
            raise MnistbenchError(f"{where}: matrix: {sizes} x {len(variants)} variants is more than {MAX_CELLS} cells (the limit for a spec)")


def parse_spec(raw: Any, name: str, source: str = "") -> Spec:
    """Validate a spec given as parsed YAML. Every problem is one line that names the offending key, and all of
    them are found in one pass (``SpecErrors``), so a spec with three typos is fixed in one round."""
    where = source or name
    if not isinstance(raw, dict):
        raise MnistbenchError(f"{where}: a spec must be a mapping of settings, got {type(raw).__name__}")
    raw, problems = dict(raw), []
    spec_name = raw.pop("name", name)
    description = raw.pop("description", "")
    matrix = _checked_matrix(raw.pop("matrix", None), raw, problems)
    variants = raw.pop("variants", [{}])
    try:
        resources = parse_resources(raw.pop("resources", None), where)
    except MnistbenchError as e:
        problems.append(str(e).removeprefix(f"{where}: "))
        resources = Resources()
    try:
        cell_timeout = parse_cell_timeout(raw.pop("cell_timeout", None), where)
    except MnistbenchError as e:
        problems.append(str(e).removeprefix(f"{where}: "))
        cell_timeout = None
    if not isinstance(spec_name, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", spec_name) or spec_name in (".", ".."):
        problems.append(f"name: must be 1-100 letters, digits, '.', '_' or '-' (not '.' or '..'), got {brief(spec_name)}")
        spec_name = name
    if not isinstance(description, str):
        problems.append("description: must be a string")
        description = ""
    for key in [k for k in raw if k not in SETTINGS]:
        problems.append(f"{_key_text(key)}: {unknown_key(key, SPEC_KEYS)}")
        del raw[key]  # so the values of the other settings are still checked
    variants = _checked_variants(variants, matrix, problems)
    check_cell_count(matrix, variants, where)
    spec = Spec(name=spec_name, description=description, settings=raw, matrix=matrix, variants=variants,
                resources=resources, cell_timeout=cell_timeout, source=source)
    invalid: list[dict] = []
    cells = spec.cells(invalid)
    cascade = bool(problems)  # a dropped axis or key would read as "missing": say only what is wrong
    problems += dict.fromkeys(f"{_loc(err, set(matrix))}: {_one_line(err)}" for err in invalid
                              if not (cascade and err["type"] == "missing"))  # each problem once, not once per cell
    if problems:
        raise SpecErrors([f"{where}: {p}" for p in problems[:MAX_PROBLEMS]]
                         + ([f"{where}: … and {len(problems) - MAX_PROBLEMS} more"] if len(problems) > MAX_PROBLEMS else []))
    check_unique(cells, where)
    return spec


MAX_PROBLEMS = 20  # problems of one spec listed at once


def _checked_matrix(matrix: Any, settings: dict, problems: list[str]) -> dict[str, list]:
    """The matrix with every axis a non-empty list of distinct values; the axes that are not go to ``problems``."""
    if matrix is None:
        return {}
    if not isinstance(matrix, dict):
        problems.append("matrix: must be a mapping of setting -> list of values")
        return {}
    out = {}
    for key, values in matrix.items():
        if key not in SETTINGS:
            problems.append(f"matrix.{_key_text(key)}: {unknown_key(key)}")
        elif key in settings:
            problems.append(f"{key}: set both at the top level and in the matrix")
        elif isinstance(values, list) and not values:
            problems.append(f"matrix.{key}: empty list, the matrix would hold no cells")
        elif isinstance(values, list) and _has_repeats(values):
            problems.append(f"matrix.{key}: repeated value")
        else:
            out[key] = values if isinstance(values, list) else [values]
    return out


def _checked_variants(variants: Any, matrix: dict, problems: list[str]) -> list[dict]:
    """The variants, each without the keys that are unknown or also a matrix axis (those go to ``problems``)."""
    if not isinstance(variants, list) or not variants or not all(isinstance(v, dict) for v in variants):
        problems.append("variants: must be a non-empty list of mappings of settings")
        return [{}]
    out = []
    for i, variant in enumerate(variants):
        for key in variant:
            if key not in SETTINGS:
                problems.append(f"variants[{i}].{_key_text(key)}: {unknown_key(key)}")
            elif key in matrix:
                problems.append(f"variants[{i}].{key}: also a matrix axis")
        out.append({k: v for k, v in variant.items() if k in SETTINGS and k not in matrix})
    return out


MAX_CELL_TIMEOUT = 30 * 24 * 3600  # seconds: a month


def parse_cell_timeout(raw: Any, where: str) -> Optional[float]:
    """``cell_timeout:`` of a spec: seconds (a positive number), or absent/null for no bound."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 < raw <= MAX_CELL_TIMEOUT:
        raise MnistbenchError(f"{where}: cell_timeout: seconds, a number above 0 and at most {MAX_CELL_TIMEOUT}, got {brief(raw)}")
    return float(raw)


def parse_resources(raw: Any, where: str) -> Resources:
    """``resources:`` of a spec (``cpus``, ``gpus`` per cell), with one-line errors."""
    if raw is None:
        return Resources()
    if not isinstance(raw, dict):
        raise MnistbenchError(f"{where}: resources: must be a mapping, e.g. {{cpus: 1, gpus: 0.25}}")
    try:
        return Resources.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key (known: cpus, gpus)" if err["type"] == "extra_forbidden" else _one_line(err)
        raise MnistbenchError(f"{where}: resources.{key}: {msg}") from None


def read_spec_text(path: Path) -> str:
    """The text of a spec file, reading at most ``MAX_SPEC_BYTES`` (+1, to tell that it is too large)."""
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_SPEC_BYTES + 1)
        if len(blob) > MAX_SPEC_BYTES:
            raise MnistbenchError(f"{path}: larger than {MAX_SPEC_BYTES} bytes (the limit for a spec)")
        return blob.decode("utf-8")
    except FileNotFoundError:
        raise MnistbenchError(f"spec file not found: {path}") from None
    except IsADirectoryError:
        raise MnistbenchError(f"spec path is a folder, not a file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MnistbenchError(f"cannot read spec {path}: {getattr(e, 'strerror', None) or e}") from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file within the bounds of ``safeyaml``; every problem is a one-line error."""
    path = Path(path)
    raw = load_bounded(read_spec_text(path), str(path))
    if raw is None:
        raise MnistbenchError(f"{path}: empty spec")
    return parse_spec(raw, path.stem, str(path))
