"""The Autobahn|Testsuite cases, run by kosoku against the rapidws server and client.

Every case must end OK, NON-STRICT or INFORMATIONAL (behavior and close). Groups
1 to 10 (framing, pings, reserved bits, opcodes, fragmentation, UTF-8, closing,
limits) run on both event loops; groups 12 and 13 (permessage-deflate, 216
cases of up to 1000 round trips each, several minutes a side) on asyncio's.
The server side runs twice: the rapidws server, and a Starlette endpoint under
uvicorn with rapidws.asgi (Python 3.11 and later, where uvicorn installs).
"""

from __future__ import annotations

import asyncio
import collections
import sys
from pathlib import Path
from typing import Any

import pytest
from kosoku import FailureError, run_fuzzingclient, run_fuzzingserver

from tests.conftest import LOOPS, TIMEOUT_FACTOR, run

sys.path.insert(0, str(Path(__file__).parents[2] / "conformance"))
import client as conformance_client
import server as conformance_server

COMPRESSION = ["12.*", "13.*"]
# (cases, excluded cases, expected count) of each group of the suite.
GROUPS = {
    "protocol": (None, COMPRESSION, 301),
    "compression": (COMPRESSION, None, 216),
}
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# kosoku has no timeout of its own: bound every run.
SUITE_TIMEOUT = 600 * TIMEOUT_FACTOR

pytestmark = pytest.mark.conformance


async def server_suite(
    cases: list[str] | None, excluded: list[str] | None, serving: Any = None
) -> list[Any]:
    # serving: the server under test, by default conformance/server.py's.
    async with serving or conformance_server.serve(0) as server:
        try:
            return await asyncio.wait_for(
                run_fuzzingclient(f"ws://127.0.0.1:{server.port}", cases, excluded),
                SUITE_TIMEOUT,
            )
        except FailureError as failure:
            return failure.results


async def client_suite(cases: list[str] | None, excluded: list[str] | None) -> list[Any]:
    async with run_fuzzingserver(cases, excluded, port=0) as fuzzer:
        await asyncio.wait_for(
            conformance_client.run_all(f"ws://{fuzzer.address}:{fuzzer.port}"), SUITE_TIMEOUT
        )
        try:
            return await asyncio.wait_for(fuzzer.get_result(), 60 * TIMEOUT_FACTOR)
        except FailureError as failure:
            return failure.results


def check(results: list[Any], expected: int, side: str, loop: str, record_summary: Any) -> None:
    behavior = collections.Counter(r.behavior.value for r in results)
    close = collections.Counter(r.behavior_close.value for r in results)
    record_summary(
        f"{side} on {loop}: {len(results)} cases; behavior {dict(sorted(behavior.items()))}; "
        f"close {dict(sorted(close.items()))}"
    )
    bad = [
        f"{r.case_id}: {r.behavior.value}/{r.behavior_close.value}: {r.result} {r.result_close}"
        for r in results
        if r.behavior.value not in PASSING or r.behavior_close.value not in PASSING
    ]
    assert not bad, "\n".join(bad)
    assert len(results) == expected


CASES = [pytest.param("protocol", loop, id=f"protocol-{loop}") for loop in LOOPS] + [
    pytest.param("compression", "asyncio", id="compression-asyncio")
]


@pytest.mark.parametrize(("group", "loop"), CASES)
def test_server_passes_autobahn_cases(group: str, loop: str, record_summary: Any) -> None:
    cases, excluded, expected = GROUPS[group]
    results = run(LOOPS[loop], server_suite(cases, excluded))
    check(results, expected, f"server, {group} cases,", loop, record_summary)


# Defined only where uvicorn 0.55 installs (Python 3.11 and later; see
# tests/asgi/conftest.py): no test at all below, rather than a skipped one.
if sys.version_info >= (3, 11):
    import asgi_app

    from tests.asgi.utils import serve as serve_asgi

    async def asgi_server_suite(cases: list[str] | None, excluded: list[str] | None) -> list[Any]:
        return await server_suite(cases, excluded, serve_asgi(asgi_app.app, **asgi_app.OPTIONS))

    @pytest.mark.parametrize(("group", "loop"), CASES)
    def test_uvicorn_asgi_server_passes_autobahn_cases(
        group: str, loop: str, record_summary: Any
    ) -> None:
        """A Starlette echo endpoint under uvicorn with rapidws.asgi (conformance/asgi_app.py)."""
        cases, excluded, expected = GROUPS[group]
        results = run(LOOPS[loop], asgi_server_suite(cases, excluded))
        check(results, expected, f"uvicorn ASGI server, {group} cases,", loop, record_summary)


@pytest.mark.parametrize(("group", "loop"), CASES)
def test_client_passes_autobahn_cases(group: str, loop: str, record_summary: Any) -> None:
    cases, excluded, expected = GROUPS[group]
    results = run(LOOPS[loop], client_suite(cases, excluded))
    check(results, expected, f"client, {group} cases,", loop, record_summary)
