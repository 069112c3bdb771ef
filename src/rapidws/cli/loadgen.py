"""The load generator of ``rapidws bench``: virtual users on one event loop.

One :func:`generate` call runs one process's share of a load test: each
virtual user (VU) holds one connection and runs a workload on it until the
run's end, opening a new connection after an error (each counted by kind):

- ``echo``: request/reply, closed model: each connection sends one message,
  waits for its echo (checked byte for byte), sends the next;
- ``rate``: open model: each connection sends ``rate`` messages per second
  (constant or Poisson gaps) whatever the replies do; each message carries a
  sequence number, its *intended* send time and its real one, so that the
  latency is measured from the intended time (corrected for coordinated
  omission, as wrk2 does) and from the real one (uncorrected), and the
  sender's lateness is a histogram of its own. One timer per process sends
  for every connection: on Linux a timerfd, precise to microseconds where
  the loop's timers are to the millisecond;
- ``rpc``: JSON requests with an ``id``, ``pipeline`` in flight per
  connection, replies matched by ``id``, each request with a timeout;
- ``push``: subscribers record receive time minus the publisher's stamp
  (``{"ts": unix seconds}``); publishers send stamped messages at ``rate``;
- ``churn``: open, close, again: handshakes per second;
- ``idle``: connections opened and held;
- ``scenario``: a user's async function, given each VU's connection.

Messages go through the fast path: the connection's message callback (the
slot of :class:`~rapidws.asyncio.server.Callbacks`) and ``send_nowait()``,
with no task switch per message. Latencies are counted per whole microsecond
in a dict on the hot path (a dict increment costs far less than recording in
an HDR histogram, which is pure Python) and folded into HDR histograms once a
second, exactly: a value and its count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import errno
import heapq
import ipaddress
import itertools
import json
import math
import os
import random
import socket
import ssl
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from ..asyncio.client import ClientConnection, connect
from ..core.proxy import proxy_from_environment
from ..core.uri import WebSocketURI, parse_uri
from ..exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
)
from .options import ClientFlags, client_options

__all__ = [
    "HIGHEST_US",
    "WORKLOADS",
    "LoadConfig",
    "LoadConnection",
    "ProcessResult",
    "Recorder",
    "Snapshot",
    "error_kind",
    "generate",
    "new_histogram",
]

#: The workloads :func:`generate` runs.
WORKLOADS = ("echo", "rate", "rpc", "push", "churn", "idle", "scenario")

#: Histograms hold 1 µs to 1 h with 3 significant digits (0.1 % error);
#: longer values are clamped to the highest.
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3

# The rate workload's stamp at the start of each binary message: sequence
# number, intended and real send times (the generator's clock, in seconds).
_STAMP = struct.Struct("!Qdd")
# Seconds between two checks of the event loop's lag.
_LAG_INTERVAL = 0.05
# Seconds a VU waits before opening a new connection after an error, so that a
# refusing server gets a steady trickle of attempts, not a busy loop.
_RETRY_DELAY = 0.1
# Seconds given to the closing handshakes at the end of a run.
_CLOSE_TIMEOUT = 1.0
# A send due within this many seconds is due now: a timer may fire a hair
# early (the loop's clock resolution, float rounding).
_EARLY = 1e-6
# Linux's IP_BIND_ADDRESS_NO_PORT: bind() to a source address without taking
# a port; connect() picks one per destination, so that one source address
# serves more than 64k connections to different servers.
_IP_BIND_ADDRESS_NO_PORT = 24


def new_histogram() -> HdrHistogram:
    """Return an empty histogram of microseconds (1 µs to 1 h, 3 digits)."""
    return HdrHistogram(1, HIGHEST_US, SIGNIFICANT_DIGITS)


class Recorder:
    """Durations counted per whole microsecond, folded into a histogram.

    The hot path increments :attr:`counts` directly; :meth:`fold` moves them
    into the interval's histogram, a little at a time, and :meth:`flush` adds
    the interval to :attr:`total` and returns it.
    """

    __slots__ = ("_interval", "counts", "total")

    def __init__(self) -> None:
        #: Microseconds to how many times each was seen, since the last fold.
        self.counts: dict[int, int] = {}
        #: Every value since the start (or the last :meth:`reset`).
        self.total = new_histogram()
        # The values folded since the last flush.
        self._interval: HdrHistogram | None = None

    def record(self, seconds: float) -> None:
        """Count one duration."""
        us = int(seconds * 1e6)
        self.counts[us] = self.counts.get(us, 0) + 1

    def fold(self) -> None:
        """Move the counts into the interval's histogram.

        Folding a second's values at once (a pure-Python record per value)
        stalls the load's loop for a millisecond or two each second: called
        every few tens of milliseconds, it spreads that work.
        """
        if not self.counts:
            return
        interval = self._interval
        if interval is None:
            interval = self._interval = new_histogram()
        for us, count in self.counts.items():
            interval.record_value(min(max(us, 1), HIGHEST_US), count)
        self.counts.clear()

    def flush(self) -> HdrHistogram:
        """Fold the counts; add the interval to :attr:`total` and return it."""
        self.fold()
        interval = self._interval or new_histogram()
        self._interval = None
        # One array addition (in C), not a second pure-Python record per value.
        self.total.add(interval)
        return interval

    def reset(self) -> None:
        """Forget everything (the end of a warm-up)."""
        self.counts.clear()
        self._interval = None
        # A new histogram: HdrHistogram.reset() zeroes its counts one by one in
        # Python (2 ms each, 14 ms for a run's recorders) while the load runs.
        self.total = new_histogram()


@dataclass
class LoadConfig:
    """What one process of a load test does; picklable, for worker processes."""

    url: str
    workload: str = "echo"
    connections: int = 1
    #: Seconds of the run, from its start (ramp-up included).
    duration: float = 10.0
    #: Seconds at the start whose measures are dropped.
    warmup: float = 0.0
    #: Messages to send in all (echo, rate, rpc, push); ``None`` for no limit.
    messages: int | None = None
    size: int = 16
    text: bool = False
    #: Messages per second per connection (rate), or per publisher (push).
    rate: float = 10.0
    poisson: bool = False
    #: Requests in flight per connection (rpc).
    pipeline: int = 1
    publishers: int = 1
    #: New connections per second; ``None`` for all at once.
    ramp_up: float | None = None
    #: Seconds for a handshake, a reply or a request before it counts as a timeout.
    timeout: float = 10.0
    #: The flags shared with ``rapidws connect``: headers, TLS, proxy...
    #: (compression off unless asked: it would measure zlib, not the server).
    client: ClientFlags = field(default_factory=lambda: ClientFlags(compression=False))
    sources: list[str] = field(default_factory=list)
    #: ``path.py`` or ``path.py:function`` (scenario).
    scenario: str | None = None
    #: The index of this process among the run's processes.
    process: int = 0


@dataclass
class Snapshot:
    """One second of one process, for the live display and the timeline."""

    second: int
    sent: int
    received: int
    bytes_sent: int
    bytes_received: int
    errors: int
    open: int
    #: The main latency histogram of this second, encoded (HdrHistogram V2).
    latency: str
    #: The longest event-loop lag in this second, in seconds.
    lag: float
    #: The generator's CPU use in this second (1.0 = one core).
    cpu: float


@dataclass
class ProcessResult:
    """What one process measured; merged exactly across processes."""

    seconds: float
    cpu_seconds: float
    sent: int
    received: int
    bytes_sent: int
    bytes_received: int
    #: Handshakes completed after the warm-up.
    handshakes: int
    #: The most connections open at once, warm-up included: 0 when none opened.
    peak_open: int
    errors: dict[str, int]
    #: Name to encoded histogram (microseconds).
    histograms: dict[str, str]
    timeline: list[Snapshot]


class LoadConnection(ClientConnection):
    """A client connection with what the load generator keeps per connection."""

    __slots__ = ("expect", "made_at", "pending", "sent_at", "seq")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Note when TCP (and TLS) is done, then send the handshake request."""
        # For wss://, asyncio calls this after the TLS handshake.
        self.made_at = time.perf_counter()
        self.sent_at = 0.0
        self.seq = self.expect = 0
        self.pending: collections.deque[float] = collections.deque()
        super().connection_made(transport)

    def deliver_to(self, on_message: Callable[[LoadConnection, Any], None]) -> None:
        """Hand every message to ``on_message``: those already received, then each one."""
        self._on_message = on_message
        queued = self._messages
        while queued:
            on_message(self, queued.popleft())

    def _message_received(self, message: Any) -> None:
        # The messages that do not come through the fast path (with a close
        # frame in the same read, or after a pause) go to the callback too.
        on_message = self._on_message
        if on_message is None:
            super()._message_received(message)
        else:
            try:
                on_message(self, message)
            except Exception as exc:
                self._callback_failed(on_message, exc)

    def _callback_failed(self, method: Callable[..., None], exc: BaseException) -> None:
        # Called by the fast path when the message callback raised: a bug of
        # the generator, never a reason to crash the run.
        self.logger.error("%s failed", getattr(method, "__name__", method), exc_info=exc)
        if self.transport is not None:
            self.transport.abort()


