"""The twins under test: the pure-Python reference and, where it built, the C one."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

import rapidws.speedups.pure

try:
    import rapidws.speedups._c as c_twin
except ImportError:  # pragma: no cover - built wherever a compiler is
    c_twin = None

# On CI the C twin must be there: a silent fallback would test nothing.
if os.environ.get("CI") and c_twin is None:  # pragma: no cover
    raise RuntimeError("the C accelerator did not build")

MODULES: list[ModuleType] = [rapidws.speedups.pure] + ([c_twin] if c_twin else [])
IMPLEMENTATIONS = [pytest.param(module, id=module.__name__.rsplit(".", 1)[1]) for module in MODULES]


@contextlib.contextmanager
def finalizer_on_next_collection(finalizer: Callable[[], None]) -> Iterator[None]:
    """Run ``finalizer`` from the collection that the block's next allocation starts.

    For the C twin's allocations that may run Python code (a finalizer) which
    changes what the twin holds.
    """

    class Finalized:
        def __init__(self) -> None:
            self.cycle = self  # freed by a collection only

        def __del__(self) -> None:
            finalizer()

    gc.collect()
    threshold = gc.get_threshold()
    gc.disable()
    try:
        gc.set_threshold(1)
        Finalized()
        gc.enable()
        yield
    finally:
        gc.enable()
        gc.set_threshold(*threshold)
