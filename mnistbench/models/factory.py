"""The one model factory: a built-in name, an import path, a file path or an entry point to a checked ``nn.Module``.

What a spec's ``model:`` may say is parsed, without importing anything, by ``names.parse_model_ref`` (docs/models.md).
The attribute a reference names is a factory: called with no arguments it returns an ``nn.Module`` that maps
N x 1 x 28 x 28 images to N x 10 logits. Loading a reference imports the code and hashes the file that defines
the factory.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import MnistbenchError, brief, reason
from .names import ModelRef, entry_points, parse_model_ref
from .zoo import INPUT_SHAPE, MODELS

NUM_LOGITS = 10


@dataclass(frozen=True)
class ModelSource:
    """A loaded model reference: its factory and the code it came from."""

    ref: ModelRef
    factory: Callable[[], Any]
    file: str = ""  # name of the file that defines the factory
    sha256: Optional[str] = None  # of that file; None for built-in models
    package: str = ""  # "distribution version" of an entry point

    def provenance(self) -> dict:
        """What a run record stores to trace the model to its code (nothing for a built-in model)."""
        if self.ref.builtin:
            return {}
        out = {"reference": self.ref.text, "file": self.file, "sha256": self.sha256}
        return {**out, "package": self.package} if self.package else out


def _fail(ref: ModelRef | str, what: str) -> MnistbenchError:
    text = ref.text if isinstance(ref, ModelRef) else ref
    what = what if len(what) <= 300 else what[:299] + "…"  # paths and module names come from the spec: bounded
    return MnistbenchError(f"model {brief(text)}: {what}")


def load_model_source(text: str, base_dir: str | Path = "") -> ModelSource:
    """Import the factory a reference names (files relative to ``base_dir``); every failure is one line naming it."""
    try:
        ref = parse_model_ref(text)
    except ValueError as e:
        raise MnistbenchError(str(e)) from None
    if ref.builtin:
        return ModelSource(ref, MODELS.get(ref.name).factory)
    package = ""
    if ref.kind == "entry-point":
        ep = entry_points()[ref.name]
        obj, module = guarded(ref, f"loading entry point {ep.value}", ep.load), None
        package = f"{ep.dist.name} {ep.dist.version}" if getattr(ep, "dist", None) else ""
    else:
        if ref.kind == "file":
            module = _import_file(ref, Path(base_dir or ".") / ref.target)
        else:
            module = guarded(ref, f"importing {ref.target}", importlib.import_module, ref.target)
        obj = _attribute(ref, module)
    _check_factory(ref, obj)
    file = _defining_file(obj, module)
    if file is None:
        raise _fail(ref, f"cannot tell which file defines {type(obj).__name__} {getattr(obj, '__qualname__', obj)!r}")
    try:
        sha256 = hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError as e:
        raise _fail(ref, f"cannot read {file.name}: {e.strerror}") from None
    return ModelSource(ref, obj, file.name, sha256, package)


def guarded(ref: ModelRef, doing: str, call: Callable, *args):
    """``call(*args)``, user code: whatever it raises becomes one line naming the reference and what was being done."""
    try:
        return call(*args)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - user code: whatever it raises is one line
        hint = " (is it installed, or on PYTHONPATH?)" if isinstance(e, ModuleNotFoundError) else ""
        raise _fail(ref, f"{doing} raised {reason(e)}{hint}") from None


def _import_file(ref: ModelRef, path: Path) -> types.ModuleType:
    """The module of a Python file, executed from the bytes that were hashed; one module per file content."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise _fail(ref, f"file not found: {path}") from None
    except OSError as e:
        raise _fail(ref, f"cannot read {path}: {e.strerror}") from None
    name = f"_mnistbench_model_{path.stem}_{hashlib.sha256(blob).hexdigest()[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses, pickling and torch.compile look classes up here
    sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
    try:
        exec(compile(blob, str(path), "exec"), module.__dict__)  # noqa: S102 - the user's own model file
    except (Exception, SystemExit) as e:  # noqa: BLE001
        del sys.modules[name]
        raise _fail(ref, f"importing {path.name} raised {reason(e)}") from None
    finally:
        if str(path.parent) in sys.path:  # the file's own code may have removed it already
            sys.path.remove(str(path.parent))
    return module


