"""The cell key: the one owner of what enters it (docs/results.md, "Cell keys and measurements").

A cell's key is a hash of its resolved settings (the device as used, not ``auto``; the CPU threads
as used, not ``None``; the seed) and of its data files' SHA-256. Two rules keep the keys of
committed results stable as settings are added:

- a setting added after 0.1 enters the key only when it differs from its default
  (``KEY_OMITTED_AT_DEFAULT``), so records written before it existed keep their keys;
- the distortion ranges enter it only with ``distort`` on: without it they change nothing.

Imports nothing from the package: ``results`` (the run record) and ``schema`` (the spec) both use it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Optional

# Settings added after 0.1, with the value every record written before them ran with. They equal
# CellConfig's defaults (tests/test_keys.py checks it) and never change: a changed value would
# change the keys of committed results.
KEY_OMITTED_AT_DEFAULT: dict[str, Any] = {
    "deterministic": False,
    "distort": False,
    "distort_translate": 2.0,
    "distort_scale": 0.1,
    "distort_squeeze": 0.1,
    "distort_shear": 10.0,
    "distort_rotate": 0.0,
    "validation": 0,
    "warmup": 0.3,
    "optimizer_impl": "default",
    "label_smoothing": 0.0,
    "ema": None,
    "batch_size_start": None,
    "stop_at_target": False,
    "recipe": "",
    "model_sha256": None,
    "max_steps": None,
    "ns_steps": 5,
}

DISTORT_RANGES = ("distort_translate", "distort_scale", "distort_squeeze", "distort_shear", "distort_rotate")


def key_settings(config: Mapping[str, Any], threads: Optional[int] = None) -> dict[str, Any]:
    """The settings of a resolved configuration that enter its key. ``threads``: the CPU threads the cell runs
    with, in place of ``threads: None`` (as the device used stands for ``auto``)."""
    settings = dict(config)
    if threads is not None:
        settings["threads"] = threads
    if not settings.get("distort"):
        settings = {k: v for k, v in settings.items() if k not in DISTORT_RANGES}
    return {k: v for k, v in settings.items() if not (k in KEY_OMITTED_AT_DEFAULT and v == KEY_OMITTED_AT_DEFAULT[k])}


def cell_key(config: Mapping[str, Any], data_sha256s: list[str] | tuple[str, ...], threads: Optional[int] = None) -> str:
    """The canonical key of a cell: resolved settings (seed included) and data, independent of how a spec lays them out."""
    blob = json.dumps({"config": key_settings(config, threads), "data": list(data_sha256s)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def with_later_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded configuration with the settings added after it was written set to the value it ran with."""
    return {**config, **{k: v for k, v in KEY_OMITTED_AT_DEFAULT.items() if k not in config}}
