"""Test harness: every ``async def`` test runs once on asyncio's loop and once on uvloop.

No plugin is needed: coroutine tests are parametrized with a loop factory and
run in an :class:`asyncio.Runner`. On CI, uvloop is required (never skipped).

A test of timers marked ``@pytest.mark.virtual_clock`` runs instead on
:class:`tests.clock.VirtualClockLoop`, whose time moves only when the loop
would wait: its counts and intervals are exact however busy the machine is.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trustme

from tests.clock import VirtualClockLoop

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra
    uvloop = None

if os.environ.get("CI") and uvloop is None:  # pragma: no cover
    raise RuntimeError("uvloop must be installed on CI: pip install -e .[test]")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    LOOPS["uvloop"] = uvloop.new_event_loop

# A test's time budget scales with this factor on slow machines.
TIMEOUT_FACTOR = float(os.environ.get("RAPIDWS_TESTS_TIMEOUT_FACTOR", "1"))
ASYNC_TEST_TIMEOUT = 30 * TIMEOUT_FACTOR


VIRTUAL_CLOCK = "virtual_clock"
FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    **LOOPS,
    VIRTUAL_CLOCK: VirtualClockLoop,
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{VIRTUAL_CLOCK}: run on the virtual clock loop (tests/clock.py), not in real time",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if inspect.iscoroutinefunction(metafunc.function):
        metafunc.fixturenames.append("event_loop_name")
        virtual = metafunc.definition.get_closest_marker(VIRTUAL_CLOCK) is not None
        metafunc.parametrize("event_loop_name", [VIRTUAL_CLOCK] if virtual else list(LOOPS))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    factory = FACTORIES[pyfuncitem.callspec.params["event_loop_name"]]
    run(factory, asyncio.wait_for(function(**kwargs), ASYNC_TEST_TIMEOUT))
    return True


def run(factory: Callable[[], asyncio.AbstractEventLoop], coro: Any) -> Any:
    """Run ``coro`` to completion on a new loop from ``factory`` (asyncio.Runner's job)."""
    loop = factory()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


# TLS: a test CA and a server certificate for localhost and 127.0.0.1.


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def server_context(server_cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    return context


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test CA, and only it."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context
