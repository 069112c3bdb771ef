"""rapidws.app.static: files served with their types and validators, and nothing else.

Unit tests call the handler directly; the others go through an App over real
sockets, with http.client, and with raw bytes for the targets a client would
clean up before sending.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from rapidws import App
from rapidws.app.static import StaticFiles
from rapidws.asyncio.server import Server
from rapidws.core.headers import Headers
from rapidws.core.http11 import Request, Response

from ..asyncio.utils import RawPeer

SECRET = b"TOP SECRET, never served"
INDEX = b"<!doctype html><title>home</title><script src=app.js></script>\n"
SUB_INDEX = b"<!doctype html><title>sub</title>\n"
PAGE = b"<!doctype html><title>page</title>\n"
UNICODE_NAME = "hello world \u00e9\u00e8.txt"  # requested as hello%20world%20%C3%A9%C3%A8.txt
UNICODE_TARGET = "hello%20world%20%C3%A9%C3%A8.txt"

needs_symlinks = pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges")


@pytest.fixture
def public(tmp_path: Path) -> Path:
    """The served directory, with secrets beside it that must stay unreachable.

    tmp_path/
        secret                      outside: /../secret must not reach it
        outside/secret              outside: a directory symlinked from inside
        public/
            index.html app.js style.css data.json blob.unknown-extension image.png archive.tar.gz
            hello world éè.txt
            .env  .git/config        hidden
            sub/index.html sub/page.html
            empty/file.txt           a directory without index
            link-out -> ../outside   link-out-file -> ../secret
            link-in -> sub/page.html  link-dir-in -> sub  link-hidden -> .env
    """
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(SECRET)
    root = tmp_path / "public"
    root.mkdir()
    (root / "index.html").write_bytes(INDEX)
    (root / "app.js").write_bytes(b"console.log('hi')\n")
    (root / "style.css").write_bytes(b"body { color: red }\n")
    (root / "data.json").write_bytes(b'{"a": 1}\n')
    (root / "blob.unknown-extension").write_bytes(b"\x00\x01\x02")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "archive.tar.gz").write_bytes(b"\x1f\x8b")
    (root / UNICODE_NAME).write_bytes("caf\u00e9\n".encode())
    (root / ".env").write_bytes(SECRET)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(SECRET)
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_bytes(SUB_INDEX)
    (root / "sub" / "page.html").write_bytes(PAGE)
    (root / "empty").mkdir()
    (root / "empty" / "file.txt").write_bytes(b"file\n")
    if sys.platform != "win32":
        (root / "link-out").symlink_to(tmp_path / "outside", target_is_directory=True)
        (root / "link-out-file").symlink_to(tmp_path / "secret")
        (root / "link-in").symlink_to("sub/page.html")
        (root / "link-dir-in").symlink_to("sub", target_is_directory=True)
        (root / "link-hidden").symlink_to(".env")
    return root


def get(
    handler: StaticFiles,
    path: str,
    target: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
) -> Response:
    """Call the handler's synchronous core, as the router would have after matching."""
    request = Request(method, "/" + path if target is None else target, Headers(headers or []))
    return handler.respond(request, path)


# Construction.


def test_directory_must_exist_and_be_a_directory(tmp_path: Path, public: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        StaticFiles(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a directory"):
        StaticFiles(public / "index.html")


@pytest.mark.parametrize("index", ["", "../index.html", "a/b.html", ".index", "a\\b"])
def test_index_must_be_a_plain_name(public: Path, index: str) -> None:
    with pytest.raises(ValueError, match="index"):
        StaticFiles(public, index=index)


def test_max_file_size_must_not_be_negative(public: Path) -> None:
    with pytest.raises(ValueError, match="max_file_size"):
        StaticFiles(public, max_file_size=-1)


@needs_symlinks
def test_directory_is_resolved_once(tmp_path: Path, public: Path) -> None:
    (tmp_path / "current").symlink_to(public, target_is_directory=True)
    handler = StaticFiles(tmp_path / "current")
    assert handler.directory == os.path.realpath(public)
    assert get(handler, "index.html").body == INDEX


# Serving files.


async def test_handler_is_awaitable_and_serves_a_file(public: Path) -> None:
    handler = StaticFiles(public)
    response = await handler(Request("GET", "/app.js", Headers()), "app.js")
    assert response.status == 200
    assert response.body == b"console.log('hi')\n"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("image.png", "image/png"),
        ("blob.unknown-extension", "application/octet-stream"),
        ("archive.tar.gz", "application/gzip"),
        ("empty/file.txt", "text/plain; charset=utf-8"),
    ],
)
def test_content_type(public: Path, path: str, content_type: str) -> None:
    response = get(StaticFiles(public), path)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Encoding" not in response.headers
    assert response.body == (public / path).read_bytes()


