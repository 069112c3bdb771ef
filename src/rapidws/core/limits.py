"""Every default limit and timeout of rapidws, with the reason for its value.

Each limit is a keyword argument of the entry point that uses it; ``None``
disables it. Sizes are in bytes, times in seconds.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_TIMEOUT",
    "MAX_BODY_SIZE",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_HTTP2_STREAMS",
    "MAX_LINE",
    "MAX_MESSAGE_SIZE",
    "MAX_QUEUE",
    "MAX_REDIRECTS",
    "MAX_RESPONSE_BODY",
    "OPEN_TIMEOUT",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "WRITE_LIMIT",
]

# Messages: 1 MiB is far above what chat, dashboards and device links send.
# The check is made on each frame header, before its payload is buffered.
# A connection holds at most MAX_QUEUE received messages plus one being
# assembled, so its worst case is about (MAX_QUEUE + 1) x MAX_MESSAGE_SIZE
# (17 MiB by default); lower either for many untrusted peers.
MAX_MESSAGE_SIZE = 1 << 20

# Handshake: nginx and Node accept 8 KiB lines; 128 headers and 32 KiB in all
# leave room for large cookies and tokens while bounding a slowloris buffer.
MAX_LINE = 8192
MAX_HEADERS = 128
MAX_HEADER_BYTES = 32768

# Plain HTTP requests beside WebSocket routes (health checks, small JSON
# endpoints): a body is read whole before the handler runs, so it is bounded
# like a message (413 beyond).
MAX_BODY_SIZE = 1 << 20

# The body of a refusal that a client reads to put into its error.
MAX_RESPONSE_BODY = 65536

# Redirects a client follows for one connection: a chain longer than this is
# a loop or a misconfiguration (requests stops at 30, httpx at 20, websockets at 10).
MAX_REDIRECTS = 10

# HTTP/2 (RFC 8441): the streams, each a WebSocket or a request, that a client
# may have open at once on a connection; RFC 9113 section 6.5.2 recommends no
# fewer than 100 (nginx and hypercorn default to 128 and 100). Each stream may
# buffer a window (256 KiB) while its reader stalls.
MAX_HTTP2_STREAMS = 100

# Read-side flow control: received messages that the application has not
# consumed yet; past it the transport stops reading from the socket.
MAX_QUEUE = 16

# Write-side flow control: send() waits for the socket to drain once this many
# bytes are buffered, and resumes below a quarter of it.
WRITE_LIMIT = 65536

# Timeouts: a handshake or a closing handshake that takes longer is a dead or
# hostile peer. Keepalive pings every 20 s keep NAT and proxy mappings alive
# (most drop idle TCP after 30-60 s) and detect vanished peers.
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
