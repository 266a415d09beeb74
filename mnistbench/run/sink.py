"""The Ray actor that carries the progress events of a run's tasks to its driver (``executors.py``).

It imports nothing that needs torch, so its worker process starts in a moment: events arrive
pickled and leave pickled; only their kind and cell index are read here.
"""

from __future__ import annotations


class EventSink:
    """Events held until the driver drains them, in arrival order; a cell that starts twice is noted as a retry."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, object]] = []
        self.starts: dict[int, int] = {}

    def put(self, kind: str, index: int, event: bytes) -> None:
        if kind == "cell":
            self.starts[index] = self.starts.get(index, 0) + 1
            if self.starts[index] > 1:  # its worker or node was lost, and Ray runs it again
                self.events.append(("retry", index, self.starts[index]))
        self.events.append(("event", index, event))

    def drain(self) -> list[tuple[str, int, object]]:
        out, self.events = self.events, []
        return out
