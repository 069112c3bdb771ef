"""Every speedups test that takes ``impl`` runs once per twin."""

from __future__ import annotations

from types import ModuleType

import pytest

from .twins import IMPLEMENTATIONS


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """One implementation of rapidws.speedups: ``pure`` or ``_c``."""
    module: ModuleType = request.param
    return module
