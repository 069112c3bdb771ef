"""Run every case of an Autobahn fuzzing server against the rapidws asyncio client.

    python conformance/client.py ws://127.0.0.1:9001

Follows the standard protocol: GET /getCaseCount, then /runCase?case=N&agent=A
for each case (echoing every message until the server closes), then
/updateReports?agent=A.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import rapidws

AGENT = "rapidws"
# 9.x sends messages up to 16 MiB in up to 65,536 fragments.
MAX_SIZE = 64 * 1024 * 1024


async def run_case(url: str, case: int) -> None:
    """Run one case: echo every message until the fuzzing server closes."""
    try:
        async with rapidws.connect(
            f"{url}/runCase?case={case}&agent={AGENT}",
            # The offer that lets the suite's 13.x servers pick every setting.
            compression=rapidws.ClientPerMessageDeflate(
                client_no_context_takeover=True, threshold=0
            ),
            max_size=MAX_SIZE,
            ping_interval=None,
            open_timeout=30,
        ) as ws:
            async for message in ws:
                await ws.send(message)
    except rapidws.ConnectionClosed:
        pass


async def run_all(url: str) -> int:
    """Run every case of the fuzzing server at ``url``; return the case count."""
    url = url.rstrip("/")
    async with rapidws.connect(f"{url}/getCaseCount") as ws:
        count = int(await ws.recv())
    for case in range(1, count + 1):
        await run_case(url, case)
    async with rapidws.connect(f"{url}/updateReports?agent={AGENT}") as ws:
        with contextlib.suppress(rapidws.ConnectionClosed):
            await ws.recv()
    return count


def main() -> None:
    """Run the cases of the fuzzing server named on the command line."""
    if len(sys.argv) != 2:
        sys.exit("usage: python conformance/client.py ws://HOST:PORT")
    count = asyncio.run(run_all(sys.argv[1]))
    print(f"ran {count} cases")


if __name__ == "__main__":
    main()
