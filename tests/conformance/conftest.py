"""Collects the Autobahn verdict counts and prints them at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

SUMMARIES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUMMARIES:
        terminalreporter.section("Autobahn|Testsuite (kosoku)")
        for line in SUMMARIES:
            terminalreporter.write_line(line)


@pytest.fixture
def record_summary() -> Any:
    return SUMMARIES.append
