"""Describing a model as plain data: parameters, FLOPs, layers and bytes moved (the one owner of those counts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .zoo import INPUT_SHAPE


def describe(source, model) -> dict:
    """A loaded model (``factory.checked_model``'s pair) as a run record stores it: display name, parameter count,
    counted FLOPs per sample, per-sample traffic counts (``traffic``) and provenance; a model whose FLOPs cannot be counted is one line naming it."""
    from .factory import guarded
    from .traffic import model_traffic

    flops = guarded(source.ref, "counting FLOPs", lambda: (forward_flops(model), train_flops(model)))
    traffic = guarded(source.ref, "counting the bytes it moves", model_traffic, model, INPUT_SHAPE)
    return {"name": source.ref.name, "parameters": count_params(model), "forward_flops": flops[0], "train_flops": flops[1],
            "traffic": traffic.to_dict(), **source.provenance()}


def describe_models(detail: bool = False, refs: list[str] | None = None, base_dir: str | Path = "") -> dict:
    """Every known model (registry, entry points) and each of ``refs``: name, parameters, forward FLOPs per sample,
    description; with ``detail``, also its layers (weights, biases, parameters each). A bad reference is one line."""
    from .factory import checked_model
    from .names import list_models

    models = []
    for name in list_models() + list(refs or []):
        source, m = checked_model(name, base_dir)
        counted = describe(source, m)  # the same counts a run record stores
        entry = {
            "name": counted["name"],
            "parameters": counted["parameters"],
            "forward_flops": counted["forward_flops"],
            "description": model_description(source),
        }
        if detail:
            entry["layers"] = [{**asdict(layer), "parameters": layer.total} for layer in layer_params(m)]
        models.append(entry)
    return {"models": models}


def model_description(source) -> str:
    """A built-in model's registered description; for others, the factory's first docstring line and where it came from."""
    from .zoo import MODELS

    if source.ref.builtin:
        return MODELS.get(source.ref.name).description
    doc = (getattr(source.factory, "__doc__", None) or "").strip().splitlines()
    where = source.package or source.ref.text
    return f"{doc[0] + ' ' if doc else ''}({where}; {source.file} sha256 {source.sha256[:12]}…)"


@dataclass(frozen=True)
class LayerParams:
    layer: str
    kind: str
    weights: int
    biases: int

    @property
    def total(self) -> int:
        return self.weights + self.biases


def layer_params(model) -> list[LayerParams]:
    """Weights and biases of every module that owns parameters, in forward order."""
    rows = []
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        weights = sum(p.numel() for n, p in own.items() if n != "bias")
        biases = own["bias"].numel() if "bias" in own else 0
        rows.append(LayerParams(name, type(module).__name__, weights, biases))
    return rows


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model, batch: int = 1) -> int:
    """Forward FLOPs per sample, counted by ``torch.utils.flop_counter`` (a multiply-add is 2 FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, *INPUT_SHAPE)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // batch


def train_flops(model, batch: int = 2) -> int:
    """Forward + backward FLOPs per training sample, counted by ``torch.utils.flop_counter``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, *INPUT_SHAPE)
    y = torch.zeros(batch, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() // batch
