"""Tests for rapidws.exceptions: the tree, the data carried, readable messages."""

from __future__ import annotations

import copy
import pickle

import pytest

from rapidws.core.frames import Close
from rapidws.core.http11 import Response
from rapidws.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidProxy,
    InvalidRedirect,
    InvalidRequest,
    InvalidResponse,
    InvalidState,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
    ProtocolError,
    ProxyRefused,
    SecurityError,
    WebSocketError,
)


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ProtocolError("reserved opcode 0x3"), "reserved opcode 0x3"),
        (PayloadTooBig("message too big", 11, 10), "message too big"),
        (InvalidRequest("missing Host header"), "missing Host header"),
        (SecurityError("too many header fields"), "too many header fields"),
        (InvalidResponse("wrong accept"), "wrong accept"),
        (InvalidStatus(Response(403)), "server rejected WebSocket connection: HTTP 403"),
        (InvalidURI("'http://x' is not a WebSocket URI"), "'http://x' is not a WebSocket URI"),
        (InvalidProxy("proxy closed the connection"), "proxy closed the connection"),
        (ProxyRefused("proxy refused: HTTP 407", 407, "Auth"), "proxy refused: HTTP 407"),
        (InvalidState("connection is CLOSED"), "connection is CLOSED"),
        (ConcurrencyError("two readers"), "two readers"),
        (ConnectionClosed(None, None), "no close frame received or sent"),
        (
            ConnectionClosed(None, Close(1000)),
            "sent 1000 (normal closure); no close frame received",
        ),
        (
            ConnectionClosed(Close(1001, "bye"), None),
            "received 1001 (going away) bye; no close frame sent",
        ),
        (
            ConnectionClosed(Close(1001), Close(1001), rcvd_then_sent=True),
            "received 1001 (going away); then sent 1001 (going away)",
        ),
        (
            ConnectionClosed(Close(4000, "done"), Close(1000), rcvd_then_sent=False),
            "sent 1000 (normal closure); then received 4000 (private use) done",
        ),
    ],
)
def test_str(exc: WebSocketError, text: str) -> None:
    assert str(exc) == text


def test_protocol_error_code() -> None:
    assert ProtocolError("framing").code == 1002
    assert ProtocolError("bad UTF-8", 1007).code == 1007
    exc = PayloadTooBig("too big", 2000, 1000)
    assert (exc.code, exc.size, exc.limit) == (1009, 2000, 1000)


def test_handshake_error_data() -> None:
    assert InvalidRequest("bad").status == 400
    assert InvalidRequest("method", 405).status == 405
    assert SecurityError("too long").status == 431
    assert SecurityError("too long", 414).status == 414
    assert InvalidResponse("bad").response is None
    response = Response(500, "oops")
    assert InvalidResponse("bad", response).response is response
    assert InvalidStatus(response).response is response
    assert InvalidRedirect("too many redirects", response).response is response
    refused = ProxyRefused("refused", 407, "Proxy Authentication Required")
    assert (refused.status, refused.reason) == (407, "Proxy Authentication Required")


@pytest.mark.parametrize(
    ("rcvd", "sent", "code", "reason"),
    [
        (Close(1001, "away"), Close(1000, "bye"), 1001, "away"),  # the peer's first
        (Close(1005), None, 1005, ""),
        (None, Close(1002, "framing"), 1002, "framing"),  # then ours
        (None, Close(1000, "bye"), 1006, ""),  # we closed normally, no answer came
        (None, None, 1006, ""),
    ],
)
def test_connection_closed_code_and_reason(
    rcvd: Close | None, sent: Close | None, code: int, reason: str
) -> None:
    exc = ConnectionClosed(rcvd, sent)
    assert (exc.rcvd, exc.sent, exc.rcvd_then_sent) == (rcvd, sent, None)
    assert exc.code == code
    assert exc.reason == reason


def test_connection_closed_message_is_built_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Close] = []
    describe = Close.__str__

    def counting_str(close: Close) -> str:
        calls.append(close)
        return describe(close)

    monkeypatch.setattr(Close, "__str__", counting_str)
    exc = ConnectionClosedOK(Close(1000), Close(1000, "bye"), rcvd_then_sent=True)
    assert (exc.code, exc.reason, exc.rcvd_then_sent) == (1000, "", True)
    assert calls == []
    text = "received 1000 (normal closure); then sent 1000 (normal closure) bye"
    assert str(exc) == text
    assert len(calls) == 2
    assert repr(exc) == f"ConnectionClosedOK({text!r})"


@pytest.mark.parametrize("clone", [copy.copy, lambda exc: pickle.loads(pickle.dumps(exc))])
def test_connection_closed_can_be_copied(clone: object) -> None:
    exc = ConnectionClosedError(None, Close(1002, "framing"))
    other = clone(exc)  # type: ignore[operator]
    assert type(other) is ConnectionClosedError
    assert (other.rcvd, other.sent, other.rcvd_then_sent) == (None, Close(1002, "framing"), None)
    assert str(other) == str(exc)


@pytest.mark.parametrize("clone", [copy.copy, lambda exc: pickle.loads(pickle.dumps(exc))])
def test_proxy_refused_can_be_copied(clone: object) -> None:
    other = clone(ProxyRefused("SOCKS5 proxy refused", 5, "connection refused"))  # type: ignore[operator]
    assert type(other) is ProxyRefused
    assert (str(other), other.status, other.reason) == (
        "SOCKS5 proxy refused",
        5,
        "connection refused",
    )


def test_tree() -> None:
    assert issubclass(PayloadTooBig, ProtocolError)
    assert issubclass(SecurityError, InvalidRequest)
    assert issubclass(InvalidStatus, InvalidResponse)
    assert issubclass(InvalidRedirect, InvalidResponse)
    assert issubclass(ProxyRefused, InvalidProxy)
    for cls in (InvalidRequest, InvalidResponse, InvalidURI, InvalidProxy):
        assert issubclass(cls, InvalidHandshake)
    assert issubclass(ConnectionClosedOK, ConnectionClosed)
    assert issubclass(ConnectionClosedError, ConnectionClosed)
    for cls in (ProtocolError, InvalidHandshake, ConnectionClosed, InvalidState, ConcurrencyError):
        assert issubclass(cls, WebSocketError)
    assert issubclass(WebSocketError, Exception)


def test_invalid_state_is_an_assertion_error() -> None:
    with pytest.raises(AssertionError):
        raise InvalidState("misuse")


def test_concurrency_error_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError):
        raise ConcurrencyError("two readers")
