"""A virtual clock for tests of timers: an event loop whose time moves only when it would wait.

Timers tested on the wall clock fail on a busy machine: the loop runs late and
a count of pings or an interval is off. :class:`VirtualClockLoop` is asyncio's
selector loop with its own ``time()``, which starts at 0 and never moves by
itself. When the loop has nothing to run and would block in ``select()`` until
its next timer, it first polls its sockets; if nothing is ready and nothing is
on its way, it moves the clock to that timer at once (trio's "autojump"). A
test then sees "3 pings in 3.2 intervals" exactly, however late the machine,
and runs in the time its real work takes, not the time it simulates.

"Nothing on its way" is checked in the kernel, not guessed from a wait: a TCP
socket of the loop whose connection is still being set up, or whose peer has
not yet received all it sent (its ``TCP_INFO`` byte counts against the peer's,
when the peer is a socket of the loop too; else until the peer acknowledges
them), means bytes are still travelling; the loop then waits for real,
briefly, and polls again before moving the clock. So real sockets between a
client and a server on the same loop may be used under the virtual clock.
Work done outside the loop (a thread, another process) is not seen: a test
that waits on one must not use this clock.

Tests use it with ``@pytest.mark.virtual_clock`` (see ``conftest.py``): the
test then runs on this loop only, in place of asyncio's and uvloop's.
"""

from __future__ import annotations

import asyncio
import fcntl
import selectors
import socket
import struct
from typing import Any, NamedTuple

__all__ = ["VirtualClockLoop"]

# TCP states (include/net/tcp_states.h): a connection half made, a FIN sent
# and not acknowledged, a FIN received.
_HALF_OPEN = {2, 3}  # SYN_SENT, SYN_RECV
_FIN_UNACKED = {4, 9, 11}  # FIN_WAIT1, LAST_ACK, CLOSING
_FIN_RECEIVED = {6, 8, 9, 11}  # TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING
# struct tcp_info (include/uapi/linux/tcp.h, Linux 4.19 and later): tcpi_state
# is its first byte; tcpi_bytes_received (which counts a FIN as one) is the u64
# at offset 128; tcpi_bytes_sent and tcpi_bytes_retrans (data only) at 200, 208.
_TCP_INFO = struct.Struct("=B127xQ64xQQ")
# ioctls of tcp(7): bytes (and a FIN) in the send queue, and of those the ones not sent yet.
_SIOCOUTQ = 0x5411
_SIOCOUTQNSD = 0x894B
# How long to wait for the kernel to deliver what is in flight before polling again.
_IN_FLIGHT_WAIT = 0.005


class _TcpEnd(NamedTuple):
    """One connected TCP socket of the loop, as the kernel sees it."""

    state: int
    unacked: int  # bytes (and a FIN) sent and not acknowledged
    sent: int  # data bytes sent, retransmissions left out
    received: int  # data bytes received
    peer: object


def _tcp_end(fd: int) -> tuple[object, _TcpEnd] | None:
    """The local address and state of a connected TCP socket; None for anything else."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None  # not a socket (a pipe)
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return None
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
        local, peer = sock.getsockname(), sock.getpeername()
        unacked = _ioctl_int(fd, _SIOCOUTQ) - _ioctl_int(fd, _SIOCOUTQNSD)
    except OSError:
        return None  # a listening socket, or one not connected yet
    finally:
        sock.detach()  # the fd stays its owner's
    state, received, sent, retransmitted = _TCP_INFO.unpack_from(info)
    received -= state in _FIN_RECEIVED
    return local, _TcpEnd(state, unacked, sent - retransmitted, received, peer)


def _ioctl_int(fd: int, request: int) -> int:
    (value,) = struct.unpack("i", fcntl.ioctl(fd, request, b"\0\0\0\0"))
    return value


def _in_flight(fds: set[int]) -> bool:
    """Whether bytes are on their way to a socket of ours, or unacknowledged by another peer."""
    ends = dict(filter(None, map(_tcp_end, fds)))
    for end in ends.values():
        if end.state in _HALF_OPEN:
            return True
        if end.unacked:
            peer = ends.get(end.peer)
            # Delivered but not acknowledged yet is common (delayed ACKs, up
            # to 40 ms): when the peer is ours, ask it what it received.
            if peer is None or peer.received < end.sent:
                return True
            if end.state in _FIN_UNACKED and peer.state not in _FIN_RECEIVED:
                return True
    return False


class _AutojumpSelector(selectors.BaseSelector):
    """Wraps a real selector; moves the loop's clock instead of waiting for a timer."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._loop = loop
        self._selector = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._selector.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._selector.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._selector.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._selector.get_map()

    def close(self) -> None:
        self._selector.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        while True:
            events = self._selector.select(0)
            if events or timeout == 0:
                return events
            if timeout is None:
                # No timer at all: only real I/O (a thread's call_soon_threadsafe) can wake us.
                return self._selector.select(None)
            if not self._anything_in_flight():
                self._loop.advance(timeout)
                return []
            events = self._selector.select(_IN_FLIGHT_WAIT)
            if events:
                return events

    def _anything_in_flight(self) -> bool:
        fds = {key.fd for key in self._selector.get_map().values()}
        # A transport that paused reading is not in the selector but may be sending.
        fds.update(self._loop._transports)  # type: ignore[attr-defined]
        return _in_flight(fds)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop on a virtual clock that jumps to the next timer when idle."""

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_AutojumpSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward; the timers now due run at the loop's next turn."""
        if seconds < 0:
            raise ValueError("the clock never goes back")
        self._now += seconds
