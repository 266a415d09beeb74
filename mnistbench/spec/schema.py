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
from typing import Annotated, Any, Literal, NoReturn, Optional

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)

from ..data.catalog import DATASETS
from ..errors import MnistbenchError, SpecErrors, brief
from ..models.names import display_name, parse_model_ref
from .keys import DISTORT_RANGES, cell_key
from .safeyaml import MAX_SPEC_BYTES, load_bounded

Optimizer = Literal["sgd", "adam", "adamw", "adadelta", "muon"]
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
    max_steps: Optional[int] = Field(None, gt=0)  # end training after this many optimizer steps: the last epoch is cut short there
    batch_size: int = Field(128, gt=0, le=1_000_000)
    eval_batch_size: int = Field(1000, gt=0, le=1_000_000)
    optimizer: Optimizer = "adam"
    lr: float = Field(1e-3, gt=0, le=100)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD's, and Muon's (Nesterov) with optimizer: muon
    ns_steps: int = Field(5, gt=0, lt=100)  # Newton-Schulz iterations of each Muon update, with optimizer: muon
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
        """The number of optimizer steps of each epoch over ``samples`` training samples (the last batch may be short);
        with ``max_steps``, the last epoch ends at that step (ValueError, one line, when it does not end in the last)."""
        full = [-(-samples // self.epoch_batch_size(e)) for e in range(1, self.epochs + 1)]
        if self.max_steps is None:
            return full
        problem = self.step_budget_problem(samples)
        if problem:
            raise ValueError(problem)
        return full[:-1] + [self.max_steps - sum(full[:-1])]

    def samples_per_epoch(self, samples: int) -> list[int]:
        """The training samples each epoch takes over ``samples`` (all of them, but in an epoch ``max_steps`` cuts)."""
        return [min(samples, steps * self.epoch_batch_size(e)) for e, steps in enumerate(self.steps_per_epoch(samples), 1)]

    def step_budget_problem(self, samples: int) -> Optional[str]:
        """Why ``max_steps`` does not fit ``epochs`` over ``samples`` training samples (it must end in the last epoch,
        so every epoch trains and is evaluated), or None."""
        if self.max_steps is None:
            return None
        full = [-(-samples // self.epoch_batch_size(e)) for e in range(1, self.epochs + 1)]
        before, total = sum(full[:-1]), sum(full)
        if before < self.max_steps <= total:
            return None
        fits = f"steps {before + 1} to {total}" if self.epochs > 1 else f"at most {total} steps"
        return (f"max_steps: {self.max_steps} must end in the last of the {self.epochs} epochs ({fits} with "
                f"{samples:,} training samples): change epochs or max_steps")

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
    """What a distributed executor reserves for each cell (``--executor ray``); the sequential runner ignores it.

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

SPEC_KEYS = ("name", "description", "matrix", "variants", "resources", "cell_timeout")
Setting = Literal[SETTINGS]  # a key of CellConfig that a spec may set
MAX_CELL_TIMEOUT = 30 * 24 * 3600  # seconds: a month


def _distinct(values: list) -> list:
    if _has_repeats(values):
        raise ValueError("repeated value")
    return values


# A matrix axis: a non-empty list of distinct values (a single value is an axis of one).
Axis = Annotated[list[Any], BeforeValidator(lambda v: v if isinstance(v, list) else [v]), Field(min_length=1),
                 AfterValidator(_distinct)]


class Spec(BaseModel):
    """A spec's structure. Its keys are checked here; the values of settings by ``CellConfig``, cell by cell, where
    an error in a matrix value names its axis."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    description: str = ""
    settings: dict[Setting, Any] = {}  # one value for every cell (the spec file's top-level settings)
    matrix: dict[Setting, Axis] = {}
    variants: list[dict[Setting, Any]] = Field([{}], min_length=1)
    resources: Resources = Resources()
    # Seconds a cell may take in its own process (docs/specs.md); None: no bound.
    cell_timeout: Optional[float] = Field(None, gt=0, le=MAX_CELL_TIMEOUT)
    source: str = ""  # the spec file: referenced models' files are relative to its folder

    @field_validator("name")
    @classmethod
    def _one_path_segment(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", v) or v in (".", ".."):
            raise ValueError(NAME_RULE)
        return v

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
    problems: list[str] = []
    spec = _without_overlaps(_structure(raw, name, source, problems), problems)
    check_cell_count(spec.matrix, spec.variants, where)
    invalid: list[dict] = []
    cells = spec.cells(invalid)
    cascade = bool(problems)  # a dropped axis or key would read as "missing": say only what is wrong
    problems += dict.fromkeys(f"{_loc(err, set(spec.matrix))}: {_one_line(err)}" for err in invalid
                              if not (cascade and err["type"] == "missing"))  # each problem once, not once per cell
    if problems:
        _refuse(problems, where)
    check_unique(cells, where)
    return spec


def _refuse(problems: list[str], where: str) -> NoReturn:
    """Raise ``SpecErrors``: each problem once, at most ``MAX_PROBLEMS`` of them."""
    problems = list(dict.fromkeys(problems))
    raise SpecErrors([f"{where}: {p}" for p in problems[:MAX_PROBLEMS]]
                     + ([f"{where}: … and {len(problems) - MAX_PROBLEMS} more"] if len(problems) > MAX_PROBLEMS else []))


MAX_PROBLEMS = 20  # problems of one spec listed at once
NAME_RULE = "must be 1-100 letters, digits, '.', '_' or '-' (not '.' or '..')"
# Clearer words than pydantic's for a whole part of the spec that has the wrong form.
_FORM = {
    "name": NAME_RULE,
    "matrix": "must be a mapping of setting -> list of values",
    "variants": "must be a non-empty list of mappings of settings",
    "resources": "must be a mapping, e.g. {cpus: 1, gpus: 0.25}",
    "cell_timeout": f"seconds, a number above 0 and at most {MAX_CELL_TIMEOUT}",
}


def _structure(raw: dict, name: str, source: str, problems: list[str]) -> Spec:
    """The spec's structure, validated by pydantic: the top-level settings gathered under ``settings``, each problem
    a line in ``problems``, and each part at fault left out so that the rest (the cells' values) is still checked."""
    fields = {"name": name, **{k: v for k, v in raw.items() if k in SPEC_KEYS}, "source": source,
              "settings": {k: v for k, v in raw.items() if k not in SPEC_KEYS}}
    for _ in range(len(SPEC_KEYS)):  # each round leaves out what failed: the next passes, or finds what hid behind it
        try:
            return Spec.model_validate(fields)
        except ValidationError as e:
            problems += [f"{_where(_path(err))}: {_structure_problem(err)}" for err in e.errors()]
            fields = _without(fields, [_path(err) for err in e.errors()])
    _refuse(problems, source or name)


def _path(err: dict) -> tuple:
    """Where a structure error is, as keys: ``("matrix", "seed")``; an unknown key as written (its loc holds its text)."""
    top, *rest = err["loc"]
    if rest[-1:] == ["[key]"]:
        rest[-2:] = [err["input"]]
    return (top, *rest)


def _where(path: tuple) -> str:
    """A structure error's place as the spec file shows it: ``lr``, ``matrix.seed``, ``variants[0].lr``, ``resources.cpus``."""
    top, *rest = path
    if top == "settings":
        return _key_text(rest[0])
    if top == "variants":
        return "variants" if len(rest) < 2 else f"variants[{rest[0]}].{_key_text(rest[1])}"
    return ".".join([str(top), *(_key_text(p) for p in rest[:1])])


def _structure_problem(err: dict) -> str:
    loc, kind = err["loc"], err["type"]
    if loc[-1] == "[key]":
        return unknown_key(err["input"], SPEC_KEYS if loc[0] == "settings" else ())
    if loc[0] == "resources" and kind == "extra_forbidden":
        return "unknown key (known: cpus, gpus)"
    if loc[0] == "matrix" and kind == "too_short":
        return "empty list, the matrix would hold no cells"
    if loc[0] in _FORM and (len(loc) == 1 or loc[0] == "variants" and len(loc) == 2):
        return _FORM[loc[0]] + (f", got {brief(err['input'])}" if loc[0] in ("name", "cell_timeout") else "")
    return _one_line(err)


def _without(fields: dict, paths: list[tuple]) -> dict:
    """``fields`` without the parts at ``paths`` (a key, an axis, a variant's key, or a whole part)."""
    out = {**fields, "settings": dict(fields["settings"])}
    for top, *rest in paths:
        if top in ("settings", "matrix") and rest:
            out[top] = {k: v for k, v in out[top].items() if k != rest[0]}
        elif top == "variants" and len(rest) >= 2:
            out[top] = [{k: v for k, v in x.items() if k != rest[1]} if i == rest[0] else x for i, x in enumerate(out[top])]
        elif top == "name":
            out["name"] = "spec"  # a stand-in: the problem is listed, and the spec is never returned
        else:
            out.pop(top, None)
    return out


def _without_overlaps(spec: Spec, problems: list[str]) -> Spec:
    """A key the matrix varies is not also set at the top level or in a variant: each such place is a problem, left out."""
    problems += [f"{k}: set both at the top level and in the matrix" for k in spec.settings if k in spec.matrix]
    problems += [f"variants[{i}].{k}: also a matrix axis" for i, v in enumerate(spec.variants) for k in v if k in spec.matrix]
    return spec.model_copy(update={"settings": {k: v for k, v in spec.settings.items() if k not in spec.matrix},
                                   "variants": [{k: x for k, x in v.items() if k not in spec.matrix} for v in spec.variants]})


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


def describe_spec(path, spec) -> dict:
    """What ``validate`` says of a valid spec: its name, how many cells it expands to, the settings that vary."""
    return {"path": str(path), "spec": spec.name, "cells": len(spec.cells()), "axes": spec.axes()}


def describe_cells(spec) -> dict:
    """``run --dry-run``: every cell of a spec, with its full configuration as the spec resolves it."""
    return {"spec": spec.name, "cells": [{"id": c.id, "config": c.config.model_dump(mode="json")} for c in spec.cells()]}
