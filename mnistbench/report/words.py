"""Numbers in sentences and rows in tables: ``1 cell``, ``2 cells``, GitHub markdown tables (a leaf module anyone may use)."""

from __future__ import annotations

from tabulate import tabulate


def counted(n: int, noun: str, plural: str = "") -> str:
    """``n`` and the noun, singular for exactly one: ``counted(1, "epoch")`` is ``1 epoch``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def table(rows: list[list], headers: list[str]) -> str:
    """A GitHub markdown table of cells as given: text that looks like a number is not reformatted."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
