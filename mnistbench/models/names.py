"""The names a spec may give a model, taken apart without importing anything: built-in, entry point or reference.

What a spec's ``model:`` may say (docs/models.md):

- ``lenet5``: a built-in model (``mnistbench models``);
- ``my_pkg.nets:SmallCNN``: an attribute of an importable module;
- ``./nets.py:build``: an attribute of a Python file, relative to the spec's folder;
- ``smallcnn``: a model an installed package declares in the entry-point group ``mnistbench.models``;
- ``small=./nets.py:build``: any import-path or file reference with a display name for tables and
  cell ids (else the attribute's name).

Imports no torch (nor the zoo, whose models do): the spec stage checks names with it; ``factory`` loads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import brief
from ..registry import Registry

# The registry the zoo's models (and any registered at run time) are in; ``zoo`` fills it when imported.
MODELS: Registry = Registry("model")
register_model = MODELS.register
# The zoo's models by name, so that a spec is checked without importing the zoo: tests/test_models.py checks that
# they are the models zoo.py registers.
BUILTIN_MODELS = ("lenet5", "custom-mlp", "mlp-matched", "examples-net")

ENTRY_POINT_GROUP = "mnistbench.models"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class ModelRef:
    """A model reference as written, taken apart: what it names and how it is shown."""

    text: str  # as written in the spec
    name: str  # display name: tables, cell ids
    kind: str  # "builtin", "entry-point", "module" or "file"
    target: str = ""  # the module path or file path of a reference
    attr: str = ""  # the (dotted) attribute of a reference

    @property
    def builtin(self) -> bool:
        return self.kind == "builtin"


@lru_cache(maxsize=None)
def entry_points() -> dict[str, Any]:
    """The models installed packages declare in the ``mnistbench.models`` entry-point group, by name (nothing imported)."""
    from importlib.metadata import entry_points as installed

    return {ep.name: ep for ep in installed(group=ENTRY_POINT_GROUP)}


def is_builtin(name: object) -> bool:
    """A model of the zoo, or one registered at run time (``register_model``)."""
    return name in BUILTIN_MODELS or name in MODELS


def list_models() -> list[str]:
    """Every model a spec may name without a reference: the built-in ones, then those of installed entry points."""
    builtin = list(dict.fromkeys([*BUILTIN_MODELS, *MODELS.names()]))
    return builtin + [n for n in entry_points() if n not in builtin]


def unknown_model_message(text: object) -> str:
    return (f"unknown model {brief(text)} (known: {', '.join(list_models())}; or a reference such as "
            "my_pkg.nets:SmallCNN or ./nets.py:build)")


def parse_model_ref(text: str) -> ModelRef:
    """The parts of a model reference, from its text alone; ValueError says in one line what is wrong."""
    if is_builtin(text):
        return ModelRef(text, text, "builtin")
    name, sep, body = text.partition("=")
    if not sep or not name or "/" in name or ":" in name:
        name, body = "", text
    if ":" not in body:
        if name:
            raise ValueError(f"model {brief(text)}: a display name goes with an import path or a file, e.g. small=./nets.py:build")
        if text in entry_points():
            return ModelRef(text, text, "entry-point")
        raise ValueError(unknown_model_message(text))
    target, _, attr = body.rpartition(":")
    if not _DOTTED.fullmatch(attr):
        raise ValueError(f"model {brief(text)}: {brief(attr)} is not an attribute name (expected module:attr or ./file.py:attr)")
    if target.endswith(".py"):
        kind = "file"
    elif _DOTTED.fullmatch(target):
        kind = "module"
    else:
        raise ValueError(f"model {brief(text)}: {brief(target)} is neither a dotted module path nor a .py file")
    display = name or attr.rsplit(".", 1)[-1]
    if not _NAME.fullmatch(display):
        raise ValueError(f"model {brief(text)}: display name {brief(display)} must be 1-64 letters, digits, '.', '_' or '-'")
    if is_builtin(display) or display in entry_points():
        raise ValueError(f"model {brief(text)} would be shown as {brief(display)}, which names another model: "
                         f"give it its own, e.g. my-{display}={body}")
    return ModelRef(text, display, kind, target, attr)


def display_name(text: str) -> str:
    """How a model is shown in tables and cell ids: its name, or a reference's display name."""
    try:
        return parse_model_ref(text).name
    except ValueError:
        return text
