"""Which cells of a spec one invocation runs: all, shard ``I`` of ``N``, or named cells.

Shards let a scheduler without Ray (a Slurm job array, a Kubernetes Indexed Job) run one
spec as N independent jobs into one results folder; ``mnistbench report`` (or the last
shard to finish) merges them. The split depends on the spec alone, so every machine that
reads the spec computes the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import MnistbenchError
from .schema import Cell


@dataclass(frozen=True)
class Selection:
    """Which cells of a spec one invocation runs: all of them, shard ``I`` of ``N`` (every N-th cell), or named cells."""

    shard: Optional[tuple[int, int]] = None
    cells: tuple[str, ...] = ()

    def pick(self, cells: list[Cell]) -> list[int]:
        """Positions (0-based, spec order) of the selected cells; the same for every machine that reads the spec."""
        if self.shard:
            i, n = self.shard
            return [k for k in range(len(cells)) if k % n == i - 1]
        if self.cells:
            ids = [c.id for c in cells]
            unknown = [c for c in self.cells if c not in ids]
            if unknown:
                known = ", ".join(ids[:8]) + (f", ... ({len(ids)} cells; see --dry-run)" if len(ids) > 8 else "")
                raise MnistbenchError(f"--cell {unknown[0]}: no such cell in this spec (cells: {known})")
            return [k for k, c in enumerate(ids) if c in self.cells]
        return list(range(len(cells)))

    @property
    def label(self) -> str:
        return f"shard-{self.shard[0]}-of-{self.shard[1]}" if self.shard else ""

    @classmethod
    def parse(cls, shard: Optional[str], cells: list[str]) -> "Selection":
        """``--shard I/N`` (1 <= I <= N) or ``--cell ID`` (repeatable), checked."""
        if shard is not None and cells:
            raise MnistbenchError("--shard and --cell select cells two ways: give one of them")
        if shard is None:
            return cls(cells=tuple(dict.fromkeys(cells)))
        i, sep, n = shard.partition("/")
        if not (sep and i.isdigit() and n.isdigit()) or not 1 <= int(i) <= int(n):
            raise MnistbenchError(f"--shard {shard}: expected I/N with 1 <= I <= N, e.g. --shard 2/8")
        return cls(shard=(int(i), int(n)))
