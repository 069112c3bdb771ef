"""Tests for ConnectionCore on both twins: what it dispatches itself, what it hands on."""

from __future__ import annotations

import gc
import weakref
from types import ModuleType
from typing import Any

import pytest

from rapidws.core.protocol import CONNECTING
from rapidws.speedups.pure import encode_frame
from rapidws.speedups.pure_connection import COUNTS

from .test_protocol_core import MASK, frame, make_core
from .twins import MODULES, c_twin


class Transport:
    """Records what is written."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def make_connection(impl: ModuleType, on_message: Any = None, **engine_fields: Any) -> Any:
    """A ConnectionCore on an open engine, recording what it hands on."""
    core = make_core(impl, _masked=True, **engine_fields)

    class Connection(impl.ConnectionCore):  # type: ignore[misc, name-defined]
        __slots__ = ("__weakref__", "calls")

        def _data_received_more(self, data: bytes) -> None:
            self.calls.append(("more", data))

        def _process_events(self) -> None:
            self.calls.append(("process", self.protocol.events_received()))

        def _events_done(self) -> None:
            self.calls.append(("done",))

        def _write_pending(self) -> None:
            # As the real one does for frames: the ones ready together in one write.
            if self.transport is None:
                return
            out = self.protocol.data_to_send()
            if out:
                self.transport.write(b"".join(out))

        def _read_payload_directly(self) -> None:
            self.calls.append(("direct",))

        def _callback_failed(self, method: Any, exc: BaseException) -> None:
            self.calls.append(("failed", method, type(exc), str(exc)))

        def _send_nowait_more(self, message: Any, *, compress: bool = True) -> None:
            self.calls.append(("send more", message, compress))

    connection = Connection()
    connection.calls = []
    connection.protocol = core
    connection.transport = Transport()
    connection._on_message = on_message
    connection._handling = False
    return connection


def echo(connection: Any, message: str | bytes) -> None:
    connection.send_nowait(message)


def reply(message: str | bytes) -> bytes:
    return encode_frame(0x81 if isinstance(message, str) else 0x82, message)


def test_the_twins_read_in_place_from_the_same_size() -> None:
    assert {module.DIRECT_READ_MIN for module in MODULES} == {64 * 1024}


def test_messages_go_to_the_callback_and_replies_out_in_one_write(impl: ModuleType) -> None:
    connection = make_connection(impl, echo)
    connection.data_received(frame(0x2, b"abc", MASK) + frame(0x1, "é".encode(), MASK))
    assert connection.transport.writes == [reply(b"abc") + reply("é")]
    connection.data_received(frame(0x2, b"one", MASK))
    assert connection.transport.writes[1:] == [reply(b"one")]
    assert connection.calls == []
    assert connection._handling is False


def test_a_failing_callback_is_reported_and_the_next_message_still_delivered(
    impl: ModuleType,
) -> None:
    seen = []

    def on_message(connection: Any, message: str | bytes) -> None:
        seen.append(message)
        if message == b"bad":
            raise ValueError("boom")

    connection = make_connection(impl, on_message)
    connection.data_received(frame(0x2, b"bad", MASK) + frame(0x2, b"good", MASK))
    assert seen == [b"bad", b"good"]
    assert connection.calls == [("failed", on_message, ValueError, "boom")]


def test_a_callback_raising_base_exception_stops_dispatch(impl: ModuleType) -> None:
    def on_message(connection: Any, message: str | bytes) -> None:
        raise KeyboardInterrupt

    connection = make_connection(impl, on_message)
    with pytest.raises(KeyboardInterrupt):
        connection.data_received(frame(0x2, b"abc", MASK))
    assert connection._handling is False
    assert connection.calls == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        # No callback: the events go to _process_events().
        ({}, [("process", [b"abc"])]),
        # While a callback runs (data_received() from inside one).
        ({"_handling": True}, [("process", [b"abc"])]),
    ],
)
def test_without_a_callback_to_run_events_go_to_process_events(
    impl: ModuleType, setup: dict[str, Any], expected: list[Any]
) -> None:
    connection = make_connection(impl, echo if setup else None)
    for name, value in setup.items():
        setattr(connection, name, value)
    connection.data_received(frame(0x2, b"abc", MASK))
    assert connection.calls == expected
    assert connection.transport.writes == []


def test_events_other_than_messages_go_to_process_events(impl: ModuleType) -> None:
    other = object()
    connection = make_connection(impl, echo, _events=[b"before", other])
    connection.data_received(b"")
    assert connection.calls == [("process", [b"before", other])]


def test_a_connection_not_open_hands_everything_on(impl: ModuleType) -> None:
    connection = make_connection(impl, echo, state=CONNECTING)
    data = frame(0x2, b"abc", MASK)
    connection.data_received(data)
    connection.send_nowait("hi", compress=False)
    assert connection.calls == [("more", data), ("send more", "hi", False)]
    assert connection.protocol.calls == []


def test_parsing_paused_by_the_engine_ends_with_events_done(impl: ModuleType) -> None:
    connection = make_connection(impl, echo, _events=[b"abc"], parsing_paused=True)
    connection.data_received(b"held")
    assert connection.protocol.calls == [("receive", b"held", 0)]
    assert connection.calls == [("done",)]
    assert connection.protocol.data_to_send() == [reply(b"abc")]  # written by _events_done()


def test_a_large_frame_in_progress_is_read_in_place(impl: ModuleType) -> None:
    connection = make_connection(impl, echo, _frame_left=impl.DIRECT_READ_MIN)
    connection.data_received(b"payload")
    assert connection.calls == [("direct",)]
    connection.protocol._frame_left = impl.DIRECT_READ_MIN - 1
    connection.data_received(b"payload")
    assert connection.calls == [("direct",)]


def test_send_nowait_writes_at_once_unless_a_callback_runs(impl: ModuleType) -> None:
    connection = make_connection(impl)
    connection.send_nowait(b"abc")
    assert connection.transport.writes == [reply(b"abc")]
    connection._handling = True
    connection.send_nowait("later")
    assert connection.transport.writes == [reply(b"abc")]
    assert connection.protocol.data_to_send() == [reply("later")]


@pytest.mark.parametrize(
    "setup",
    [
        {"transport": None},  # not connected: the frame waits in the engine
        {"eof_sent": True},
        {"frames": [b"\x89\x00"]},  # frames already waiting: together
        {"frames": [memoryview(b"\x89\x00")]},
        {"frames": [b""]},  # an EOF waiting
    ],
)
def test_anything_but_one_frame_to_write_goes_to_write_pending(
    impl: ModuleType, setup: dict[str, Any]
) -> None:
    connection = make_connection(impl)
    for frame_ in setup.get("frames", []):
        connection.protocol._out.append(frame_)
    if "eof_sent" in setup:
        connection.protocol.eof_sent = True
    if "transport" in setup:
        connection.transport = None
    connection.send_nowait(b"abc")
    if connection.transport is None:
        assert connection.protocol.data_to_send() == [reply(b"abc")]
    else:
        waiting = b"".join(bytes(f) for f in setup.get("frames", []))
        assert connection.transport.writes == [waiting + reply(b"abc")]


def test_a_cycle_through_the_fields_is_collected(impl: ModuleType) -> None:
    connection = make_connection(impl, echo)
    connection.transport.connection = connection  # transport -> connection -> transport
    collected: list[bool] = []
    weakref.finalize(connection, collected.append, True)
    del connection
    gc.collect()
    assert collected == [True]


def test_replies_on_an_engine_a_callback_switched_to_are_written(impl: ModuleType) -> None:
    new = make_core(impl, _masked=True)

    def on_message(connection: Any, message: str | bytes) -> None:
        connection.protocol = new
        connection.send_nowait(b"reply")

    connection = make_connection(impl, on_message)
    connection.data_received(frame(0x2, b"abc", MASK))
    assert connection.transport.writes == [reply(b"reply")]
    assert new._out == []


def test_the_callback_deleted_by_a_collection_during_dispatch(impl: ModuleType) -> None:
    # A collection may run when the events are swapped (it allocates): a
    # finalizer there that deletes the callback must not pull it from under us.
    state: dict[str, Any] = {}

    def collecting(phase: str, info: dict[str, int]) -> None:
        connection = state.get("connection")
        if phase == "start" and connection is not None and connection.protocol._events:
            state.clear()
            del connection._on_message

    connection = make_connection(impl, echo)
    data = frame(0x2, b"abc", MASK)
    threshold = gc.get_threshold()
    gc.collect()
    drained = [[] for _ in range(200)]  # empty the free list: the next lists are allocated
    state["connection"] = connection
    gc.callbacks.append(collecting)
    gc.set_threshold(1)
    try:
        for _ in range(4):
            connection.data_received(data)
            if not hasattr(connection, "_on_message"):
                connection._on_message = echo
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(collecting)
    del drained
    # Each message went to the callback taken before any collection ran.
    assert (connection.transport.writes, connection.calls) == ([reply(b"abc")] * 4, [])


class Waiter:
    """A future as recv() awaits it: records set_result()."""

    def __init__(self, done: bool = False) -> None:
        self.results: list[Any] = []
        self._done = done

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any) -> None:
        self.results.append(result)
        self._done = True


def test_one_message_for_a_waiting_recv_goes_to_its_future(impl: ModuleType) -> None:
    connection = make_connection(impl)
    waiter = connection._recv_waiter = Waiter()
    connection.protocol._out.append(b"\x89\x00")  # sent meanwhile: written after
    connection.data_received(frame(0x2, b"abc", MASK))
    assert waiter.results == [b"abc"]
    assert connection._recv_waiter is None
    assert connection.calls == []
    assert connection.transport.writes == [b"\x89\x00"]
    assert connection._handling is False


@pytest.mark.parametrize(
    ("setup", "data"),
    [
        ({}, frame(0x2, b"a", MASK) + frame(0x2, b"b", MASK)),  # two: one waits in the queue
        ({"waiter": None}, frame(0x2, b"a", MASK)),  # nobody waiting
        ({"waiter": Waiter(done=True)}, frame(0x2, b"a", MASK)),  # cancelled meanwhile
        ({"_handling": True}, frame(0x2, b"a", MASK)),  # from inside a callback
        ({"_events": [object()]}, b""),  # not a message
    ],
)
def test_anything_else_without_a_callback_goes_to_process_events(
    impl: ModuleType, setup: dict[str, Any], data: bytes
) -> None:
    connection = make_connection(impl, _events=setup.get("_events", []))
    waiter = connection._recv_waiter = setup.get("waiter", Waiter())
    connection._handling = setup.get("_handling", False)
    connection.data_received(data)
    assert [call[0] for call in connection.calls] == ["process"]
    assert connection._recv_waiter is waiter
    assert waiter is None or waiter.results == []


def test_a_message_before_a_pause_goes_to_recv_then_events_done(impl: ModuleType) -> None:
    connection = make_connection(impl, _events=[b"abc"], parsing_paused=True)
    waiter = connection._recv_waiter = Waiter()
    connection.data_received(b"held")
    assert waiter.results == [b"abc"]
    assert connection.calls == [("done",)]


def test_a_failing_set_result_propagates(impl: ModuleType) -> None:
    class Broken(Waiter):
        def set_result(self, result: Any) -> None:
            raise RuntimeError("broken future")

    connection = make_connection(impl)
    connection._recv_waiter = Broken()
    with pytest.raises(RuntimeError, match="broken future"):
        connection.data_received(frame(0x2, b"abc", MASK))
    assert connection._handling is False
    assert connection._recv_waiter is None


# The counts (rapidws.metrics reads them): the same on both twins.


def counts(connection: Any) -> dict[str, int]:
    # Not _wire_out: the C twin counts the frame it writes itself, the
    # Python twin leaves writing (and its count) to Connection._write_pending.
    return {name: getattr(connection, name) for name in COUNTS if name != "_wire_out"}


def test_counts_start_at_zero(impl: ModuleType) -> None:
    connection = make_connection(impl)
    assert {getattr(connection, name) for name in COUNTS} == {0}


def test_messages_dispatched_and_sent_are_counted(impl: ModuleType) -> None:
    connection = make_connection(impl, echo)
    data = frame(0x2, b"abc", MASK) + frame(0x1, "é€𝄞".encode(), MASK)
    connection.data_received(data)
    assert counts(connection) == {
        # 2 + 3 + 4 bytes of UTF-8.
        "_text_in": 1, "_text_in_bytes": 9, "_binary_in": 1, "_binary_in_bytes": 3,
        "_text_out": 1, "_text_out_bytes": 9, "_binary_out": 1, "_binary_out_bytes": 3,
        "_wire_in": len(data),
    }  # fmt: skip


def test_a_message_for_a_waiting_recv_is_counted(impl: ModuleType) -> None:
    connection = make_connection(impl)

    class Waiter:
        def done(self) -> bool:
            return False

        def set_result(self, message: object) -> None:
            pass

    connection._recv_waiter = Waiter()
    connection.data_received(frame(0x1, b"hi", MASK))
    assert (connection._text_in, connection._text_in_bytes) == (1, 2)


@pytest.mark.parametrize(
    ("message", "binary", "size"),
    [
        (bytearray(b"abcd"), True, 4),
        (memoryview(b"abcdef")[1:4], True, 3),
        ("ascii", False, 5),
        ("\u00e9\u00e9", False, 4),
    ],
)
def test_send_nowait_counts_what_it_sends(
    impl: ModuleType, message: Any, binary: bool, size: int
) -> None:
    connection = make_connection(impl)
    connection.send_nowait(message)
    kind = "_binary" if binary else "_text"
    assert (getattr(connection, f"{kind}_out"), getattr(connection, f"{kind}_out_bytes")) == (
        1,
        size,
    )


def test_the_frame_written_in_c_is_counted_on_the_wire() -> None:
    if c_twin is None:  # pragma: no cover - built wherever a compiler is
        pytest.fail("the C twin did not build")
    connection = make_connection(c_twin)
    connection.send_nowait(b"abc")
    assert connection._wire_out == len(reply(b"abc"))


def test_the_python_paths_count_through_the_same_methods(impl: ModuleType) -> None:
    connection = make_connection(impl)
    connection._count_received("ab", False)  # a stream's chunk
    connection._count_received(b"", True)  # a stream's start
    connection._count_sent(b"xyz", True)
    connection._count_sent(object(), True)  # a PreparedMessage: the hub counts it
    assert (connection._text_in, connection._text_in_bytes) == (0, 2)
    assert (connection._binary_in, connection._binary_in_bytes) == (1, 0)
    assert (connection._binary_out, connection._binary_out_bytes) == (1, 3)
    assert connection._text_out == 0