def error_kind(exc: BaseException) -> str:
    """Name the kind of an error for the report: ``refused``, ``timeout``, ``http 503``..."""
    if isinstance(exc, InvalidStatus):
        return f"http {exc.response.status}"
    if isinstance(exc, ConnectionClosed):
        return f"close {exc.rcvd.code if exc.rcvd is not None else 1006}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, InvalidHandshake):
        cause = exc.__cause__
        if isinstance(cause, OSError):
            return error_kind(cause)
        return "handshake"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, f"errno {exc.errno}")
    return type(exc).__name__


class _Run:
    """The state of one process's run: configuration, counters, recorders."""

    def __init__(
        self, config: LoadConfig, on_tick: Callable[[Snapshot], None] | None, clock: Any
    ) -> None:
        self.config = config
        self.on_tick = on_tick
        self.clock: Callable[[], float] = clock
        self.loop = asyncio.get_running_loop()
        uri = parse_uri(config.url)
        self.uri = uri
        # Built here, in each process: an SSL context does not pickle.
        self.options = client_options(config.client, config.url)
        self.ssl: ssl.SSLContext | None = self.options.get("ssl")
        self.proxy = _proxy(self.options.pop("proxy"), uri)
        self.options.update(
            open_timeout=config.timeout,
            ping_interval=None,
            max_size=None,
            max_queue=None,
            create_connection=LoadConnection,
        )
        # The rate workload's messages are a stamp (hex in text) and padding.
        stamp = 0 if config.workload != "rate" else 2 * _STAMP.size if config.text else _STAMP.size
        size = max(config.size, stamp)
        self.payload: str | bytes = "x" * size if config.text else os.urandom(size)
        self.padding = self.payload[stamp:]
        self.budget = sys.maxsize if config.messages is None else config.messages
        self.sent = self.received = self.bytes_sent = self.bytes_received = 0
        self.handshakes = self.open = self.peak_open = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.latency = Recorder()  # the main one: echo, corrected, rpc, push, churn...
        self.uncorrected = Recorder()
        self.send_lag = Recorder()
        self.tcp = Recorder()
        self.tls = Recorder()
        self.upgrade = Recorder()
        self.handshake = Recorder()
        self.loop_lag = Recorder()
        self.connections: set[LoadConnection] = set()
        self.stopped = self.loop.create_future()
        self.finished = self.loop.create_future()  # all messages answered
        self.sending = True
        self.timeline: list[Snapshot] = []
        self.address: Any = None
        self.family = socket.AF_INET

    @property
    def recorders(self) -> dict[str, Recorder]:
        """The recorders by their name in the report."""
        return {
            "latency": self.latency,
            "uncorrected": self.uncorrected,
            "send_lag": self.send_lag,
            "tcp_connect": self.tcp,
            "tls": self.tls,
            "upgrade": self.upgrade,
            "handshake": self.handshake,
            "loop_lag": self.loop_lag,
        }

    def error(self, kind: str) -> None:
        """Count one error."""
        self.errors[kind] += 1

    def reset(self) -> None:
        """Drop what was measured so far (the end of the warm-up)."""
        self.sent = self.received = self.bytes_sent = self.bytes_received = 0
        # The connections opened during the warm-up stay counted in
        # peak_open: a run whose connections all opened then did open some.
        self.handshakes = 0
        self.errors.clear()
        for recorder in self.recorders.values():
            recorder.reset()
        self.timeline.clear()

    def stop_sending(self) -> None:
        """Send no more messages (the budget is spent or the time is up)."""
        self.sending = False
        self.budget = 0

    async def resolve(self) -> None:
        """Resolve the server's address once, not per connection (a proxy resolves it)."""
        if self.proxy is not None:
            return
        host = self.uri.host.strip("[]")
        try:
            # An address needs no resolver thread.
            address = ipaddress.ip_address(host)
        except ValueError:
            infos = await self.loop.getaddrinfo(host, self.uri.port, type=socket.SOCK_STREAM)
            self.family, _, _, _, self.address = infos[0]
        else:
            self.family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            self.address = (host, self.uri.port)

    async def open_connection(self, index: int) -> LoadConnection:
        """Open one connection, timing TCP, TLS and the upgrade apart."""
        if self.proxy is not None or self.options.get("http2"):
            return await self._open_whole()
        config = self.config
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if config.sources:
                if sys.platform == "linux":
                    sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((config.sources[index % len(config.sources)], 0))
            start = self.clock()
            await asyncio.wait_for(self.loop.sock_connect(sock, self.address), config.timeout)
            connected = time.perf_counter()
            clock_offset = self.clock() - connected
            ws = await connect(config.url, sock=sock, proxy=None, **self.options)
        except BaseException:
            sock.close()
            raise
        assert isinstance(ws, LoadConnection)
        opened = self.clock()
        made = ws.made_at + clock_offset
        self.tcp.record(connected + clock_offset - start)
        if self.ssl is not None:
            self.tls.record(made - connected - clock_offset)
        self.upgrade.record(opened - made)
        self.handshake.record(opened - start)
        self.handshakes += 1
        return ws

    async def _open_whole(self) -> LoadConnection:
        # The proxy opens the TCP connection and TLS runs inside its tunnel,
        # or the WebSocket is a stream of a shared HTTP/2 connection: only
        # the whole handshake can be timed.
        start = self.clock()
        ws = await connect(self.config.url, proxy=self.proxy, **self.options)
        assert isinstance(ws, LoadConnection)
        self.handshake.record(self.clock() - start)
        self.handshakes += 1
        return ws

    def hold(self, ws: LoadConnection) -> asyncio.Future[None]:
        """Track ``ws`` while it is open; the future is done when it closes or the run ends."""
        done: asyncio.Future[None] = self.loop.create_future()

        def closed(_: object) -> None:
            # Still tracked: the server closed it, or the network did.
            unexpected = ws in self.connections
            self.connections.discard(ws)
            self.open -= 1
            if not done.done():
                done.set_result(None)
            if unexpected and not self.stopped.done():
                code = ws.close_code
                self.error(f"close {1006 if code is None else code}")

        self.connections.add(ws)
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        ws.on_close(closed)
        return done

    def expire(self, ws: LoadConnection, now: float) -> None:
        """Drop a connection whose oldest request has waited too long."""
        if ws.pending and now - ws.pending[0] > self.config.timeout:
            self.error("timeout")
            ws.pending.clear()
            if ws.transport is not None:
                ws.transport.abort()


