"""What the runner tells its front end (a progress bar or plain lines): plain data, no torch, so a front end stays light."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..spec.schema import Cell


@dataclass
class Event:
    """One thing that happened in a run, for the progress bar or the plain lines."""

    kind: str  # "start", "skip", "cell", "epoch", "done", "warning", "report"; "status" (counts, from a parallel executor)
    cell: Optional[Cell] = None
    index: int = 0
    total: int = 0
    epoch: int = 0
    epochs: int = 0
    message: str = ""
    todo: tuple = ()  # "start": the cells (Cell) this run will train, for the progress's time estimate


OnEvent = Callable[[Event], None]
