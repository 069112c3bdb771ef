"""An echo server in the style of the C++ library acl's examples, with optional wss.

acl serves each connection in a fiber that reads frames and writes them back;
wss comes from an SSL configuration holding the certificate. Roughly::

    acl::websocket ws(conn);                 // one fiber per connection
    while (ws.read_frame_head()) {
        int n = ws.read_frame_data(buf, sizeof(buf));
        ws.send_frame_text(buf, n);          // or send_frame_binary()
    }

rapidws's coroutine per connection is that fiber, and ``ssl=`` is the SSL
configuration. Run ``python examples/acl_echo.py --port 8765`` (ws://), or with
``--tls-cert cert.pem --tls-key key.pem`` (wss://), then
``rapidws connect -x hello ws://127.0.0.1:8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys

import rapidws
from rapidws import ServerConnection


async def echo(ws: ServerConnection) -> None:
    """Send every message back as it came: text as text, binary as binary."""
    async for message in ws:  # ends when the client closes; fragments are joined
        await ws.send(message)  # waits while the client is slow to read: backpressure


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """Return a server-side TLS context with the certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def main() -> None:
    """Parse the options and serve until interrupted."""
    parser = argparse.ArgumentParser(description="An acl-style echo server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM), for wss://")
    parser.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    context = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    async with rapidws.serve(echo, args.host, args.port, ssl=context) as server:
        scheme = "wss" if context else "ws"
        print(f"listening on {scheme}://{args.host}:{server.port}", file=sys.stderr)
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
