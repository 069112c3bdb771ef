"""Every sync test checks that it leaves no loop thread behind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from rapidws.sync.loop import loop_thread
from tests.conftest import LOOPS

from .utils import TIMEOUT, loop_threads


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    # A failed test may leave one: wait for it here, so that only that test fails.
    for thread in loop_threads():
        thread.join(TIMEOUT)
    yield
    # Each test closes what it opens: close() joins the loop thread itself.
    assert not loop_threads(), "the sync loop thread outlived the test's connections"


@pytest.fixture(params=list(LOOPS))
def sync_loop(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the sync connections of a test on each loop: asyncio's and uvloop."""
    factory: Callable[[], asyncio.AbstractEventLoop] = LOOPS[request.param]
    default, loop_thread.new_loop = loop_thread.new_loop, factory
    try:
        yield request.param
    finally:
        loop_thread.new_loop = default
