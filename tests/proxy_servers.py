"""Real proxy servers for the client tests, each run on a free 127.0.0.1 port.

- HTTP ``CONNECT`` with Basic authentication: tinyproxy (Debian ``tinyproxy``).
- HTTPS: stunnel (``stunnel4``) terminating TLS in front of tinyproxy, with a
  certificate of the tests' CA.
- SOCKS5 with user name and password: microsocks (``microsocks``).
- SOCKS4 and SOCKS4A: OpenSSH's dynamic forwarding, ``ssh -D``, to an sshd
  run for the test (``openssh-server``, ``openssh-client``). Dante (Debian's
  SOCKS server) speaks SOCKS4 but refuses SOCKS4A host names, and microsocks
  speaks only SOCKS5.

A missing program fails the test with the package to install; it is never
skipped. ``.ci/run`` installs them.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

USER, PASSWORD = "user", "secret"

# Starting a server is bounded: past this, the test fails.
START_TIMEOUT = 20.0 * float(os.environ.get("RAPIDWS_TESTS_TIMEOUT_FACTOR", "1"))


def free_port() -> int:
    """A port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def program(name: str, package: str) -> str:
    """The path of an installed program, or a failure naming its Debian package."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package} (see .ci/run)")
    return path


@contextlib.contextmanager
def running(command: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends, once it listens on ``port``."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"{command[0]} exited with {process.returncode}: {log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{command[0]} not listening after {START_TIMEOUT} s: {log.read_text()}"
                )
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def tinyproxy(directory: Path) -> Iterator[int]:
    """An HTTP proxy that requires USER and PASSWORD; yield its port."""
    binary = program("tinyproxy", "tinyproxy")
    port = free_port()
    config = directory / "tinyproxy.conf"
    # No ConnectPort line: CONNECT to any port (the tests' servers' ports).
    config.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\n"
        f'LogFile "{directory}/tinyproxy.log"\nLogLevel Info\n'
        f"Allow 127.0.0.1\nBasicAuth {USER} {PASSWORD}\nDisableViaHeader Yes\n"
    )
    with running([binary, "-d", "-c", str(config)], port, directory / "tinyproxy.out"):
        yield port


@contextlib.contextmanager
def stunnel(directory: Path, cert: trustme.LeafCert, backend: int) -> Iterator[int]:
    """TLS with ``cert`` in front of 127.0.0.1:``backend``; yield its port."""
    binary = program("stunnel4", "stunnel4")
    port = free_port()
    pem = directory / "stunnel.pem"
    pem.write_bytes(cert.private_key_and_cert_chain_pem.bytes())
    config = directory / "stunnel.conf"
    config.write_text(
        f"foreground = yes\npid =\n[proxy]\naccept = 127.0.0.1:{port}\n"
        f"connect = 127.0.0.1:{backend}\ncert = {pem}\n"
    )
    with running([binary, str(config)], port, directory / "stunnel.out"):
        yield port


@contextlib.contextmanager
def microsocks(directory: Path) -> Iterator[int]:
    """A SOCKS5 proxy that requires USER and PASSWORD; yield its port."""
    binary = program("microsocks", "microsocks")
    port = free_port()
    command = [binary, "-i", "127.0.0.1", "-p", str(port), "-u", USER, "-P", PASSWORD]
    with running(command, port, directory / "microsocks.out"):
        yield port


@contextlib.contextmanager
def ssh_socks(directory: Path) -> Iterator[int]:
    """A SOCKS4, SOCKS4A and SOCKS5 proxy: ``ssh -D`` to a private sshd; yield its port."""
    sshd = program("sshd", "openssh-server")
    ssh = program("ssh", "openssh-client")
    keygen = program("ssh-keygen", "openssh-client")
    for name in ["host", "user"]:
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)], check=True
        )
    shutil.copy(directory / "user.pub", directory / "authorized_keys")
    # sshd refuses to start without its privilege separation directory.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    sshd_port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"Port {sshd_port}\nListenAddress 127.0.0.1\nHostKey {directory}/host\n"
        f"AuthorizedKeysFile {directory}/authorized_keys\nPidFile none\nUsePAM no\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
    )
    port = free_port()
    client = [
        ssh,
        "-F",
        "/dev/null",
        "-N",
        "-D",
        f"127.0.0.1:{port}",
        "-p",
        str(sshd_port),
        "-i",
        str(directory / "user"),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "LogLevel=ERROR",
        f"{getpass.getuser()}@127.0.0.1",
    ]
    with (
        running([sshd, "-D", "-e", "-f", str(config)], sshd_port, directory / "sshd.out"),
        running(client, port, directory / "ssh.out"),
    ):
        yield port
