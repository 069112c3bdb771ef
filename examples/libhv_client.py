r"""A wss client in the style of libhv's ``WebSocketClient``: send, print replies, reconnect.

The libhv original, roughly::

    hv::WebSocketClient ws;
    ws.onopen = []() { ws.send("hello"); };
    ws.onmessage = [](const std::string& msg) { printf("onmessage: %s\n", msg.c_str()); };
    reconn_setting_t reconn; reconn_setting_init(&reconn);
    reconn.min_delay = 1000; reconn.max_retry_cnt = 1;
    ws.setReconnect(&reconn);                // reconnect when the connection closes
    ws.withTLS(&tls_options);                // for wss://: CA file, verification
    ws.open("wss://127.0.0.1:8765/");

Run ``python examples/libhv_client.py wss://127.0.0.1:8765 hello world`` against
``examples/acl_echo.py`` with TLS (``--ca ca.pem`` to trust its CA, or ``--insecure``).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys

import rapidws


def tls_context(ca: str | None, insecure: bool) -> ssl.SSLContext:
    """Return a client TLS context: the system's CAs, or ``ca``, or no verification."""
    context = ssl.create_default_context(cafile=ca)
    if insecure:  # a self-signed test server: encryption without authentication
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def session(url: str, context: ssl.SSLContext | None, pending: list[str]) -> None:
    """Connect, then send each pending message and print its reply (``onmessage``)."""
    async with rapidws.connect(url, ssl=context) as ws:
        print(f"connected to {url}", flush=True)  # onopen
        while pending:
            await ws.send(pending[0])
            reply = await ws.recv()  # raises ConnectionClosed if the server goes away
            print(f"< {reply!s}", flush=True)
            pending.pop(0)  # answered: not sent again after a reconnection


async def main() -> int:
    """Run the session, reconnecting once (libhv's reconnect policy) if it is cut."""
    parser = argparse.ArgumentParser(description="A libhv-style WebSocket client.")
    parser.add_argument("url", help="ws://... or wss://...")
    parser.add_argument("messages", nargs="*", default=["hello", "libhv", "bye"])
    parser.add_argument("--ca", metavar="FILE", help="trust this CA (PEM) instead of the system's")
    parser.add_argument("--insecure", action="store_true", help="skip certificate checks")
    parser.add_argument("--reconnect-delay", type=float, default=1.0, metavar="SECONDS")
    args = parser.parse_args()
    secure = args.url.lower().startswith("wss:")
    context = tls_context(args.ca, args.insecure) if secure else None
    pending = list(args.messages)
    for attempt in range(2):  # the first connection and one reconnection
        try:
            await session(args.url, context, pending)
            return 0
        except rapidws.ConnectionClosed as exc:  # onclose
            print(f"closed ({exc}); {len(pending)} message(s) unanswered", flush=True)
        except (OSError, rapidws.InvalidHandshake) as exc:  # refused, TLS failure...
            print(f"cannot connect: {exc}", file=sys.stderr)
        if attempt == 0:
            await asyncio.sleep(args.reconnect_delay)  # reconn.min_delay
            print("reconnecting", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
