"""The layers import only downwards: the domain needs nothing but the stdlib, the store adapters
know no caller, the gateway reaches storage through ports only, and the live package has no
import cycle (its transports see the gateway through host.py's Protocol)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

import tally
from imports import absolute_imports, third_party

SRC = Path(tally.__file__).parent
LIVE = "tally.gateway.live"
LIVE_GATEWAY = f"{LIVE}.gateway"
LIVE_TRANSPORTS = ("websocket", "asgi_socket", "uvicorn_ws", "sse", "endpoints")

STORE_MUST_NOT_IMPORT = (
    "tally.gateway",
    "tally.ledger",
    "tally.audit",
    "tally.archive",
    "tally.service",
)
GATEWAY_MUST_NOT_IMPORT = ("tally.store", "tally.archive", "tally.wiring")


def within(name: str, packages: Iterable[str]) -> bool:
    """Whether module `name` is one of `packages` or inside one."""
    return any(name == package or name.startswith(package + ".") for package in packages)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(package: str) -> list[object]:
    """One parameter per module of `package` (a path under src/tally), id'd by its path."""
    params: list[object] = []
    for path in sorted((SRC / package).rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        params.append(pytest.param(path, id=relative))
    return params


@pytest.mark.parametrize("path", sources("domain"))
def test_the_domain_imports_only_the_stdlib_and_itself(path: Path) -> None:
    """No Valkey, no web, no asyncio driver, no other Tally layer: the rules stay pure."""
    for name in absolute_imports(path):
        assert not third_party(name) or within(name, ["tally.domain"]), f"imports {name}"


@pytest.mark.parametrize("path", sources("store"))
def test_the_store_never_imports_its_callers(path: Path) -> None:
    """Adapters speak the domain: no gateway, ledger, audit, archive or service code."""
    for name in absolute_imports(path):
        assert not within(name, STORE_MUST_NOT_IMPORT), f"imports {name}"


@pytest.mark.parametrize("path", sources("gateway"))
def test_the_gateway_never_imports_concrete_storage_or_the_wiring(path: Path) -> None:
    """The gateway is handed its ports; only the composition root knows the concrete classes."""
    for name in absolute_imports(path):
        assert not within(name, GATEWAY_MUST_NOT_IMPORT), f"imports {name}"


def live_graph() -> dict[str, set[str]]:
    """Module -> the modules of the live package it imports (TYPE_CHECKING blocks included)."""
    paths = sorted((SRC / "gateway" / "live").glob("*.py"))
    modules = {module_name(path): path for path in paths}
    return {
        module: {name for name in absolute_imports(path) if within(name, [LIVE])}
        for module, path in modules.items()
    }


def test_live_modules_import_modules_not_the_package() -> None:
    """`from tally.gateway.live import x` would hide an edge from the cycle check below."""
    for module, imported in live_graph().items():
        assert LIVE not in imported, f"{module} imports the package {LIVE}"


def test_no_live_transport_imports_the_gateway_module() -> None:
    """Transports depend on host.LiveHost only; the gateway is built first and handed to them."""
    importers = {module for module, imported in live_graph().items() if LIVE_GATEWAY in imported}
    assert importers == set()


def test_the_live_gateway_imports_no_transport() -> None:
    """The composition root, not the gateway, builds the transports (endpoints.py)."""
    transports = {f"{LIVE}.{name}" for name in LIVE_TRANSPORTS}
    assert live_graph()[LIVE_GATEWAY] & transports == set()


def test_the_live_package_has_no_import_cycle() -> None:
    """A depth-first walk of the module-level import graph meets no module twice on one path."""
    graph = live_graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, "import cycle: " + " -> ".join([*path, module])
        if module in done:
            return
        for imported in sorted(graph.get(module, set())):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
