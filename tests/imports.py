"""What a source file imports, for tests that keep a package free of unwanted dependencies."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path


def absolute_imports(path: Path) -> Iterator[str]:
    """Every module a file imports by absolute name (`import a.b`, `from a.b import c`)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def third_party(name: str) -> bool:
    """Not the standard library (nor `__future__`)."""
    top = name.partition(".")[0]
    return top not in sys.stdlib_module_names and top != "__future__"
