"""Structured logs: a formatter that writes each record as one JSON line.

rapidws logs under ``rapidws`` (``rapidws.server``, ``rapidws.client``). The
server writes one INFO line per connection's end and per refused handshake,
with the fields as the record's attributes (``extra=``), and its errors carry
``connection_id``; :class:`JSONFormatter` writes them as JSON for a log
pipeline (Loki, Elasticsearch, CloudWatch), a plain :class:`logging.Formatter`
as text. ::

    import logging, rapidws.logging

    handler = logging.StreamHandler()
    handler.setFormatter(rapidws.logging.JSONFormatter())
    logging.getLogger("rapidws").addHandler(handler)
    logging.getLogger("rapidws").setLevel(logging.INFO)

A connection's end, as written (one line)::

    {"time": "2026-12-07T13:20:00.123Z", "level": "INFO", "logger": "rapidws.server",
     "message": "connection 7 closed: 1000 - (by client) after 2.500 s, 3 messages in, 3 out",
     "event": "connection_closed", "connection_id": 7, "remote_address": "127.0.0.1:50312",
     "path": "/chat", "subprotocol": null, "extensions": ["permessage-deflate"],
     "duration": 2.5, "messages_in": 3, "messages_out": 3, "bytes_in": 12, "bytes_out": 12,
     "wire_bytes_in": 301, "wire_bytes_out": 184, "close_code": 1000, "close_reason": "",
     "closed_by": "client"}

``rapidws serve --log-format json`` installs it (text is the default).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import IO, Any, Literal

__all__ = ["JSONFormatter", "configure"]

# A record's own attributes: whatever else it has came with extra=.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JSONFormatter(logging.Formatter):
    """Format each record as one JSON object on one line.

    The keys: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``,
    ``message``, then the fields the record carries (``extra=``), then
    ``exception`` (the formatted traceback) when there is one. Values that
    JSON cannot hold are written as their ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line of JSON."""
        moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        data: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def configure(
    log_format: Literal["json", "text"] = "text",
    *,
    stream: IO[str] | None = None,
    level: int = logging.INFO,
) -> logging.Handler:
    """Send rapidws's logs at ``level`` and above to ``stream`` (stderr), as JSON or text.

    Returns the handler it added to the ``rapidws`` logger (which then does
    not pass records on to the root logger's handlers: no line twice).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JSONFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    root = logging.getLogger("rapidws")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return handler
