"""Every sync test checks that it leaves no loop thread behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .utils import TIMEOUT, loop_threads


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    # A failed test may leave one: wait for it here, so that only that test fails.
    for thread in loop_threads():
        thread.join(TIMEOUT)
    yield
    # Each test closes what it opens: close() joins the loop thread itself.
    assert not loop_threads(), "the sync loop thread outlived the test's connections"
