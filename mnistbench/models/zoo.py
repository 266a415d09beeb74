"""The model zoo. Adding a model is one decorated function returning an ``nn.Module``; ``factory.create_model`` builds it.

Every model takes a batch of 1x28x28 images and returns 10 logits.
Layers are named so the per-layer parameter table reads like the paper's figure.
"""

from __future__ import annotations

from collections import OrderedDict

# The registry lives in names.py, which the spec stage reads without importing this module (or torch): a model
# added here is named in names.BUILTIN_MODELS too.
from .names import MODELS, register_model  # noqa: F401 - MODELS re-exported: importing the zoo fills it

INPUT_SHAPE = (1, 28, 28)


def _mlp(*widths: int):
    from torch import nn

    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    pairs = list(zip(widths[:-1], widths[1:]))
    for i, (n_in, n_out) in enumerate(pairs, start=1):
        layers.append((f"fc{i}", nn.Linear(n_in, n_out)))
        if i < len(pairs):
            layers.append((f"relu{i}", nn.ReLU()))
    return nn.Sequential(OrderedDict(layers))


@register_model("lenet5", "LeNet-5 on 28x28: conv6@5x5-pool-conv16@5x5-pool-FC120-FC84-FC10, ReLU, max-pool")
def lenet5():
    from torch import nn

    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 6, kernel_size=5)),  # 28 -> 24
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),  # 24 -> 12
                ("conv2", nn.Conv2d(6, 16, kernel_size=5)),  # 12 -> 8
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),  # 8 -> 4
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(16 * 4 * 4, 120)),
                ("relu3", nn.ReLU()),
                ("fc2", nn.Linear(120, 84)),
                ("relu4", nn.ReLU()),
                ("fc3", nn.Linear(84, 10)),
            ]
        )
    )


@register_model("custom-mlp", "The founding document's 'comparable' MLP: 784-500-150-10, ReLU (10x LeNet-5's parameters)")
def custom_mlp():
    return _mlp(784, 500, 150, 10)


@register_model("mlp-matched", "MLP with LeNet-5's parameter budget: 784-54-30-10, ReLU (44,350 parameters, -0.2%)")
def mlp_matched():
    return _mlp(784, 54, 30, 10)


@register_model("examples-net", "pytorch/examples' MNIST network: conv32@3x3-conv64@3x3-pool-dropout-FC128-dropout-FC10, "
                "ReLU, log-softmax (1,199,882 parameters)")
def examples_net():
    """The ``Net`` of pytorch/examples mnist/main.py, layer for layer (its forward ends in log_softmax, which the
    training loss's own log-softmax leaves unchanged: log_softmax is idempotent)."""
    from torch import nn

    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 32, kernel_size=3)),  # 28 -> 26
                ("relu1", nn.ReLU()),
                ("conv2", nn.Conv2d(32, 64, kernel_size=3)),  # 26 -> 24
                ("relu2", nn.ReLU()),
                ("pool", nn.MaxPool2d(2)),  # 24 -> 12
                ("dropout1", nn.Dropout(0.25)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(64 * 12 * 12, 128)),  # 9216 -> 128
                ("relu3", nn.ReLU()),
                ("dropout2", nn.Dropout(0.5)),
                ("fc2", nn.Linear(128, 10)),
                ("log_softmax", nn.LogSoftmax(dim=1)),
            ]
        )
    )