def _proxy(setting: str | bool | None, uri: WebSocketURI) -> str | None:
    # The proxy of --proxy, or by default the environment's, as connect() does.
    if setting is True:
        return proxy_from_environment(uri, os.environ)
    return setting or None


# ---- the rate workload's timer: one per process, precise on Linux ----


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


# <sys/timerfd.h>: TFD_NONBLOCK and TFD_CLOEXEC are O_NONBLOCK and O_CLOEXEC.
_CLOCK_MONOTONIC = 1
_TFD_FLAGS = os.O_NONBLOCK | os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _TimerFd:
    """A Linux timerfd on CLOCK_MONOTONIC, armed for absolute times.

    The event loop's own timers wake it to the millisecond (epoll's timeout
    and libuv's are in milliseconds); a timerfd is an hrtimer, with no timer
    slack, that makes its file descriptor readable when due, and the loop
    watches it like a socket. Through ctypes: ``os.timerfd_create`` is only
    on Python 3.13+.
    """

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
        self.fd: int = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_FLAGS)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._spec = _Itimerspec()

    def arm(self, when: float) -> None:
        """Fire at ``when``, CLOCK_MONOTONIC seconds (at once if past)."""
        value = self._spec.it_value
        value.tv_sec = seconds = int(when)
        value.tv_nsec = int((when - seconds) * 1e9)
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, self._spec, None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def clear(self) -> None:
        """Consume the expiry, else the descriptor stays readable (arm() does too)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.fd)


def _timerfd(clock: Callable[[], float]) -> _TimerFd | None:
    """Return a timerfd for a clock that reads CLOCK_MONOTONIC; else None."""
    if clock is time.perf_counter:
        info = time.get_clock_info("perf_counter")
    elif clock is time.monotonic:
        info = time.get_clock_info("monotonic")
    else:
        return None  # another clock: the virtual one of tests
    if sys.platform != "linux" or info.implementation != "clock_gettime(CLOCK_MONOTONIC)":
        return None
    try:
        return _TimerFd()
    except (OSError, AttributeError):  # no timerfd in this kernel or libc
        return None


class _Sender:
    """Every connection's next send in one heap, on one timer for the process.

    ``send_due(ws, now)`` sends what ``ws`` has due and returns its next
    intended send time, or ``None`` when it is done. The timer is a timerfd
    watched by the loop when :func:`_timerfd` gives one, else the loop's own.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        send_due: Callable[[LoadConnection, float], float | None],
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.send_due = send_due
        # (intended time, order of insertion, connection): ties in order.
        self.heap: list[tuple[float, int, LoadConnection]] = []
        self.order = itertools.count()
        self.armed = math.inf
        self.handle: asyncio.TimerHandle | None = None
        self.timerfd = _timerfd(clock)
        if self.timerfd is not None:
            loop.add_reader(self.timerfd.fd, self.fire)

    def add(self, ws: LoadConnection, when: float) -> None:
        """Have ``ws`` send at ``when`` (the clock's time)."""
        heapq.heappush(self.heap, (when, next(self.order), ws))
        if when < self.armed:
            self.arm(when)

    def fire(self) -> None:
        """Send what is due, earliest first, then wait for the next."""
        self.armed = math.inf
        heap = self.heap
        clock = self.clock
        # The clock is read again for each connection: what falls due while
        # this one sends goes out in the same wake-up.
        while heap and heap[0][0] <= (now := clock()) + _EARLY:
            ws = heapq.heappop(heap)[2]
            try:
                when = self.send_due(ws, now)
            except ConnectionClosed:
                continue  # closing: hold() counts its close, its VU opens another
            if when is not None:
                heapq.heappush(heap, (when, next(self.order), ws))
        if heap:
            self.arm(heap[0][0])
        elif self.timerfd is not None:
            # Re-arming clears the expiry (timerfd_create(2)): no read then.
            self.timerfd.clear()

    def arm(self, when: float) -> None:
        """Fire at ``when``."""
        self.armed = when
        if self.timerfd is not None:
            self.timerfd.arm(when)
            return
        if self.handle is not None:
            self.handle.cancel()
        loop = self.loop
        self.handle = loop.call_at(loop.time() + when - self.clock(), self.fire)

    def close(self) -> None:
        """Stop sending; release the timer."""
        self.heap.clear()
        if self.timerfd is not None:
            self.loop.remove_reader(self.timerfd.fd)
            self.timerfd.close()
            self.timerfd = None
        if self.handle is not None:
            self.handle.cancel()


