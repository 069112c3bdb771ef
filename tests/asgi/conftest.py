"""tests/asgi runs where uvicorn 0.55 installs: Python 3.11 and later (see pyproject.toml)."""

from __future__ import annotations

import sys

# Not a skip: the package under test plugs into uvicorn, which this Python
# cannot install; CI runs these tests on 3.11 and 3.13.
collect_ignore_glob = ["test_*.py"] if sys.version_info < (3, 11) else []
