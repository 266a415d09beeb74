"""Numbers in sentences: ``1 cell``, ``2 cells`` (a leaf module anyone may use)."""


def counted(n: int, noun: str, plural: str = "") -> str:
    """``n`` and the noun, singular for exactly one: ``counted(1, "epoch")`` is ``1 epoch``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
