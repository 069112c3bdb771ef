"""The hot loops of the protocol, chosen in this one place.

The protocol imports masking, UTF-8 validation, frame-header parsing, frame
encoding, the receive loop for single-frame messages and its per-message core
(:class:`ProtocolCore`, the base of its engine) from here only; the asyncio
connection its per-message part (:class:`ConnectionCore`); the handshake its
string work (:func:`add_header`, :func:`parse_head`, :func:`parse_request_line`,
:func:`accept_key`, :func:`serialize_head`). The C
twin (``_c``, built with the package when a compiler is there) is used when it
imports; otherwise, or when the environment variable ``RAPIDWS_SPEEDUPS=python``
is set, the pure-Python twin in :mod:`rapidws.speedups.pure` (and the modules
it gathers), which is the reference both must match.
:data:`IMPLEMENTATION` names the one in use: ``"c"``
or ``"python"``.
"""

from __future__ import annotations

import os

__all__ = [
    "DIRECT_READ_MIN",
    "IMPLEMENTATION",
    "JOIN_LIMIT",
    "ConnectionCore",
    "MessageBuffer",
    "ProtocolCore",
    "Utf8Validator",
    "accept_key",
    "add_header",
    "append_unmasked",
    "apply_mask",
    "encode_frame",
    "parse_frame_header",
    "parse_head",
    "parse_request_line",
    "read_messages",
    "serialize_head",
    "set_open_state",
]

from .pure import (
    DIRECT_READ_MIN,
    JOIN_LIMIT,
    ConnectionCore,
    MessageBuffer,
    ProtocolCore,
    Utf8Validator,
    accept_key,
    add_header,
    append_unmasked,
    apply_mask,
    encode_frame,
    parse_frame_header,
    parse_head,
    parse_request_line,
    read_messages,
    serialize_head,
    set_open_state,
)

IMPLEMENTATION = "python"
if os.environ.get("RAPIDWS_SPEEDUPS") != "python":
    try:
        from . import _c
    except ImportError:
        pass
    else:
        IMPLEMENTATION = "c"
        MessageBuffer = _c.MessageBuffer  # type: ignore[assignment, misc]
        Utf8Validator = _c.Utf8Validator  # type: ignore[assignment, misc]
        append_unmasked = _c.append_unmasked
        apply_mask = _c.apply_mask
        encode_frame = _c.encode_frame
        parse_frame_header = _c.parse_frame_header
        read_messages = _c.read_messages
        ProtocolCore = _c.ProtocolCore  # type: ignore[misc]
        ConnectionCore = _c.ConnectionCore  # type: ignore[misc]
        set_open_state = _c.set_open_state
        add_header = _c.add_header
        parse_head = _c.parse_head
        parse_request_line = _c.parse_request_line
        accept_key = _c.accept_key
        serialize_head = _c.serialize_head
