"""``rapidws serve --workers N``: N worker processes on one port, and their supervisor.

Each worker is a fork of the supervisor, made after the app is loaded (its
import cost is paid once), that listens on the same port with SO_REUSEPORT:
each has its own accept queue, and the kernel spreads new connections over
them. The supervisor never runs an event loop; it restarts a worker that dies
(at most once a second per worker, so that a crash loop does not spin), and
on SIGTERM or SIGINT passes the signal on to every worker, which drains and
closes as a single server does, and waits for them. A second signal is
passed on too (it cuts the workers' drain short).

Workers share topics only through a broker (``--broker redis://...``):
without one, each has its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

__all__ = ["RESTART_INTERVAL", "reserve_port", "supervise"]

#: The least time between two starts of one worker, in seconds.
RESTART_INTERVAL = 1.0
# Past the workers' drain, how long they have to close before being killed.
_STOP_GRACE = 30.0
# prctl(2) option: the signal a child gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) a SO_REUSEPORT socket: the port stays ours while it is open.

    With port 0, the kernel picks one; the workers then listen on that port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock, int(sock.getsockname()[1])


def supervise(
    workers: int,
    run_worker: Callable[[int], int],
    *,
    drain: float = 0.0,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> int:
    """Run ``run_worker(index)`` in ``workers`` forked processes until a signal.

    Returns 0 once every worker has exited after SIGTERM or SIGINT (1 if a
    worker had to be killed, or exited with an error on the way out).
    """
    context = multiprocessing.get_context("fork")
    processes: dict[int, Any] = {}
    started: dict[int, float] = {}
    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        signals.append(signum)
        for process in processes.values():
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def start(index: int) -> None:
        process = context.Process(
            target=_worker, args=(run_worker, index, os.getpid()), daemon=False
        )
        process.start()
        processes[index] = process
        started[index] = time.monotonic()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(workers):
            start(index)
        while not signals:
            wait([p.sentinel for p in processes.values()], timeout=0.5)
            for index, process in list(processes.items()):
                if process.is_alive() or signals:
                    continue
                log(
                    f"rapidws: worker {index} (pid {process.pid}) exited with "
                    f"{_status(process.exitcode)}; starting it again"
                )
                delay = started[index] + RESTART_INTERVAL - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not signals:
                    start(index)
        return _stop(processes, drain + _STOP_GRACE, log)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(run_worker: Callable[[int], int], index: int, supervisor: int) -> None:
    # In the child: the supervisor's handlers are not this process's, and
    # Ctrl-C on a terminal reaches the supervisor only, which passes it on
    # once (a second signal means "hurry").
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setpgrp()
    _exit_with(supervisor)
    sys.exit(run_worker(index))


def _exit_with(supervisor: int) -> None:
    # A supervisor killed with SIGKILL cannot stop its workers: the kernel
    # sends them SIGTERM then (Linux's PR_SET_PDEATHSIG), and they drain.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def _stop(processes: dict[int, Any], grace: float, log: Callable[[str], None]) -> int:
    deadline = time.monotonic() + grace
    status = 0
    for index, process in processes.items():
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log(f"rapidws: worker {index} (pid {process.pid}) did not stop in time: killed")
            process.kill()
            process.join()
            status = 1
        elif process.exitcode != 0:
            status = 1
    return status


def _status(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {signal.Signals(-exitcode).name}"
    return f"status {exitcode}"