# ---- workloads: each returns when the connection ended or the run did ----


def _echo(run: _Run) -> Callable[[LoadConnection], None]:
    # Closed model: the next message goes from the callback of the reply.
    payload = run.payload
    counts = run.latency.counts
    clock = run.clock
    # The stamp of the send is ws.sent_at; pending holds it for expire().

    def on_message(ws: LoadConnection, message: str | bytes) -> None:
        now = clock()
        us = int((now - ws.sent_at) * 1e6)
        counts[us] = counts.get(us, 0) + 1
        run.received += 1
        if message != payload:
            run.error("mismatch")
        if run.sent < run.budget:
            ws.sent_at = ws.pending[0] = now  # the one in flight: its send time replaced
            ws.send_nowait(payload)
            run.sent += 1
        else:
            ws.pending.popleft()
            if run.received >= run.sent and not run.finished.done():
                run.finished.set_result(None)

    def start(ws: LoadConnection) -> None:
        ws.deliver_to(on_message)
        if run.sent < run.budget:
            ws.sent_at = now = clock()
            ws.pending.append(now)
            ws.send_nowait(payload)
            run.sent += 1

    return start


def _rate(run: _Run) -> Callable[[LoadConnection], None]:
    # Open model: one timer sends at the intended times, whatever the replies do.
    config = run.config
    gap = 1.0 / config.rate
    rate = config.rate
    poisson = config.poisson
    expovariate = random.expovariate
    padding = run.padding
    tail = -len(padding)
    text = config.text
    corrected = run.latency.counts
    uncorrected = run.uncorrected.counts
    lag = run.send_lag.counts
    clock = run.clock
    pack = _STAMP.pack
    unpack = _STAMP.unpack_from
    open_connections = run.connections
    # Constant rate: connection k (in the order they start) sends at
    # origin + (n + k / connections) * gap: the sends interleave evenly, as
    # loadclient.c's do, rather than in one burst per gap.
    origin: float | None = None
    phases = itertools.count()
    sender: _Sender | None = None

    def send_due(ws: LoadConnection, now: float) -> float | None:
        if ws not in open_connections:
            return None  # closed: its VU opens another
        # A late timer (a busy generator) sends every message that is due,
        # each with its own intended time: its latency then includes the lateness.
        while ws.sent_at <= now + _EARLY and run.sent < run.budget:
            intended = ws.sent_at
            stamp = pack(ws.seq, intended, now)
            ws.send_nowait(stamp.hex() + padding if text else stamp + padding)  # type: ignore[operator]
            us = max(0, int((now - intended) * 1e6))
            lag[us] = lag.get(us, 0) + 1
            ws.pending.append(intended)
            ws.seq += 1
            run.sent += 1
            ws.sent_at += expovariate(rate) if poisson else gap
        return ws.sent_at if run.sent < run.budget else None

    def on_message(ws: LoadConnection, message: str | bytes) -> None:
        now = clock()
        try:
            stamp = (
                bytes.fromhex(message[: 2 * _STAMP.size]) if isinstance(message, str) else message
            )
            seq, intended, sent = unpack(stamp)
        except (ValueError, struct.error):
            run.error("mismatch")
            return
        us = int((now - intended) * 1e6)
        corrected[us] = corrected.get(us, 0) + 1
        us = int((now - sent) * 1e6)
        uncorrected[us] = uncorrected.get(us, 0) + 1
        run.received += 1
        if seq != ws.expect or (padding and message[tail:] != padding):
            run.error("mismatch")
        ws.expect = seq + 1
        if ws.pending:
            ws.pending.popleft()
        if run.received >= run.budget and not run.finished.done():
            run.finished.set_result(None)

    def start(ws: LoadConnection) -> None:
        nonlocal origin, sender
        if sender is None:
            sender = created = _Sender(run.loop, clock, send_due)
            run.stopped.add_done_callback(lambda _: created.close())
        ws.deliver_to(on_message)
        now = clock()
        if poisson:
            ws.sent_at = now
        else:
            if origin is None:
                origin = now
            phase = next(phases) % config.connections / config.connections
            # The first slot of this connection's phase from now on.
            slot = math.ceil((now - origin - _EARLY) / gap - phase)
            ws.sent_at = origin + (slot + phase) * gap
        sender.add(ws, ws.sent_at)

    return start


