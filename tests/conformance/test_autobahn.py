"""The Autobahn|Testsuite cases, run by kosoku against the rapidws server and client.

Groups 1 to 10 (framing, pings, reserved bits, opcodes, fragmentation, UTF-8,
closing, limits); 12 and 13 (compression) come with permessage-deflate. Every
case must end OK, NON-STRICT or INFORMATIONAL, on both sides and both loops.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from kosoku import FailureError, run_fuzzingclient, run_fuzzingserver

from tests.conftest import LOOPS, TIMEOUT_FACTOR, run

sys.path.insert(0, str(Path(__file__).parents[2] / "conformance"))
import client as conformance_client
import server as conformance_server

EXCLUDED = ["12.*", "13.*"]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# kosoku has no timeout of its own: bound every run.
SUITE_TIMEOUT = 600 * TIMEOUT_FACTOR

pytestmark = pytest.mark.conformance


async def server_suite() -> list[Any]:
    async with conformance_server.serve(0) as server:
        try:
            return await asyncio.wait_for(
                run_fuzzingclient(f"ws://127.0.0.1:{server.port}", exclude_cases=EXCLUDED),
                SUITE_TIMEOUT,
            )
        except FailureError as failure:
            return failure.results


async def client_suite() -> list[Any]:
    async with run_fuzzingserver(exclude_cases=EXCLUDED, port=0) as fuzzer:
        await asyncio.wait_for(
            conformance_client.run_all(f"ws://{fuzzer.address}:{fuzzer.port}"), SUITE_TIMEOUT
        )
        try:
            return await asyncio.wait_for(fuzzer.get_result(), 60 * TIMEOUT_FACTOR)
        except FailureError as failure:
            return failure.results


def check(results: list[Any], side: str, loop: str, record_summary: Any) -> None:
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
    assert len(results) == 301


@pytest.mark.skipif(os.environ.get("RAPIDWS_SKIP_CONFORMANCE") == "1", reason="opted out")
@pytest.mark.parametrize("loop", list(LOOPS))
def test_server_passes_autobahn_cases(loop: str, record_summary: Any) -> None:
    check(run(LOOPS[loop], server_suite()), "server", loop, record_summary)


@pytest.mark.skipif(os.environ.get("RAPIDWS_SKIP_CONFORMANCE") == "1", reason="opted out")
@pytest.mark.parametrize("loop", list(LOOPS))
def test_client_passes_autobahn_cases(loop: str, record_summary: Any) -> None:
    check(run(LOOPS[loop], client_suite()), "client", loop, record_summary)
