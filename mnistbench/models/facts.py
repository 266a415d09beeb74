"""What the report needs to know about the built-in models, without torch: their order and the 1998 paper's errors.

The zoo (zoo.py) registers the models in ``BUILTIN_MODELS``'s order (tests/test_models.py holds it to it); the report
(report/groups.py) orders its groups and shows the reference errors from here, so it imports no torch.
"""

from __future__ import annotations

from .names import BUILTIN_MODELS  # the zoo's models, in the order they are registered: report groups follow it

# MNIST test error (%) reported by LeCun, Bottou, Bengio & Haffner (1998), "Gradient-Based Learning Applied to
# Document Recognition", for the models with a counterpart there: (without, with) distorted copies of the
# training images added.
PAPER_TEST_ERROR_PCT = {"lenet5": (0.95, 0.8), "custom-mlp": (2.95, 2.45)}


def paper_test_error_pct(name: str, distorted: bool = False) -> float | None:
    """The 1998 paper's test error for the model's counterpart there (trained with distortions, or without), if any."""
    figures = PAPER_TEST_ERROR_PCT.get(name)
    return None if figures is None else figures[distorted]


def builtin_rank(name: str) -> int:
    """Where a model comes in the zoo's order; any other model (by reference) after them all."""
    return BUILTIN_MODELS.index(name) if name in BUILTIN_MODELS else len(BUILTIN_MODELS)
