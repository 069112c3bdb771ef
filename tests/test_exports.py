"""Every module declares ``__all__``; the packages re-export what users need."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import rapidws

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(rapidws.__path__, "rapidws.")
    if not name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    for attribute in module.__all__:
        assert hasattr(module, attribute), f"{name}.__all__ names missing {attribute}"


@pytest.mark.parametrize(
    ("package", "modules"),
    [
        ("rapidws.asyncio", ["client", "connection", "reconnect", "server"]),
        (
            "rapidws.app",
            ["application", "endpoint", "hooks", "limits", "proxies", "routing", "static"],
        ),
        ("rapidws.asgi", ["protocol"]),
        ("rapidws.sync", ["client", "connection", "events"]),
        ("rapidws.pubsub", ["broker", "hub"]),
        ("rapidws.core.extensions", ["base", "permessage_deflate"]),
        ("rapidws", ["exceptions", "version"]),
    ],
)
def test_package_reexports_its_modules(package: str, modules: list[str]) -> None:
    exported = set(importlib.import_module(package).__all__)
    for module in modules:
        names = set(importlib.import_module(f"{package}.{module}").__all__)
        assert names <= exported, f"{package} misses {sorted(names - exported)}"


def test_top_level_api() -> None:
    for name in ["serve", "connect", "App", "Endpoint", "Response", "Request", "ConnectionClosed"]:
        assert name in rapidws.__all__
        assert getattr(rapidws, name) is not None