def test_validators_and_cache_control(public: Path) -> None:
    info = (public / "app.js").stat()
    response = get(StaticFiles(public), "app.js")
    assert response.headers["ETag"] == f'"{info.st_size:x}-{info.st_mtime_ns:x}"'
    last_modified = email.utils.parsedate_to_datetime(response.headers["Last-Modified"])
    assert int(last_modified.timestamp()) == int(info.st_mtime)
    assert response.headers["Last-Modified"].endswith(" GMT")
    assert response.headers["Cache-Control"] == "no-cache"


def test_cache_control_is_configurable(public: Path) -> None:
    response = get(StaticFiles(public, cache_control="public, max-age=3600"), "app.js")
    assert response.headers["Cache-Control"] == "public, max-age=3600"
    assert "Cache-Control" not in get(StaticFiles(public, cache_control=None), "app.js").headers


def test_etag_changes_with_the_file(public: Path) -> None:
    handler = StaticFiles(public)
    before = get(handler, "app.js").headers["ETag"]
    info = (public / "app.js").stat()
    os.utime(public / "app.js", ns=(info.st_atime_ns, info.st_mtime_ns + 1))
    assert get(handler, "app.js").headers["ETag"] != before


def test_last_modified_in_the_future_is_now_at_most(public: Path) -> None:
    future = 4_000_000_000  # 2096
    os.utime(public / "app.js", (future, future))
    response = get(StaticFiles(public), "app.js")
    sent = email.utils.parsedate_to_datetime(response.headers["Last-Modified"])
    assert sent.timestamp() < future


def test_unicode_and_space_in_name(public: Path) -> None:
    response = get(StaticFiles(public), UNICODE_NAME, target="/" + UNICODE_TARGET)
    assert response.status == 200
    assert response.body == "caf\u00e9\n".encode()


def test_directory_serves_its_index(public: Path) -> None:
    handler = StaticFiles(public)
    assert get(handler, "", target="/").body == INDEX
    assert get(handler, "sub/").body == SUB_INDEX
    assert get(handler, "sub/").headers["Content-Type"] == "text/html; charset=utf-8"


def test_directory_without_index_is_not_listed(public: Path) -> None:
    assert get(StaticFiles(public), "empty/").status == 404
    assert get(StaticFiles(public, index=None), "sub/").status == 404
    assert get(StaticFiles(public, index="page.html"), "sub/").body == PAGE


def test_directory_without_slash_redirects_keeping_the_query(public: Path) -> None:
    handler = StaticFiles(public)
    response = get(handler, "sub", target="/static/sub?v=1&x=%20")
    assert response.status == 308
    assert response.headers["Location"] == "/static/sub/?v=1&x=%20"
    # The prefix alone, routed without a parameter: the root directory.
    response = get(handler, "", target="/static")
    assert response.status == 308
    assert response.headers["Location"] == "/static/"
    # Even a directory without index: the redirect says nothing more than a 404.
    assert get(handler, "empty").status == 308


def test_head_has_the_headers_without_reading(public: Path) -> None:
    response = get(StaticFiles(public), "app.js", method="HEAD")
    assert response.status == 200
    assert response.body == b""
    assert response.headers["Content-Length"] == str((public / "app.js").stat().st_size)
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"


def test_other_methods_get_405(public: Path) -> None:
    response = get(StaticFiles(public), "app.js", method="POST")
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD"


