"""Tests for ProtocolCore on both twins: what it takes at once, what it hands on."""

from __future__ import annotations

import gc
from types import ModuleType
from typing import Any

import pytest

from rapidws.core.protocol import CLOSING, OPEN
from rapidws.speedups.pure import apply_mask, encode_frame

from .twins import MODULES

MASK = b"\x37\xfa\x21\x3d"


def frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """A whole frame (FIN set), as the reference twin encodes it."""
    return encode_frame(0x80 | opcode, payload, mask)


def make_core(impl: ModuleType, **fields: Any) -> Any:
    """A ProtocolCore ready for the common case, recording what it hands on."""
    impl.set_open_state(OPEN)

    class Core(impl.ProtocolCore):  # type: ignore[misc, name-defined]
        __slots__ = ("calls",)

        def _receive_more(self, data: bytes, pos: int) -> None:
            self.calls.append(("receive", bytes(data), pos))

        def _send_message_more(self, data: Any, *, compress: bool = True) -> None:
            self.calls.append(("send", data, compress))

        def _close_frame(self, code: int, reason: str, payload: bytes) -> None:
            self.calls.append(("close", code, reason, payload))

    core = Core()
    core.calls = []
    values = {
        "state": OPEN,
        "_buf": bytearray(),
        "_events": [],
        "_out": [],
        "_frame_left": 0,
        "_read_limit": 1 << 20,
        "_msg_opcode": 0,
        "_masked": True,
        "_send_direct": True,
        "parsing_paused": False,
    }
    values.update(fields)
    for name, value in values.items():
        setattr(core, name, value)
    return core


def test_the_twins_join_the_same_sizes() -> None:
    assert {module.JOIN_LIMIT for module in MODULES} == {4096}


def test_whole_messages_are_taken_at_once(impl: ModuleType) -> None:
    core = make_core(impl)
    data = frame(0x2, b"abc", mask=MASK) + frame(0x1, "é".encode(), mask=MASK)
    core.receive_data(data)
    assert (core.events_received(), core.calls) == ([b"abc", "é"], [])
    assert core.events_received() == []


def test_the_rest_is_handed_on_where_it_starts(impl: ModuleType) -> None:
    core = make_core(impl)
    whole = frame(0x2, b"abc", mask=MASK)
    rest = frame(0x2, b"defg", mask=MASK)[:5]
    core.receive_data(whole + rest)
    assert core.events_received() == [b"abc"]
    assert core.calls == [("receive", whole + rest, len(whole))]


@pytest.mark.parametrize(
    "fields",
    [
        {"state": CLOSING},
        {"_buf": bytearray(b"\x82")},
        {"parsing_paused": True},
        {"_frame_left": 3},
        {"_msg_opcode": 1},
    ],
    ids=["closing", "buffered", "paused", "in-frame", "in-message"],
)
def test_anything_in_progress_is_handed_on_whole(impl: ModuleType, fields: dict[str, Any]) -> None:
    core = make_core(impl, **fields)
    data = frame(0x2, b"abc", mask=MASK)
    core.receive_data(data)
    assert (core.events_received(), core.calls) == ([], [("receive", data, 0)])


@pytest.mark.parametrize("compress", [None, True, False])
def test_small_messages_are_framed_at_once(impl: ModuleType, compress: bool | None) -> None:
    core = make_core(impl)
    kwargs = {} if compress is None else {"compress": compress}
    core.send_message(b"abc", **kwargs)
    core.send_message("é" * 4096, **kwargs)
    assert core.data_to_send() == [frame(0x2, b"abc"), frame(0x1, "é".encode() * 4096)]
    assert (core.calls, core.data_to_send()) == ([], [])


class Text(str):
    __slots__ = ()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, bytearray(b"abc")),
        ({}, memoryview(b"abc")),
        ({}, Text("abc")),
        ({}, b"x" * 4097),
        ({}, "x" * 4097),
        ({}, 5),
        ({"_send_direct": False}, b"abc"),
        ({"state": CLOSING}, b"abc"),
    ],
    ids=[
        "bytearray",
        "view",
        "str-subclass",
        "large",
        "large-text",
        "int",
        "not-direct",
        "closing",
    ],
)
def test_other_messages_are_handed_on(
    impl: ModuleType, fields: dict[str, Any], message: Any
) -> None:
    core = make_core(impl, **fields)
    core.send_message(message, compress=False)
    assert (core.calls, core.data_to_send()) == ([("send", message, False)], [])


