"""The README's two commands stay true: CI runs its test command verbatim."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[1]


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines[:20] if line.startswith("    python3 -m venv")]


def test_readme_opens_with_server_and_test_commands() -> None:
    serve, test = readme_commands()
    assert "rapidws serve --echo" in serve
    assert "pytest" in test


def test_ci_runs_the_readme_test_command() -> None:
    _, test = readme_commands()
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