def _rpc(run: _Run) -> Callable[[LoadConnection], None]:
    # Requests with an id; replies matched by id, in any order.
    config = run.config
    counts = run.latency.counts
    clock = run.clock
    padding = "x" * max(0, config.size - 40)
    in_flight: dict[LoadConnection, dict[int, float]] = {}
    ids = iter(range(sys.maxsize))

    def send(ws: LoadConnection) -> None:
        request_id = next(ids)
        in_flight[ws][request_id] = now = clock()
        ws.pending.append(now)
        request = f'{{"jsonrpc":"2.0","id":{request_id},"method":"echo","params":["{padding}"]}}'
        ws.send_nowait(request)
        run.sent += 1
        run.bytes_sent += len(request)

    def on_message(ws: LoadConnection, message: str | bytes) -> None:
        now = clock()
        run.bytes_received += len(message)
        try:
            reply = json.loads(message)
            sent_at = in_flight[ws].pop(reply["id"])
        except (ValueError, TypeError, KeyError):
            run.error("unmatched id")
            return
        us = int((now - sent_at) * 1e6)
        counts[us] = counts.get(us, 0) + 1
        run.received += 1
        if "error" in reply:
            run.error("rpc error")
        # The oldest pending time, for expire(): the earliest still in flight.
        ws.pending.clear()
        ws.pending.extend(sorted(in_flight[ws].values())[:1])
        if run.sent < run.budget:
            send(ws)
        elif run.received >= run.sent and not run.finished.done():
            run.finished.set_result(None)

    def start(ws: LoadConnection) -> None:
        in_flight[ws] = {}
        ws.on_close(lambda _: in_flight.pop(ws, None))
        ws.deliver_to(on_message)
        for _ in range(config.pipeline):
            if run.sent < run.budget:
                send(ws)

    return start


