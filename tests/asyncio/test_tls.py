"""wss:// with certificates from a private CA made by trustme."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
import trustme

import rapidws
from rapidws import InvalidResponse

from .utils import Recorder, echo, wait


@pytest.fixture
def mutual_server_context(
    ca: trustme.CA, server_context: ssl.SSLContext
) -> Iterator[ssl.SSLContext]:
    server_context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_context)
    yield server_context


async def test_wss_echo(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0, ssl=server_context) as server:
        for host in ["localhost", "127.0.0.1"]:
            async with rapidws.connect(f"wss://{host}:{server.port}/", ssl=client_context) as ws:
                sws = await recorder.get()
                assert ws.transport is not None
                assert ws.transport.get_extra_info("ssl_object") is not None
                await ws.send("secret")
                assert await wait(sws.recv()) == "secret"
                await sws.send(b"\x00" * 100_000)
                assert await wait(ws.recv()) == b"\x00" * 100_000
            # The closing handshake completes over TLS too.
            assert ws.close_code == 1000
            await wait(sws.wait_closed())
            assert sws.close_code == 1000


async def test_wss_handler_echo_and_server_close(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server = await rapidws.serve(echo, "127.0.0.1", 0, ssl=server_context)
    ws = await rapidws.connect(f"wss://localhost:{server.port}/", ssl=client_context)
    for message in ["text", b"binary"]:
        await ws.send(message)
        assert await wait(ws.recv()) == message
    server.close()
    await wait(server.wait_closed())
    await wait(ws.wait_closed())
    assert ws.close_code == 1001


async def test_default_context_refuses_private_ca(server_context: ssl.SSLContext) -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            await wait(rapidws.connect(f"wss://localhost:{server.port}/"))


async def test_host_name_is_checked(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            await wait(
                rapidws.connect(
                    f"wss://127.0.0.1:{server.port}/",
                    ssl=client_context,
                    server_hostname="other.example.com",
                )
            )


async def test_sni(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    names: list[str | None] = []

    def sni_callback(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name)

    server_context.sni_callback = sni_callback
    async with rapidws.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
        async with rapidws.connect(f"wss://localhost:{server.port}/", ssl=client_context) as ws:
            assert ws.transport is not None
            assert ws.transport.get_extra_info("ssl_object").server_hostname == "localhost"
            await ws.send("sni")
            assert await wait(ws.recv()) == "sni"
        # server_hostname overrides the URI's host for SNI and the certificate check.
        async with rapidws.connect(
            f"wss://127.0.0.1:{server.port}/", ssl=client_context, server_hostname="localhost"
        ) as ws:
            assert ws.transport is not None
            assert ws.transport.get_extra_info("ssl_object").server_hostname == "localhost"
    assert names == ["localhost", "localhost"]


async def test_client_certificate_accepted(
    ca: trustme.CA, mutual_server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    ca.issue_cert("client@example.com").configure_cert(client_context)
    recorder = Recorder()
    async with (
        rapidws.serve(recorder, "127.0.0.1", 0, ssl=mutual_server_context) as server,
        rapidws.connect(f"wss://localhost:{server.port}/", ssl=client_context) as ws,
    ):
        sws = await recorder.get()
        peercert = sws.transport.get_extra_info("peercert")
        assert peercert is not None
        assert ("email", "client@example.com") in peercert["subjectAltName"]
        await ws.send("authenticated")
        assert await wait(sws.recv()) == "authenticated"


async def test_client_without_certificate_refused(
    mutual_server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    recorder = Recorder()
    async with rapidws.serve(recorder, "127.0.0.1", 0, ssl=mutual_server_context) as server:
        # With TLS 1.3 the server checks the client's certificate after the
        # client's side of the TLS handshake is done: the server's alert then
        # ends the WebSocket handshake (asyncio reports it as a plain EOF).
        with pytest.raises((ssl.SSLError, InvalidResponse)):
            await wait(rapidws.connect(f"wss://localhost:{server.port}/", ssl=client_context))
        assert recorder.connections.empty()


async def test_plain_client_against_tls_server(server_context: ssl.SSLContext) -> None:
    async with rapidws.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
        with pytest.raises(InvalidResponse):
            await wait(rapidws.connect(f"ws://127.0.0.1:{server.port}/"))
