"""The package's shape, checked rather than promised: a short top level, small functions, no import cycle.

The layers themselves (which stage may import which, and where torch and Ray may appear) are import-linter
contracts in pyproject.toml, run by `make test` (`lint-imports`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parent.parent / "mnistbench"
MAX_FUNCTION_LINES = 60
STAGES = {"spec", "data", "models", "train", "run", "report", "infer", "robust"}


def test_the_top_level_holds_at_most_eight_modules_and_one_subpackage_per_stage():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in {"__init__", "__main__"})
    assert len(modules) <= 8, modules
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == STAGES, subpackages ^ STAGES
    assert not [p for p in PACKAGE.glob("*/*/*.py") if p.parent.name != "site"]  # one level deep (report/site: the page)


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def _cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle among the modules, or [] (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(m: str) -> list[str]:
        colour[m] = "grey"
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if colour.get(n) == "grey":
                return stack[stack.index(n):] + [n]
            if n not in colour and (found := visit(n)):
                return found
        colour[m] = "black"
        stack.pop()
        return []

    for m in sorted(edges):
        if m not in colour and (found := visit(m)):
            return found
    return []


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("mnistbench")
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert _cycle(edges) == []
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the search finds one when there is one
