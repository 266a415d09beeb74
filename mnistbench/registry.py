"""A tiny name -> factory registry, shared by models and datasets (after timm's ``register_model``)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Generic, Iterator, TypeVar

from .errors import MnistbenchError, brief

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    description: str
    factory: Callable[..., T]
    meta: dict = field(default_factory=dict)  # facts about the entry, e.g. a model's published test error


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str, **meta) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@models.register("lenet5", "...")`` over a factory function."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, description, factory, dict(meta))
            return factory

        return decorate

    @contextmanager
    def registered(self, name: str, description: str, factory: Callable[..., T], **meta) -> Iterator[str]:
        """``factory`` registered as ``name`` for the block only (a test's model): afterwards the registry is as before."""
        self.register(name, description, **meta)(factory)
        try:
            yield name
        finally:
            del self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise MnistbenchError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        return f"unknown {self.kind} {brief(name)} (known: {', '.join(self.names())})"

    def __contains__(self, name: object) -> bool:
        return name in self._entries