def test_a_wrong_call_is_refused_by_the_python_signature(impl: ModuleType) -> None:
    core = make_core(impl)
    with pytest.raises(TypeError):
        core.send_message(b"abc", True)
    with pytest.raises(TypeError):
        core.send_message(b"abc", level=9)
    assert core.data_to_send() == []


@pytest.mark.parametrize("method", ["events_received", "data_to_send"])
def test_a_finalizer_that_swaps_the_list_during_the_swap(impl: ModuleType, method: str) -> None:
    # The new list's allocation may start a collection whose finalizers run
    # Python code: one that replaces the field must not leave a freed list.
    core = make_core(impl)
    field = "_events" if method == "events_received" else "_out"
    setattr(core, field, [b"old"])

    class Swapper:
        def __del__(self) -> None:
            setattr(core, field, [b"from-finalizer"])

    gc.disable()
    try:
        swapper = Swapper()
        swapper.cycle = swapper  # type: ignore[attr-defined]
        del swapper
        lists = [[] for _ in range(200)]  # no free list: the next list is GC-allocated
        gc.set_threshold(1)
        gc.enable()
        # Called directly, not through getattr(): a bound method's allocation
        # would run the collection before the swap.
        returned = core.events_received() if field == "_events" else core.data_to_send()
    finally:
        gc.set_threshold(700)
        gc.enable()
    fresh = [b"new"]  # a freed list's memory would come back here
    assert fresh is not returned
    assert returned in ([b"old"], [b"from-finalizer"])
    # When the collection runs depends on the Python version (3.12+: later).
    assert getattr(core, field) in ([], [b"from-finalizer"]) and len(lists) == 200


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"", 1005, ""),
        (b"\x03\xe8", 1000, ""),
        (b"\x03\xe9bye \xc3\xa9", 1001, "bye é"),
        (b"\x0b\xb8" + b"r" * 123, 3000, "r" * 123),
        (b"\x13\x87", 4999, ""),
    ],
)
@pytest.mark.parametrize("masked", [True, False])
def test_a_valid_close_frame_is_handed_on_read(
    impl: ModuleType, payload: bytes, code: int, reason: str, masked: bool
) -> None:
    core = make_core(impl, _masked=masked)
    data = frame(0x8, payload, MASK if masked else None)
    core.receive_data(data + b"anything after it")
    assert core.calls == [("close", code, reason, payload)]
    assert core.events_received() == []


@pytest.mark.parametrize(
    "data",
    [
        frame(0x8, b"\x03", MASK),  # a one-byte payload
        frame(0x8, b"\x03\xed", MASK),  # 1005 may not be sent
        frame(0x8, b"\x03\xf7", MASK),  # 1015 neither
        frame(0x8, b"\x0b\xb7", MASK),  # 2999
        frame(0x8, b"\x13\x88", MASK),  # 5000
        frame(0x8, b"\x03\xe8\xff", MASK),  # a reason that is not UTF-8
        frame(0x8, b"\x03\xe8", None),  # unmasked from a client
        frame(0x8, b"\x03\xe8", MASK)[:-1],  # not whole
        encode_frame(0x08, b"\x03\xe8", MASK),  # FIN clear
        encode_frame(0xC8, b"\x03\xe8", MASK),  # RSV1 set
        encode_frame(0x88, b"\x03\xe8" + b"r" * 124, MASK),  # over 125 bytes
        # Its length in the 16-bit form: valid, for the general parser.
        b"\x88\xfe\x00\x02" + MASK + apply_mask(b"\x03\xe8", MASK),
    ],
)
def test_anything_else_like_a_close_frame_goes_to_the_general_parser(
    impl: ModuleType, data: bytes
) -> None:
    core = make_core(impl)
    core.receive_data(data)
    assert core.calls == [("receive", data, 0)]


def test_a_close_frame_after_a_message_goes_to_the_general_parser(impl: ModuleType) -> None:
    # The message is answered before the close frame (the engine pauses).
    core = make_core(impl)
    message = frame(0x2, b"abc", MASK)
    core.receive_data(message + frame(0x8, b"\x03\xe8", MASK))
    assert core.calls == [("receive", message + frame(0x8, b"\x03\xe8", MASK), len(message))]
    assert core.events_received() == [b"abc"]
