"""The virtual clock of the timer tests: it jumps when idle, never while bytes travel."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from tests.clock import VirtualClockLoop, _in_flight
from tests.conftest import run


def test_time_starts_at_zero_and_only_moves_when_the_loop_would_wait() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        times = [loop.time()]
        for _ in range(1000):
            await asyncio.sleep(0)  # work, not waiting: no time passes
        times.append(loop.time())
        await asyncio.sleep(3600)  # an hour, at once
        times.append(loop.time())
        return times

    assert run(VirtualClockLoop, main()) == [0.0, 0.0, 3600.0]


def test_timers_run_in_order_at_their_exact_times() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        for name, delay in [("c", 0.3), ("a", 0.1), ("b", 0.2)]:
            loop.call_later(delay, lambda name=name: fired.append((name, loop.time())))
        await asyncio.sleep(1)
        return fired

    fired = run(VirtualClockLoop, main())
    assert [name for name, _ in fired] == ["a", "b", "c"]
    assert [when for _, when in fired] == pytest.approx([0.1, 0.2, 0.3])


def test_a_timeout_does_not_fire_while_a_socket_of_the_loop_answers() -> None:
    async def main() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        answer = await asyncio.wait_for(reader.read(100), 0.001)  # a timer that would jump
        writer.close()
        server.close()
        await server.wait_closed()
        return answer, loop.time()

    assert run(VirtualClockLoop, main()) == (b"ping", 0.0)


def test_a_thread_wakes_a_loop_that_has_no_timer() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        threading.Thread(target=loop.call_soon_threadsafe, args=(done.set_result, "woken")).start()
        return await done

    assert run(VirtualClockLoop, main()) == "woken"


def test_advance_refuses_to_go_back() -> None:
    loop = VirtualClockLoop()
    try:
        loop.advance(1.5)
        assert loop.time() == 1.5
        with pytest.raises(ValueError, match="never goes back"):
            loop.advance(-1)
    finally:
        loop.close()


def test_in_flight_sees_bytes_that_a_peer_of_ours_has_not_received() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        fds = {client.fileno(), server.fileno()}
        assert not _in_flight(fds)  # idle
        client.sendall(b"x" * 1000)
        server.recv(1000, socket.MSG_PEEK | socket.MSG_WAITALL)
        # Delivered: whether acknowledged yet or not, nothing travels.
        assert not _in_flight(fds)
        # Not sockets, or not TCP: never in flight.
        left, right = socket.socketpair()
        left.send(b"z")
        assert not _in_flight({left.fileno(), right.fileno(), listener.fileno()})
        left.close()
        right.close()
    finally:
        for sock in (client, server, listener):
            sock.close()
