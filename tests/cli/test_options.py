"""The flags shared by the subcommands: parsed, then turned into keyword arguments."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.cookiejar
import pickle
import ssl
from pathlib import Path

import pytest
import trustme

from rapidws.cli.options import (
    ClientFlags,
    UsageError,
    add_client_options,
    add_server_options,
    client_options,
    save_cookies,
    seconds,
    server_options,
)


def client(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    add_client_options(parser)
    return parser.parse_args(list(argv))


def server(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_options(parser)
    return parser.parse_args(list(argv))


def test_client_defaults() -> None:
    kwargs = client("ws://example.com/")
    options = client_options(kwargs)
    assert options.pop("additional_headers").items() == []
    assert options == {
        "subprotocols": None,
        "origin": None,
        "compression": "deflate",
        "proxy": True,
        "auto_pong": True,
    }


def test_client_flags() -> None:
    args = client(
        "ws://example.com/", "-H", "X-A: 1", "--header", "X-B:2", "-s", "chat", "--subprotocol",
        "v2", "-o", "https://example.com", "--auth", "ann:pw", "--no-compression",
        "--proxy", "socks5h://127.0.0.1:1080", "--max-redirects", "0", "--no-pong", "--http2",
    )  # fmt: skip
    options = client_options(args)
    headers = options.pop("additional_headers")
    assert headers["X-A"] == "1"
    assert headers["X-B"] == "2"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()
    assert options == {
        "subprotocols": ["chat", "v2"],
        "origin": "https://example.com",
        "compression": None,
        "proxy": "socks5h://127.0.0.1:1080",
        "auto_pong": False,
        "http2": True,
        "max_redirects": 0,
    }


def test_client_flags_are_the_parsed_flags() -> None:
    # One field per flag, with the flag's default: nothing added to one alone.
    assert ClientFlags.from_args(client("ws://h/")) == ClientFlags()
    args = client("wss://h/", "-H", "X-A: 1", "-s", "chat", "-k", "--no-compression")
    flags = ClientFlags.from_args(args)
    assert flags == ClientFlags(
        header=("X-A: 1",), subprotocol=("chat",), insecure=True, compression=False
    )
    assert pickle.loads(pickle.dumps(flags)) == flags
    from_flags, from_args = client_options(flags, "wss://h/"), client_options(args)
    assert from_flags.pop("additional_headers").items() == [("X-A", "1")]
    assert from_flags.pop("ssl").verify_mode == ssl.CERT_NONE
    del from_args["additional_headers"], from_args["ssl"]
    assert from_flags == from_args
    parser = argparse.ArgumentParser()
    add_client_options(parser, compression=False)
    assert ClientFlags.from_args(parser.parse_args([])) == ClientFlags(compression=False)
    assert {action.dest for action in parser._actions} - {"help"} == {
        field.name for field in dataclasses.fields(ClientFlags)
    }


def test_no_proxy() -> None:
    assert client_options(client("ws://h/", "--no-proxy"))["proxy"] is None
    with pytest.raises(SystemExit):
        client("ws://h/", "--no-proxy", "--proxy", "http://p:3128")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-H", "no colon"], "invalid header"),
        (["-H", "X-A: a\r\nEvil: b"], "invalid header"),
        (["--auth", "nocolon"], "USER:PASS"),
        (["--key", "key.pem"], "--key goes with --cert"),
        (["--ca", "/no/such/ca.pem"], "cannot load the TLS files"),
    ],
)
def test_client_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        client_options(client("wss://h/", *argv))


def test_tls_only_for_wss(tmp_path: Path, ca: trustme.CA) -> None:
    assert "ssl" not in client_options(client("ws://h/", "-k"))
    context = client_options(client("WSS://h/", "--insecure"))["ssl"]
    assert (context.check_hostname, context.verify_mode) == (False, ssl.CERT_NONE)
    context = client_options(client("wss://h/"))["ssl"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    # A client certificate whose key is in the same file.
    leaf = ca.issue_cert("client@example.com")
    combined = tmp_path / "client.pem"
    combined.write_bytes(leaf.private_key_pem.bytes() + leaf.cert_chain_pems[0].bytes())
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = client_options(client("wss://h/", "--ca", str(ca_file), "--cert", str(combined)))
    assert context["ssl"].verify_mode == ssl.CERT_REQUIRED


def test_cookie_jar(tmp_path: Path) -> None:
    path = tmp_path / "jar.txt"
    options = client_options(client("ws://h/", "--cookie-jar", str(path)))
    jar = options["cookies"]
    assert isinstance(jar, http.cookiejar.MozillaCookieJar)
    save_cookies(options)  # an empty jar makes a file that loads
    assert client_options(client("ws://h/", "--cookie-jar", str(path)))["cookies"] is not jar
    path.write_text("not a cookie jar\n")
    with pytest.raises(UsageError, match="cannot read"):
        client_options(client("ws://h/", "--cookie-jar", str(path)))
    options["cookies"].filename = str(tmp_path / "missing" / "jar.txt")
    with pytest.raises(UsageError, match="cannot save"):
        save_cookies(options)
    save_cookies({})  # no jar: nothing to do


def test_server_defaults() -> None:
    assert server_options(server()) == {
        "ssl": None,
        "subprotocols": None,
        "compression": "deflate",
        "auto_pong": True,
        "http2": False,
    }
    assert server_options(server("--no-pong"))["auto_pong"] is False
    assert server_options(server("--http2", "--http2-max-streams", "8"))["http2_max_streams"] == 8


def test_server_flags(tmp_path: Path, ca: trustme.CA, server_cert: trustme.LeafCert) -> None:
    cert, key, ca_file = (tmp_path / name for name in ("cert.pem", "key.pem", "ca.pem"))
    server_cert.cert_chain_pems[0].write_to_path(str(cert))
    server_cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    options = server_options(
        server("--tls-cert", str(cert), "--key", str(key), "--ca", str(ca_file), "-s", "chat",
               "--no-compression")
    )  # fmt: skip
    assert options["ssl"].verify_mode == ssl.CERT_REQUIRED  # client certificates
    assert options["subprotocols"] == ["chat"]
    assert options["compression"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--cert", "c.pem"], "go together"), (["--key", "k.pem"], "go together"),
     (["--ca", "ca.pem"], "--ca needs"), (["--http2-max-streams", "8"], "needs --http2")],
)  # fmt: skip
def test_server_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        server_options(server(*argv))


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "soon"])
def test_seconds_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        seconds(text)


def test_seconds() -> None:
    assert seconds("0") == 0.0
    assert seconds("2.5") == 2.5
