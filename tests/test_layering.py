"""The layers of design.md, enforced: the core does no I/O and imports no upper layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "rapidws"

# What each layer may import from rapidws (beyond its own package).
ALLOWED = {
    "core": {"exceptions", "speedups", "version"},
    # The exceptions are a leaf: the twins raise the handshake's errors.
    "speedups": {"exceptions"},
    "asyncio": {"core", "exceptions", "speedups", "version"},
    "cli": {"app", "asyncio", "core", "exceptions", "logging", "metrics", "pubsub", "version"},
    "app": {"core", "asyncio", "exceptions", "pubsub", "version"},
    "asgi": {"asyncio", "core", "exceptions", "version"},
    "sync": {"asyncio", "core", "exceptions", "version"},
    "pubsub": {"asyncio", "core", "exceptions", "version"},
    # Above the servers: it reads their counts (asyncio), serves them on an App.
    "metrics": {"app", "asyncio", "core", "exceptions", "pubsub", "version"},
}
IO_MODULES = {"asyncio", "socket", "ssl", "selectors", "threading", "time", "logging"}


def imported_layers(path: Path) -> set[str]:
    """Return the top-level rapidws packages that the module at ``path`` imports."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(SRC).parts
    layers = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[: len(package) - node.level])
            target = base + (node.module.split(".") if node.module else [])
            if target:
                layers.add(target[0])
            elif node.module is None:
                layers.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rapidws."):
            layers.add(node.module.split(".")[1])
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_lower_layers(layer: str) -> None:
    for path in sorted((SRC / layer).rglob("*.py")):
        forbidden = imported_layers(path) - ALLOWED[layer] - {layer}
        assert not forbidden, f"{path.relative_to(SRC)} imports {sorted(forbidden)}"


@pytest.mark.parametrize("layer", ["core", "speedups"])
def test_sans_io_layer_imports_no_io_module(layer: str) -> None:
    for path in sorted((SRC / layer).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module.split(".")[0]]
            assert not IO_MODULES.intersection(names), f"{path.relative_to(SRC)} imports {names}"


def test_core_imports_with_io_modules_blocked() -> None:
    # In a fresh interpreter where importing asyncio, socket or ssl fails.
    code = (
        "import sys\n"
        "for name in ('asyncio', 'socket', 'ssl', 'selectors'):\n"
        "    sys.modules[name] = None\n"
        "import rapidws.core, rapidws.speedups\n"
        "p = rapidws.core.ServerProtocol()\n"
        "key = 'dGhlIHNhbXBsZSBub25jZQ=='\n"
        "assert rapidws.core.accept_key(key) == 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
