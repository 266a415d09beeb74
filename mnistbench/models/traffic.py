"""Bytes a model moves per sample, counted per layer from its structure: the memory side of the roofline.

The counting rule (float32, E = 4 bytes an element; per sample at batch size B; for each layer
that computes something, x and y are its input and output elements per sample and P its parameters):

- **forward** (training and inference): the layer reads x and writes y, E·(x + y), and reads its
  parameters once per batch, E·P/B;
- **backward** (training): the layer reads the output's gradient (y) and the tensor its gradient
  needs (counted at the input's size, x) and writes the input's gradient (x), E·(y + 2x); the first
  layer writes no input gradient (the images need none), E·(y + x); a layer with parameters reads
  them again and writes their gradients once per batch, E·2P/B;
- **optimizer step** (training, once per batch): reads the parameters and their gradients and
  writes the parameters, E·3P/B, and reads and writes each state buffer, E·2sP/B, with s = 0 for
  SGD without momentum, 1 with it, 2 for Adam, AdamW and Adadelta.

So a training sample moves E·[Σ(3x + 2y) − x₁ + (6 + 2s)·P/B] bytes and an inference sample
E·[Σ(x + y) + P/B]. Layers are the leaf modules a forward pass calls (evaluation mode); one whose
output is a view of its input (flatten, dropout at evaluation) moves nothing. Not counted: the loss
(10 logits), functional operations outside a leaf module, the data batch's gather, and reuse in
caches: every layer's tensors are counted as going through memory once, so the figure is the
traffic without reuse between layers, the one the memory roof prices. A bf16 run is counted at float32.
"""

from __future__ import annotations

from dataclasses import dataclass

ELEMENT_BYTES = 4  # float32
# Optimizer state buffers per parameter, read and written every step.
# Muon keeps one momentum buffer per weight matrix (its biases take two, Adam's: a rounding error of the count).
_STATE_BUFFERS = {"sgd": 1, "adam": 2, "adamw": 2, "adadelta": 2, "muon": 1}


@dataclass(frozen=True)
class LayerShape:
    """One layer's elements per sample: ``inputs`` read and ``outputs`` written; its ``parameters``."""

    layer: str
    kind: str
    inputs: int
    outputs: int
    parameters: int


@dataclass(frozen=True)
class Traffic:
    """Per-sample element counts of a model's activations (batch-independent), and its parameters."""

    forward_elements: int  # Σ(x + y)
    backward_elements: int  # Σ(y + 2x) − x₁
    parameters: int

    @classmethod
    def of_layers(cls, layers: list[LayerShape]) -> "Traffic":
        first = layers[0].inputs if layers else 0
        return cls(sum(s.inputs + s.outputs for s in layers), sum(s.outputs + 2 * s.inputs for s in layers) - first,
                   sum(s.parameters for s in layers))

    def to_dict(self) -> dict:
        return {"forward_elements": self.forward_elements, "backward_elements": self.backward_elements,
                "parameters": self.parameters}


def state_buffers(optimizer: str, momentum: float = 0.0) -> int:
    """State buffers per parameter of ``optimizer`` (SGD keeps one only with momentum)."""
    if optimizer == "sgd":
        return 1 if momentum else 0
    return _STATE_BUFFERS[optimizer]


def train_bytes_per_sample(t: Traffic, batch_size: int, buffers: int) -> float:
    """Bytes one training sample moves at ``batch_size`` with ``buffers`` optimizer state buffers per parameter."""
    return ELEMENT_BYTES * (t.forward_elements + t.backward_elements + (6 + 2 * buffers) * t.parameters / batch_size)


def eval_bytes_per_sample(t: Traffic, batch_size: int) -> float:
    """Bytes one inference sample moves at ``batch_size``."""
    return ELEMENT_BYTES * (t.forward_elements + t.parameters / batch_size)


def leaf_calls(model, x) -> list[tuple]:
    """(name, module, input tensors, output) of every call of a leaf module in a forward pass of ``x`` (no gradient),
    in call order; calls whose output is a view of an input (flatten, dropout at evaluation) are left out."""
    import torch

    calls: list[tuple] = []

    def hook(module, args, out, name: str = "") -> None:
        ins = [a for a in args if isinstance(a, torch.Tensor)]
        if isinstance(out, torch.Tensor) and not any(shares_storage(a, out) for a in ins):
            calls.append((name, module, ins, out))

    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(lambda mod, a, o, n=n: hook(mod, a, o, n)) for n, m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def layer_shapes(model, input_shape: tuple[int, ...]) -> list[LayerShape]:
    """Every leaf module a forward pass of one ``input_shape`` sample calls, in call order, with its element counts;
    views of their input are left out (they move nothing)."""
    import torch

    was_training = model.training
    try:
        model.eval()
        calls = leaf_calls(model, torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
    return [LayerShape(name, type(module).__name__, sum(a.numel() for a in ins), out.numel(),
                       sum(p.numel() for p in module.parameters(recurse=False))) for name, module, ins, out in calls]


def shares_storage(a, b) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def layer_pass_bytes(s: LayerShape, batch_size: int, first: bool) -> tuple[int, int]:
    """Bytes one layer's forward and backward move over a whole batch of ``batch_size`` (the rule above, per layer;
    ``first``: the model's first layer, which writes no input gradient)."""
    forward = ELEMENT_BYTES * ((s.inputs + s.outputs) * batch_size + s.parameters)
    backward = ELEMENT_BYTES * ((s.outputs + (1 if first else 2) * s.inputs) * batch_size + 2 * s.parameters)
    return forward, backward


def model_traffic(model, input_shape: tuple[int, ...]) -> Traffic:
    """The per-sample traffic counts of ``model`` (see the module's counting rule)."""
    return Traffic.of_layers(layer_shapes(model, input_shape))
