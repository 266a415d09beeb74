"""Spec files are read within fixed bounds, so no file can make ``load_spec`` hang, exhaust memory or crash.

The limits (docs/robustness.md):

* ``MAX_SPEC_BYTES``: a spec file is at most 1 MiB; only that much is ever read.
* ``MAX_DEPTH``: values nest at most 50 levels deep, counting what aliases bring in.
* ``MAX_NODES``: the document holds at most 10,000 values once every alias is expanded
  (a "billion laughs" spec stops here, before anything is built from it).
* A key given twice in one mapping is an error (YAML would silently keep the last one);
  so is an alias that refers to a value containing itself.

Built on PyYAML's ``SafeLoader`` (no arbitrary objects), with ``1e-3`` read as a number.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import MnistbenchError

MAX_SPEC_BYTES = 1 << 20
MAX_DEPTH = 50
MAX_NODES = 10_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class LimitError(Exception):
    """A spec document breaks one of the bounds above; the message names where."""


def _path_text(segments: list[str]) -> str:
    """A key path such as ``matrix.seed[2]``, shortened in the middle past 100 characters."""
    text = "".join(segments).lstrip(".") or "spec"
    return text if len(text) <= 100 else text[:48] + "…" + text[-48:]


class BoundedLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses deep nesting and too many values while it composes the document."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._segments: list[str] = []
        self._composed = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            return super().compose_node(parent, index)
        self._segments.append(_segment(index) if parent is not None else "")
        try:
            self._composed += 1
            if len(self._segments) > MAX_DEPTH:
                raise LimitError(f"{_path_text(self._segments)}: nested deeper than {MAX_DEPTH} levels (the limit for a spec)")
            if self._composed > MAX_NODES:
                raise LimitError(f"{_path_text(self._segments)}: more than {MAX_NODES} values (the limit for a spec)")
            return super().compose_node(parent, index)
        finally:
            self._segments.pop()


BoundedLoader.add_implicit_resolver(  # YAML 1.1 reads ``1e-3`` as a string; a spec author means the number
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _segment(index: Any) -> str:
    """The path segment of a child: ``[i]`` in a sequence, ``.key`` in a mapping, ``.?`` for a key itself."""
    if isinstance(index, int):
        return f"[{index}]"
    if isinstance(index, ScalarNode):
        return f".{index.value[:40]}"
    return ".?"


def check_expansion(root: Node) -> None:
    """Refuse a composed document whose aliases expand past the bounds, loop, or that repeats a key."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values once expanded, levels below it)
    _measure(root, [], sizes, set())


def _measure(node: Node, segments: list[str], sizes: dict[int, tuple[int, int]], active: set[int]) -> tuple[int, int]:
    """(values, height) of ``node`` with aliases expanded; each distinct node is measured once."""
    key = id(node)
    if key in active:
        raise LimitError(f"{_path_text(segments)}: an alias refers to a value that contains it")
    if key not in sizes:
        active.add(key)
        size, height = 1, 0
        for segment, child in _children(node, segments):
            child_size, child_height = _measure(child, segments + [segment], sizes, active)
            size, height = size + child_size, max(height, child_height + 1)
            if size > MAX_NODES:
                raise LimitError(f"{_path_text(segments)}: aliases expand to more than {MAX_NODES} values (the limit for a spec)")
        active.discard(key)
        sizes[key] = (size, height)
    size, height = sizes[key]
    if len(segments) + 1 + height > MAX_DEPTH:
        raise LimitError(f"{_path_text(segments)}: aliases nest deeper than {MAX_DEPTH} levels (the limit for a spec)")
    return size, height


def _children(node: Node, segments: list[str]) -> list[tuple[str, Node]]:
    if isinstance(node, SequenceNode):
        return [(f"[{i}]", child) for i, child in enumerate(node.value)]
    if not isinstance(node, MappingNode):
        return []
    seen: dict[tuple[str, str], int] = {}
    out: list[tuple[str, Node]] = []
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.tag != MERGE_TAG:
            ident = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if ident in seen:
                where = _path_text(segments + [f".{key_node.value[:40]}"])
                raise LimitError(f"{where}: duplicate key (lines {seen[ident]} and {line}); give each key once")
            seen[ident] = line
        segment = f".{key_node.value[:40]}" if isinstance(key_node, ScalarNode) else ".?"
        out += [(".?", key_node), (segment, value_node)]
    return out


def load_bounded(text: str, where: str) -> Any:
    """Parse one YAML document within the bounds; every problem is a ``MnistbenchError`` of one line."""
    if len(text) > MAX_SPEC_BYTES:
        raise MnistbenchError(f"{where}: larger than {MAX_SPEC_BYTES} bytes (the limit for a spec)")
    loader = None
    try:
        loader = BoundedLoader(text)  # checks the characters first: a control character is a ReaderError here
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node)
        return _construct(loader, node, where)
    except LimitError as e:
        raise MnistbenchError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise MnistbenchError(f"{where}: {_yaml_problem(e)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _construct(loader: BoundedLoader, node: Node, where: str) -> Any:
    """Python values from a checked node graph; PyYAML's own failures on odd values become one line."""
    try:
        return loader.construct_document(node)
    except yaml.YAMLError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. a date 2001-13-45 (ValueError), a 5,000-digit integer, "!!timestamp" alone
        text = " ".join(str(e).split()) or type(e).__name__
        raise MnistbenchError(f"{where}: a value YAML cannot read: {text[:150]}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    """``YAML syntax error at line L, column C: problem``, the problem quoted briefly."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}:" if mark else ":"
    return f"YAML syntax error{where} {problem[:200]}"
