"""The twins under test: the pure-Python reference and, where it built, the C one."""

from __future__ import annotations

import os
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
