"""Tests for rapidws.core.handshake: the keys of the opening handshake."""

from __future__ import annotations

import base64

import pytest

from rapidws.core.handshake import GUID, accept_key, generate_key, is_valid_key


def test_accept_key_rfc_example() -> None:
    # RFC 6455 section 1.3.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_generate_key() -> None:
    keys = {generate_key() for _ in range(10)}
    assert len(keys) == 10
    for key in keys:
        assert is_valid_key(key)
        assert len(base64.b64decode(key)) == 16


@pytest.mark.parametrize(
    "key",
    [
        "",
        "not base64!",
        "dGhlIHNhbXBsZSBub25jZQ",  # missing padding
        "dGhlIHNhbXBsZSBub25jZQ==\n",
        base64.b64encode(bytes(15)).decode(),
        base64.b64encode(bytes(17)).decode(),
        "dGhlIHNhbXBsZSBub25jZQ=é",
    ],
)
def test_invalid_key(key: str) -> None:
    assert not is_valid_key(key)


def test_valid_key() -> None:
    assert is_valid_key("dGhlIHNhbXBsZSBub25jZQ==")
    assert is_valid_key(base64.b64encode(bytes(16)).decode())
