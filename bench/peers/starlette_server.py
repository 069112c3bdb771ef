r"""The uvicorn + Starlette peer of bench/app_bench.py's HTTP case: ``GET /healthz``.

    python bench/peers/starlette_server.py --port P [--loop uvloop|asyncio]

What ``uvicorn app:app --loop uvloop --http httptools --log-level warning
--no-access-log`` runs, started from here so that it prints the ready line the
harness waits for: a Starlette app with one route, ``GET /healthz``, answering
``PlainTextResponse("ok\n")``, on uvicorn's httptools protocol, on the loop
chosen (uvloop by default).
"""

from __future__ import annotations

import asyncio
import os

import starlette
import uvicorn
from _runner import run
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def health(request: Request) -> PlainTextResponse:
    """Answer the health check."""
    return PlainTextResponse("ok\n")


app = Starlette(routes=[Route("/healthz", health)])


async def main(port: int) -> None:
    """Serve until SIGINT or SIGTERM (uvicorn's own handlers stop it)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        print(
            f"ready pid={os.getpid()} uvicorn={uvicorn.__version__} "
            f"starlette={starlette.__version__}",
            flush=True,
        )
    await serving


if __name__ == "__main__":
    run(main, __doc__.splitlines()[0])