def _push(run: _Run) -> Callable[[LoadConnection], None]:
    # Subscribers: latency is receive time minus the stamp, on the wall clock
    # (the publisher may be another process, or the server itself).
    counts = run.latency.counts

    def on_message(ws: LoadConnection, message: str | bytes) -> None:
        now = time.time()
        run.received += 1
        run.bytes_received += len(message)
        try:
            stamp = float(json.loads(message)["ts"])
        except (ValueError, TypeError, KeyError):
            run.error("unstamped")
            return
        us = int((now - stamp) * 1e6)
        counts[us] = counts.get(us, 0) + 1

    def start(ws: LoadConnection) -> None:
        ws.deliver_to(on_message)

    return start


async def _publish(run: _Run, index: int) -> None:
    # A publisher: stamped messages at the configured rate, on its own connection.
    config = run.config
    padding = "x" * max(0, config.size - 40)
    while run.sending:
        ws = await _attempt(run, index)
        if ws is None:
            continue
        ws.deliver_to(_ignore)
        seq = 0
        next_at = run.loop.time()
        try:
            while run.sending and run.sent < run.budget:
                message = f'{{"seq":{seq},"ts":{time.time()!r},"pad":"{padding}"}}'
                await ws.send(message)
                run.sent += 1
                run.bytes_sent += len(message)
                seq += 1
                next_at += random.expovariate(config.rate) if config.poisson else 1 / config.rate
                await _pause(run, next_at - run.loop.time())
        except ConnectionClosed as exc:
            run.error(error_kind(exc))
        finally:
            await _close(ws)