def _attribute(ref: ModelRef, module: types.ModuleType):
    obj: Any = module
    for part in ref.attr.split("."):
        if not hasattr(obj, part):
            where = ref.target if obj is module else f"{ref.target}:{ref.attr.rsplit('.', 1)[0]}"
            close = difflib.get_close_matches(part, [n for n in dir(obj) if not n.startswith("_")], n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise _fail(ref, f"{where} has no attribute {brief(part)}{hint}")
        obj = getattr(obj, part)
    return obj


def _check_factory(ref: ModelRef, obj) -> None:
    from torch import nn

    what = ref.attr or ref.name
    if isinstance(obj, nn.Module):
        raise _fail(ref, f"{what} is a model instance, not a factory: refer to its class or to a function that builds it")
    if not callable(obj):
        raise _fail(ref, f"{what} is a {type(obj).__name__}, not a class or function that builds a model")


def _defining_file(obj, module: Optional[types.ModuleType]) -> Optional[Path]:
    """The source file of the factory, else of the module it was found in."""
    import inspect

    for candidate in (obj, module):
        try:
            found = inspect.getsourcefile(candidate) if candidate is not None else None
        except TypeError:
            found = None
        if found and Path(found).is_file():
            return Path(found)
    return None


def build_model(source: ModelSource):
    """Call the factory; a factory that raises or returns no ``nn.Module`` is one line naming the reference."""
    from torch import nn

    model = guarded(source.ref, f"calling {source.ref.attr or source.ref.name}()", source.factory)
    if not isinstance(model, nn.Module):
        raise _fail(source.ref, f"{source.ref.attr or source.ref.name}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_logits(source: ModelSource, model) -> None:
    """A forward pass of one 1x28x28 image (eval mode, no gradients) must give (1, 10) logits, else one line says what came back."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = guarded(source.ref, "the forward pass of a 1x1x28x28 batch", model, torch.zeros(1, *INPUT_SHAPE))
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise MnistbenchError(f"model {brief(source.ref.text)} returned a {type(out).__name__}, expected a (1, {NUM_LOGITS}) tensor of logits")
    if tuple(out.shape) != (1, NUM_LOGITS):
        raise MnistbenchError(f"model {brief(source.ref.text)} returned shape {tuple(out.shape)}, expected (1, {NUM_LOGITS}) logits")


def load_unchanged(text: str, base_dir: str | Path = "", expected_sha256: Optional[str] = None) -> ModelSource:
    """The reference loaded; with ``expected_sha256`` (the hash the run was planned with), its file must still match."""
    source = load_model_source(text, base_dir)
    if expected_sha256 is not None and source.sha256 != expected_sha256:
        raise _fail(source.ref, f"{source.file} changed since the run was planned (sha256 {str(source.sha256)[:12]}…, "
                                f"planned {expected_sha256[:12]}…): run again")
    return source


def checked_model(text: str, base_dir: str | Path = "", expected_sha256: Optional[str] = None) -> tuple[ModelSource, Any]:
    """(source, model): the reference loaded (unchanged, see ``load_unchanged``) and built, and a referenced model's
    output checked to be 10 logits."""
    source = load_unchanged(text, base_dir, expected_sha256)
    model = build_model(source)
    if not source.ref.builtin:
        check_logits(source, model)
    return source, model


def create_model(text: str, base_dir: str | Path = "", expected_sha256: Optional[str] = None):
    """The model ``text`` names (a built-in name, an entry point, an import path or a file relative to
    ``base_dir``), built and, for a reference, checked to give 10 logits: the one way from a name to a model."""
    return checked_model(text, base_dir, expected_sha256)[1]