def test_file_over_the_limit_is_404_with_a_warning(
    public: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (public / "ten.bin").write_bytes(b"x" * 10)
    (public / "eleven.bin").write_bytes(b"x" * 11)
    handler = StaticFiles(public, max_file_size=10)
    assert get(handler, "ten.bin").status == 200
    with caplog.at_level(logging.WARNING, logger="rapidws.server"):
        response = get(handler, "eleven.bin")
    assert response.status == 404
    assert response.body == b"Not Found\n"
    [record] = caplog.records
    assert record.name == "rapidws.server"
    assert "max_file_size=10" in record.getMessage()
    # HEAD and conditional requests are refused alike.
    assert get(handler, "eleven.bin", method="HEAD").status == 404


# Conditional requests.


def etag_of(handler: StaticFiles, path: str) -> str:
    return get(handler, path).headers["ETag"]


@pytest.mark.parametrize(
    "if_none_match",
    [
        "{etag}",
        "W/{etag}",  # weak comparison (RFC 9110 section 13.1.2)
        '"other", {etag}',
        '"other",{etag} , "more"',
        "*",
        ' "a,b" , {etag}',  # a comma inside an entity-tag
    ],
)
def test_if_none_match_gives_304(public: Path, if_none_match: str) -> None:
    handler = StaticFiles(public)
    etag = etag_of(handler, "app.js")
    response = get(handler, "app.js", headers=[("If-None-Match", if_none_match.format(etag=etag))])
    assert response.status == 304
    assert response.body == b""
    assert response.headers["ETag"] == etag
    assert response.headers["Cache-Control"] == "no-cache"
    # RFC 9110 section 8.6: the 200's length, not the 0 of the empty body.
    assert response.headers["Content-Length"] == str((public / "app.js").stat().st_size)


def test_if_none_match_in_several_fields(public: Path) -> None:
    handler = StaticFiles(public)
    etag = etag_of(handler, "app.js")
    headers = [("If-None-Match", '"other"'), ("If-None-Match", etag)]
    assert get(handler, "app.js", headers=headers).status == 304


@pytest.mark.parametrize("if_none_match", ['"other"', "garbage", '""', "W/", "{bare}"])
def test_if_none_match_other_tag_gives_200(public: Path, if_none_match: str) -> None:
    handler = StaticFiles(public)
    bare = etag_of(handler, "app.js").strip('"')
    headers = [("If-None-Match", if_none_match.format(bare=bare))]
    assert get(handler, "app.js", headers=headers).status == 200


def test_if_modified_since(public: Path) -> None:
    handler = StaticFiles(public)
    last_modified = get(handler, "app.js").headers["Last-Modified"]
    mtime = int((public / "app.js").stat().st_mtime)
    earlier = email.utils.formatdate(mtime - 10, usegmt=True)
    later = email.utils.formatdate(mtime + 10, usegmt=True)
    for since, status in [
        (last_modified, 304),
        (later, 304),
        (earlier, 200),
        ("not a date", 200),
        ("", 200),
    ]:
        response = get(handler, "app.js", headers=[("If-Modified-Since", since)])
        assert response.status == status, since
    # Two fields: not one valid HTTP-date (RFC 9110 section 13.1.3), ignored.
    headers = [("If-Modified-Since", last_modified), ("If-Modified-Since", last_modified)]
    assert get(handler, "app.js", headers=headers).status == 200


def test_if_none_match_wins_over_if_modified_since(public: Path) -> None:
    # RFC 9110 section 13.2.2: If-Modified-Since is ignored when If-None-Match is present.
    handler = StaticFiles(public)
    last_modified = get(handler, "app.js").headers["Last-Modified"]
    headers = [("If-None-Match", '"other"'), ("If-Modified-Since", last_modified)]
    assert get(handler, "app.js", headers=headers).status == 200


def test_conditional_request_on_index(public: Path) -> None:
    handler = StaticFiles(public)
    etag = get(handler, "sub/").headers["ETag"]
    assert get(handler, "sub/", headers=[("If-None-Match", etag)]).status == 304


# What is never served.


HOSTILE_PATHS = [
    "..",
    "../secret",
    "../public/index.html",  # back in: still refused
    "sub/../../secret",
    "sub/../index.html",
    "./index.html",
    "sub/./page.html",
    "sub//page.html",
    "sub/page.html//",
    "/etc/passwd",
    "//etc/passwd",
    "..\\..\\secret",
    "sub\\page.html",
    "C:\\windows",
    "C:/windows",
    "c:secret",
    "sub/C:",
    "index.html\x00.png",
    "\x00",
    "index.html\n",
    "\x01",
    "sub/page\x7f.html",
    "\x85",
    ".env",
    "%2e%2e/secret",  # the router decoded once already: this is a literal name
    ".git/config",
    ".git/",
    ".git",
    "sub/.hidden",
    "missing.html",
    "sub/missing/",
    "index.html/",  # a file is not a directory
    "index.html/x",
    "\udcff",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_path_is_404(public: Path, path: str) -> None:
    for handler in StaticFiles(public), StaticFiles(public, follow_symlinks=True):
        response = get(handler, path, target="/static/x")
        assert response.status == 404, (path, handler.follow_symlinks)
        assert response.body == b"Not Found\n"
        assert "Location" not in response.headers


@needs_symlinks
@pytest.mark.parametrize(
    "path", ["link-out/secret", "link-out/", "link-out", "link-out-file", "link-hidden"]
)
def test_symlink_out_is_404(public: Path, path: str) -> None:
    assert get(StaticFiles(public), path).status == 404


@needs_symlinks
def test_symlink_inside_is_served(public: Path) -> None:
    handler = StaticFiles(public)
    assert get(handler, "link-in").body == PAGE
    assert get(handler, "link-dir-in/page.html").body == PAGE
    assert get(handler, "link-dir-in/").body == SUB_INDEX
    assert get(handler, "link-dir-in").status == 308


@needs_symlinks
def test_index_symlinked_out_is_404(tmp_path: Path, public: Path) -> None:
    (public / "empty" / "index.html").symlink_to(tmp_path / "secret")
    assert get(StaticFiles(public), "empty/").status == 404


@needs_symlinks
def test_follow_symlinks_trusts_links_but_not_paths(public: Path) -> None:
    handler = StaticFiles(public, follow_symlinks=True)
    assert get(handler, "link-out/secret").body == SECRET
    assert get(handler, "link-out-file").body == SECRET
    assert get(handler, "link-out/").status == 404  # no index there, and no listing
    # The path itself is still confined and hidden names still refused.
    assert get(handler, "link-out/../secret").status == 404
    assert get(handler, "link-out/../../secret").status == 404
    assert get(handler, ".env").status == 404


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_404_without_blocking(public: Path) -> None:
    os.mkfifo(public / "pipe")
    assert get(StaticFiles(public), "pipe").status == 404


# Over real sockets.


def make_app(public: Path, **options: Any) -> App:
    app = App()

    @app.get("/healthz")
    def health(request: Request) -> str:
        return "ok\n"

    static = StaticFiles(public, **options)
    # What app.static("/static", public) adds, then app.static("/", public).
    app.add_route("/static", static)
    app.add_route("/static/{path:path}", static)
    app.add_route("/{path:path}", static)
    return app


@asynccontextmanager
async def served(public: Path, **options: Any) -> AsyncIterator[Server]:
    async with make_app(public, **options).serve("127.0.0.1", 0) as server:
        yield server


def http_request(
    port: int, target: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A request from a real HTTP client, http.client (run in a thread)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, target, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


async def fetch(
    server: Server, target: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(http_request, server.port, target, method, headers)


async def raw_get(server: Server, target: bytes) -> Any:
    peer = await RawPeer.connect(port=server.port)
    try:
        peer.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        return await peer.read_response()
    finally:
        await peer.close()


async def test_serves_files_over_http(public: Path) -> None:
    async with served(public) as server:
        status, headers, body = await fetch(server, "/static/app.js")
        assert status == 200
        assert body == b"console.log('hi')\n"
        assert headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Content-Length"] == str(len(body))

        status, headers, body = await fetch(server, "/style.css")
        assert (status, headers["Content-Type"]) == (200, "text/css; charset=utf-8")

        status, _, body = await fetch(server, "/static/" + UNICODE_TARGET)
        assert (status, body) == (200, "caf\u00e9\n".encode())

        # Routes of their own are not shadowed by the root mount.
        assert (await fetch(server, "/healthz"))[2] == b"ok\n"


async def test_index_and_trailing_slash_over_http(public: Path) -> None:
    async with served(public) as server:
        assert (await fetch(server, "/"))[:3:2] == (200, INDEX)
        assert (await fetch(server, "/static/"))[:3:2] == (200, INDEX)
        assert (await fetch(server, "/static/sub/"))[:3:2] == (200, SUB_INDEX)
        for target, location in [
            ("/static", "/static/"),
            ("/static?v=2", "/static/?v=2"),
            ("/static/sub", "/static/sub/"),
            ("/static/sub?a=1&b=%2F", "/static/sub/?a=1&b=%2F"),
            ("/sub", "/sub/"),
        ]:
            status, headers, _ = await fetch(server, target)
            assert (status, headers["Location"]) == (308, location), target
        assert (await fetch(server, "/static/empty/"))[0] == 404


async def test_head_over_http(public: Path) -> None:
    async with served(public) as server:
        status, headers, body = await fetch(server, "/static/index.html", "HEAD")
        assert status == 200
        assert body == b""
        assert headers["Content-Length"] == str(len(INDEX))
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert "ETag" in headers


async def test_304_over_http(public: Path) -> None:
    async with served(public) as server:
        status, headers, _ = await fetch(server, "/static/app.js")
        etag, last_modified = headers["ETag"], headers["Last-Modified"]

        status, headers, body = await fetch(
            server, "/static/app.js", headers={"If-None-Match": etag}
        )
        assert (status, body, headers["ETag"]) == (304, b"", etag)

        status, _, body = await fetch(
            server, "/static/app.js", headers={"If-Modified-Since": last_modified}
        )
        assert (status, body) == (304, b"")

        status, _, body = await fetch(server, "/static/app.js", headers={"If-None-Match": '"x"'})
        assert (status, body) == (200, b"console.log('hi')\n")

        status, _, body = await fetch(
            server, "/static/app.js", "HEAD", headers={"If-None-Match": etag}
        )
        assert (status, body) == (304, b"")


def several_requests(port: int, requests: list[tuple[str, dict[str, str]]]) -> list[Any]:
    """Send requests one after another on one http.client connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        answers = []
        for target, headers in requests:
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
            answers.append((response.status, response.read()))
        return answers
    finally:
        connection.close()


async def test_304_content_length_does_not_desync_the_connection(public: Path) -> None:
    # The 304 says the 200's Content-Length (RFC 9110 section 8.6) and has no
    # body (RFC 9112 section 6.3): the next response on the connection is intact.
    async with served(public) as server:
        etag = (await fetch(server, "/static/app.js"))[1]["ETag"]
        answers = await asyncio.to_thread(
            several_requests,
            server.port,
            [("/static/app.js", {"If-None-Match": etag}), ("/static/style.css", {})],
        )
        assert answers == [(304, b""), (200, b"body { color: red }\n")]


# Each hostile target as sent on the wire, and what answers it: the router's
# 400 for what is not a valid path, the handler's 404 for the rest.
HOSTILE_TARGETS = [
    (b"/../secret", 404),
    (b"/%2e%2e/secret", 404),
    (b"/%2E%2E%2Fsecret", 404),
    (b"/..%2fsecret", 404),
    (b"/sub/../../secret", 404),
    (b"/static/../secret", 404),
    (b"/static/..%2f..%2fsecret", 404),
    (b"/static/..%5c..%5csecret", 404),
    (b"/static/..\\..\\secret", 404),
    (b"//etc/passwd", 404),
    (b"/static//etc/passwd", 404),
    (b"/static/%2fetc%2fpasswd", 404),
    (b"/static/C:%5cwindows", 404),
    (b"/static/C:/windows", 404),
    (b"/static/.env", 404),
    (b"/.env", 404),
    (b"/%2eenv", 404),
    (b"/static/.git/config", 404),
    (b"/static/link-out/secret", 404),
    (b"/static/link-out-file", 404),
    (b"/static/link-hidden", 404),
    (b"/static/%01", 404),
    (b"/static/sub/%2e/page.html", 404),
    (b"http://x/static/../secret", 404),  # absolute-form
    (b"/static/index.html%00.png", 400),  # the router refuses a NUL
    (b"/static/%00", 400),
    (b"/static/%zz", 400),  # bad percent-encoding
    (b"/static/%", 400),
    (b"/static/%FF", 400),  # not UTF-8
    (b"/static/%C0%AE%C0%AE/secret", 400),  # overlong "..", not UTF-8
]


async def test_hostile_targets_over_raw_sockets(public: Path) -> None:
    async with served(public) as server:
        for target, status in HOSTILE_TARGETS:
            response = await raw_get(server, target)
            assert response.status == status, target
            assert SECRET not in response.body
            assert "location" not in response.headers
            if status == 404:
                assert response.body == b"Not Found\n", target


async def test_follow_symlinks_over_raw_sockets(public: Path) -> None:
    async with served(public, follow_symlinks=True) as server:
        assert (await raw_get(server, b"/static/link-out/secret")).body == SECRET
        for target in [b"/static/link-out/../secret", b"/static/link-out/..%2f..%2fsecret"]:
            assert (await raw_get(server, target)).status == 404


async def test_mounted_app_redirects_under_its_prefix(public: Path) -> None:
    site = App()
    site.add_route("/{path:path}", StaticFiles(public))
    app = App()
    app.mount("/site", site)
    async with app.serve("127.0.0.1", 0) as server:
        assert (await fetch(server, "/site/app.js"))[0] == 200
        status, headers, _ = await fetch(server, "/site/sub")
        assert (status, headers["Location"]) == (308, "/site/sub/")
        assert (await fetch(server, "/site/"))[2] == INDEX
        status, headers, _ = await fetch(server, "/site")  # the router's own redirect
        assert (status, headers["Location"]) == (308, "/site/")