async def _attempt(run: _Run, index: int) -> LoadConnection | None:
    # A new connection, or None after counting the error and a pause.
    try:
        return await run.open_connection(index)
    except Exception as exc:
        run.error(error_kind(exc))
        await _pause(run, _RETRY_DELAY)
        return None


def _ignore(ws: LoadConnection, message: str | bytes) -> None:
    """Drop a message (what a publisher receives)."""


async def _pause(run: _Run, seconds: float) -> None:
    # Sleep, cut short by the end of the run.
    if seconds > 0 and not run.stopped.done():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(run.stopped), seconds)


async def _close(ws: LoadConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), _CLOSE_TIMEOUT)
    if ws.transport is not None:
        ws.transport.abort()


def load_scenario(spec: str) -> Callable[[ClientConnection], Awaitable[object]]:
    """Load ``path.py`` (its ``scenario`` function) or ``path.py:function``.

    Raises:
        ValueError: when the file cannot be loaded or has no such function.
    """
    import importlib.util  # noqa: PLC0415 - only for scenarios

    path, _, name = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("rapidws_bench_scenario", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot load the scenario {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"cannot load the scenario {path!r}: {exc}") from None
    function = getattr(module, name or "scenario", None)
    if not callable(function):
        raise ValueError(f"{path!r} has no function {name or 'scenario'!r}")
    return function  # type: ignore[no-any-return]


async def _user(
    run: _Run,
    index: int,
    start: Callable[[LoadConnection], None],
    scenario: Callable[[ClientConnection], Awaitable[object]] | None,
) -> None:
    # One virtual user: a connection, its workload until it ends, again.
    churn = run.config.workload == "churn"
    while not run.stopped.done():
        ws = await _attempt(run, index)
        if ws is None:
            continue
        done = run.hold(ws)
        try:
            if scenario is not None:
                await _iterate(run, ws, scenario)
            elif not churn:
                start(ws)
                await asyncio.wait([done, run.stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Closed by us: not an error, even before the end of the run.
            run.connections.discard(ws)
            if not done.done():
                done.set_result(None)
            await _close(ws)


async def _iterate(
    run: _Run, ws: LoadConnection, scenario: Callable[[ClientConnection], Awaitable[object]]
) -> None:
    # The scenario again and again on one connection; each iteration timed.
    while not run.stopped.done() and run.sent < run.budget:
        begin = run.clock()
        run.sent += 1
        try:
            await asyncio.wait_for(scenario(ws), run.config.timeout)
        except ConnectionClosed:
            return  # hold() counts the close
        except Exception as exc:
            run.error(f"scenario: {error_kind(exc)}")
        else:
            run.latency.record(run.clock() - begin)
            run.received += 1
        # A scenario that never suspends (or fails at once) must not starve
        # the loop: on Python 3.12+ wait_for() runs it without a task.
        await asyncio.sleep(0)


_STARTS: dict[str, Callable[[_Run], Callable[[LoadConnection], None]]] = {
    "echo": _echo,
    "rate": _rate,
    "rpc": _rpc,
    "push": _push,
}


def _nothing(ws: LoadConnection) -> None:
    """Do nothing: the workload of held connections (idle, churn)."""


async def _watch(run: _Run) -> None:
    # Every _LAG_INTERVAL: the loop's lag, the requests timed out; every
    # second: a snapshot; at the end of the warm-up: a reset.
    config = run.config
    loop = run.loop
    begin = loop.time()
    cpu_last = time.process_time()
    warm = config.warmup <= 0
    second = 0
    lag_max = 0.0
    # The lag on a fine clock: uvloop's time() moves by whole milliseconds.
    due = time.perf_counter() + _LAG_INTERVAL
    while not run.stopped.done():
        await _pause(run, _LAG_INTERVAL)
        now = loop.time()
        woke = time.perf_counter()
        lag = max(0.0, woke - due)
        run.loop_lag.record(lag)
        lag_max = max(lag_max, lag)
        due = woke + _LAG_INTERVAL
        clock_now = run.clock()
        for ws in list(run.connections):
            run.expire(ws, clock_now)
        run.latency.fold()
        if not warm and now - begin >= config.warmup:
            warm = True
            run.reset()
            second = 0
            begin = now
        if now - begin >= second + 1:
            second += 1
            cpu = time.process_time()
            snapshot = Snapshot(
                second=second,
                sent=run.sent,
                received=run.received,
                bytes_sent=run.bytes_sent,
                bytes_received=run.bytes_received,
                errors=sum(run.errors.values()),
                open=run.open,
                latency=run.latency.flush().encode().decode(),
                lag=lag_max,
                cpu=cpu - cpu_last,
            )
            cpu_last, lag_max = cpu, 0.0
            run.timeline.append(snapshot)
            if run.on_tick is not None:
                run.on_tick(snapshot)


async def generate(
    config: LoadConfig,
    on_tick: Callable[[Snapshot], None] | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> ProcessResult:
    """Run one process's share of a load test on the running loop.

    Args:
        config: what to run.
        on_tick: called with a :class:`Snapshot` every second.
        clock: the clock of the latencies (seconds); the loop's own
            (``loop.time``) in tests on a virtual clock.

    Raises:
        ValueError: for a scenario that cannot be loaded.
        OSError: when the server's name does not resolve.
    """
    run = _Run(config, on_tick, clock)
    scenario = load_scenario(config.scenario) if config.scenario is not None else None
    start = _STARTS[config.workload](run) if config.workload in _STARTS else _nothing
    await run.resolve()
    loop = run.loop
    started = loop.time()
    cpu_started = time.process_time()
    watcher = asyncio.ensure_future(_watch(run))
    tasks = []
    publishers = config.publishers if config.workload == "push" else 0
    for index in range(config.connections + publishers):
        if config.ramp_up is not None and index:
            await _pause(run, started + index / config.ramp_up - loop.time())
        if run.stopped.done():
            break
        if index < config.connections:
            tasks.append(asyncio.ensure_future(_user(run, index, start, scenario)))
        else:
            tasks.append(asyncio.ensure_future(_publish(run, index)))
    if not run.stopped.done():
        remaining = started + config.duration - loop.time()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(run.finished), max(0.0, remaining))
    elapsed = loop.time() - started - (config.warmup if config.warmup < config.duration else 0)
    run.stop_sending()
    run.stopped.set_result(None)
    cpu_seconds = time.process_time() - cpu_started
    await asyncio.gather(watcher, *tasks, return_exceptions=True)
    run.latency.flush()
    histograms = {}
    for name, recorder in run.recorders.items():
        recorder.flush()
        if recorder.total.get_total_count():
            histograms[name] = recorder.total.encode().decode()
    return ProcessResult(
        seconds=elapsed,
        cpu_seconds=cpu_seconds,
        sent=run.sent,
        received=run.received,
        bytes_sent=run.bytes_sent or run.sent * len(run.payload),
        bytes_received=run.bytes_received or run.received * len(run.payload),
        handshakes=run.handshakes,
        peak_open=run.peak_open,
        errors=dict(run.errors),
        histograms=histograms,
        timeline=run.timeline,
    )
