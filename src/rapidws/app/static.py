"""Static files for the App: a directory served over plain HTTP, read-only and confined.

::

    app.add_route("/static/{path:path}", StaticFiles("public"))   # under a prefix
    app.add_route("/{path:path}", StaticFiles("public"))          # at the root ("/" too)

:class:`StaticFiles` is an HTTP handler, ``await handler(request, path)``:
``path`` is the route's ``{path:path}`` parameter, percent-decoded once by the
router (:mod:`rapidws.app.routing`), which has already refused bad
percent-encoding and ``%00`` with a 400.

What is served:

- A regular file under the directory, whole, with ``Content-Type`` from
  :func:`mimetypes.guess_type` (a few web types pinned, since system tables
  differ; ``charset=utf-8`` for text and JSON; ``application/octet-stream``
  when unknown) and ``X-Content-Type-Options: nosniff``.
- For a directory, its index file (``index.html``). A directory requested
  without its trailing slash gets a 308 to the slash form, query kept, since
  the relative links of an index page resolve against it. No listings.
- ``ETag`` (``"<size hex>-<mtime_ns hex>"``) and ``Last-Modified``;
  ``If-None-Match`` (weak comparison, ``*``, lists) and, only without it,
  ``If-Modified-Since`` give a 304 (RFC 9110 §13.1.1, §13.1.3, §13.2.2).
  ``Cache-Control: no-cache`` by default: caches keep the file but revalidate.
- ``HEAD`` gets the headers of ``GET``, ``Content-Length`` included, without
  the file being read. Other methods get a 405.

Everything else is a 404 with the App's generic body, never a 403 or a hint
(whether a refused name exists is not revealed):

1. Segment checks on the decoded path: ``.`` and ``..``, empty segments
   (``a//b``, a leading ``/``: an absolute path), backslashes, control
   characters and NUL, drive letters (``C:``) anywhere, and hidden names:
   any segment starting with ``.`` (``.env``, ``.git``, ``.htpasswd``). On
   Windows also ``:`` (alternate data streams), names ending in ``.`` or a
   space, and device names (``NUL``, ``COM1``).
2. Containment: the path is joined to the directory (resolved with
   :func:`os.path.realpath` once, at construction) and resolved again; the
   result must be under the directory (:func:`os.path.commonpath`), and
   the names it passes below the directory must not be hidden either. With
   ``follow_symlinks=True``, symlinks are trusted wherever they point (the
   directory's owner put them there); the requested path itself must still
   stay under the directory, which rule 1 already ensures.
3. Only regular files: no devices, FIFOs or sockets (the file is opened
   non-blocking and without following a last-moment symlink, then checked
   again with ``fstat``).
4. Files larger than ``max_file_size`` (64 MiB by default): the App's
   responses hold their body in memory, so such a file is refused with a 404
   and a warning on the ``rapidws.server`` logger telling the operator why;
   a 413 is about request bodies, and a 500 would page someone for a file
   that is simply not served here (put a CDN or a web server in front).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import mimetypes
import os
import re
import stat
import time
from datetime import datetime, timezone

from ..core.headers import Headers
from ..core.http11 import Request, Response

__all__ = ["StaticFiles"]

logger = logging.getLogger("rapidws.server")

# 64 MiB: a whole file is read into memory per request.
MAX_FILE_SIZE = 64 * 1024 * 1024

_WINDOWS = os.name == "nt"

# Control characters (C0, DEL, C1) and lone surrogates, which no file name we
# serve needs and which some file APIs truncate at or choke on.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# A drive letter: os.path.join() on Windows drops everything before "C:x".
_DRIVE = re.compile("[A-Za-z]:")
# Names that are devices in every directory on Windows, whatever the extension.
_WINDOWS_DEVICE = re.compile(r"(?i)(?:CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(?:\..*)?")
# An entity-tag in If-None-Match (RFC 9110 §8.8.3): opaque-tag, maybe weak.
_ENTITY_TAG = re.compile(r'(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")')

# Types that system tables (mime.types, the Windows registry) get wrong or
# differently: a script served as text/plain is not run with nosniff.
_PINNED_TYPES = {
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",  # RFC 9239
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",  # needed for WebAssembly.instantiateStreaming
    ".txt": "text/plain",
}
# guess_type() reads "x.tar.gz" as a tar with encoding gzip; we serve the
# bytes as they are (no Content-Encoding: a browser would unpack them).
_ENCODING_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}
_UTF8_TYPES = frozenset({"application/javascript", "application/json"})

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    # A FIFO or a device would block the open(); a regular file ignores it.
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    # The path is fully resolved: a symlink there now was put there after
    # the containment check.
    | getattr(os, "O_NOFOLLOW", 0)
)


class _NotServed(Exception):
    """The request gets a 404: nothing to serve, or something refused."""


class StaticFiles:
    """An HTTP handler serving the files of a directory; see the module docstring.

    Mount it on a route ending with a ``{path:path}`` parameter::

        app.add_route("/static/{path:path}", StaticFiles("public"))

    Args:
        directory: the directory to serve; resolved (symlinks included) now.
        index: the file served for a directory, or ``None`` for none (a
            directory is then a 404).
        follow_symlinks: serve files that symlinks lead to outside the
            directory. By default a symlink is followed only when its
            target is inside the directory too.
        max_file_size: the largest file served, in bytes; a larger one is a
            404 and a warning on the ``rapidws.server`` logger.
        cache_control: the ``Cache-Control`` of files served, or ``None``
            to send none. ``no-cache`` (the default) lets caches store a
            file and makes them revalidate it (a 304 when unchanged).

    Raises:
        ValueError: ``directory`` is not a directory, ``index`` is not a
            plain file name, or ``max_file_size`` is negative.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        index: str | None = "index.html",
        follow_symlinks: bool = False,
        max_file_size: int = MAX_FILE_SIZE,
        cache_control: str | None = "no-cache",
    ) -> None:
        root = os.path.realpath(directory)
        if not os.path.isdir(root):
            raise ValueError(f"not a directory: {os.fspath(directory)!r}")
        if index is not None and ("/" in index or not _valid_segments([index])):
            raise ValueError(f"index is a file name, not {index!r}")
        if max_file_size < 0:
            raise ValueError(f"max_file_size is a number of bytes, not {max_file_size}")
        self.directory = root
        self.index = index
        self.follow_symlinks = follow_symlinks
        self.max_file_size = max_file_size
        self.cache_control = cache_control
        # mimetypes reads the system tables on first use; not in two threads at once.
        if not mimetypes.inited:
            mimetypes.init()

    def __repr__(self) -> str:
        return f"StaticFiles({self.directory!r})"

    async def __call__(self, request: Request, path: str = "") -> Response:
        """Answer a ``GET`` or ``HEAD`` for ``path`` (decoded, relative to the directory).

        ``path`` defaults to ``""`` (the directory itself) for a route
        without a parameter, such as the prefix alone.
        """
        # In a thread: resolving, stat() and reading touch the disk, and a
        # file of megabytes (or a slow network file system) would stall every
        # connection of the event loop meanwhile. One hop per request, some
        # tens of microseconds, is small beside a file response.
        return await asyncio.to_thread(self.respond, request, path)

    def respond(self, request: Request, path: str = "") -> Response:
        """Answer a request synchronously: what :meth:`__call__` runs in a thread."""
        if request.method not in ("GET", "HEAD"):
            # Only GET and HEAD are routed here by app.static(); a route with
            # other methods gets the right answer anyway (RFC 9110 §15.5.6).
            return Response(405, "Method Not Allowed\n", [("Allow", "GET, HEAD")])
        try:
            return self._respond(request, path)
        except _NotServed:
            return _not_found()

    def _respond(self, request: Request, path: str) -> Response:
        segments = path.split("/")
        # A trailing slash names a directory: the slash form.
        slash_form = segments[-1] == "" if path else request.path.endswith("/")
        if segments[-1] == "":
            segments.pop()
        if not _valid_segments(segments):
            raise _NotServed
        candidate = os.path.join(self.directory, *segments)
        real = self._resolve(candidate)
        info = _stat(real)
        if stat.S_ISDIR(info.st_mode):
            if not slash_form:
                return _redirect(request)
            if self.index is None:
                raise _NotServed
            # Checked like any file: the index may be a symlink too.
            real = self._resolve(os.path.join(candidate, self.index))
            info = _stat(real)
        elif slash_form:
            raise _NotServed  # "file.html/": a file is no directory (ENOTDIR)
        if not stat.S_ISREG(info.st_mode):
            raise _NotServed
        return self._file_response(request, real)

    def _resolve(self, candidate: str) -> str:
        """Return the real path of ``candidate`` (under the directory) if it may be served."""
        root = self.directory
        try:
            real = os.path.realpath(candidate)
        except (OSError, ValueError):  # ValueError: a NUL, or a name the OS cannot encode
            raise _NotServed from None
        if self.follow_symlinks:
            # The requested path must stay inside; where symlinks lead is trusted.
            if not _inside(root, os.path.normpath(candidate)):
                raise _NotServed
            return real
        if not _inside(root, real):
            raise _NotServed
        # A symlink inside may lead to a hidden name inside (a link to .env).
        relative = os.path.relpath(real, root)
        if relative != "." and not _valid_segments(relative.split(os.sep)):
            raise _NotServed
        return real

    def _file_response(self, request: Request, real: str) -> Response:
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except (OSError, ValueError):
            raise _NotServed from None
        with open(fd, "rb", closefd=True) as file:
            # What is served is what was opened: a file replaced since the
            # stat() above is checked, and described, by its own fstat().
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _NotServed
            if info.st_size > self.max_file_size:
                _too_large(real, info.st_size, self.max_file_size)
            headers = self._validators(info)
            if _not_modified(request.headers, headers["ETag"], info.st_mtime):
                # RFC 9110 §15.4.5: a 304 carries the validators and
                # Cache-Control the 200 would; §8.6: its Content-Length, if
                # any, is the 200's, not the 0 of its empty body.
                headers["Content-Length"] = str(info.st_size)
                return Response(304, b"", headers)
            headers["Content-Type"] = _content_type(real)
            headers["X-Content-Type-Options"] = "nosniff"
            if request.method == "HEAD":
                # RFC 9110 §9.3.2: the GET's headers, without reading the file.
                headers["Content-Length"] = str(info.st_size)
                return Response(200, b"", headers)
            # One more byte than allowed tells a file that grew meanwhile.
            body = file.read(self.max_file_size + 1)
        if len(body) > self.max_file_size:
            _too_large(real, len(body), self.max_file_size)
        return Response(200, body, headers)

    def _validators(self, info: os.stat_result) -> Headers:
        headers = Headers()
        # A strong validator (RFC 9110 §8.8.3): a change of content changes
        # the size or the nanosecond mtime. Not the inode: it differs between
        # the replicas behind a load balancer, and says nothing to a client.
        headers["ETag"] = f'"{info.st_size:x}-{info.st_mtime_ns:x}"'
        last_modified = _http_date(info.st_mtime)
        if last_modified is not None:
            headers["Last-Modified"] = last_modified
        if self.cache_control is not None:
            headers["Cache-Control"] = self.cache_control
        return headers


def _valid_segments(segments: list[str]) -> bool:
    """Tell whether path segments may name something to serve (rule 1)."""
    for segment in segments:
        if (
            not segment  # "a//b", or a leading "/": an absolute path
            or segment[0] == "."  # ".", "..", and hidden names
            or "\\" in segment  # a separator on Windows, and never in our URLs
            or _CONTROL.search(segment)
            or _DRIVE.match(segment)
        ):
            return False
        if _WINDOWS and (
            ":" in segment or segment[-1] in ". " or _WINDOWS_DEVICE.fullmatch(segment)
        ):
            return False
    return True


def _inside(root: str, path: str) -> bool:
    try:
        return os.path.commonpath([root, path]) == root
    except ValueError:  # another drive, on Windows
        return False


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except (OSError, ValueError):  # ValueError: a name the OS cannot encode
        raise _NotServed from None


def _too_large(real: str, size: int, limit: int) -> None:
    logger.warning(
        "static file not served, %d bytes is over max_file_size=%d: %r", size, limit, real
    )
    raise _NotServed


def _not_found() -> Response:
    # The App's own 404, word for word: a refused path looks like a missing one.
    return Response(404, "Not Found\n")


def _redirect(request: Request) -> Response:
    location = request.path + "/"
    query = request.query
    if query:
        location += "?" + query
    # "//host" or "/\host" would send a browser to another host (RFC 3986
    # §4.2). The segment checks make it unreachable; keep it so.
    if location.startswith(("//", "/\\")):
        raise _NotServed
    # RFC 9110 §15.4.9: permanent, and the method is kept.
    return Response(308, "Permanent Redirect\n", [("Location", location)])


def _content_type(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    content_type = _PINNED_TYPES.get(extension)
    if content_type is None:
        guessed, encoding = mimetypes.guess_type(os.path.basename(path))
        if encoding is not None:
            content_type = _ENCODING_TYPES.get(encoding, "application/octet-stream")
        else:
            content_type = guessed or "application/octet-stream"
    if (
        content_type.startswith("text/")
        or content_type in _UTF8_TYPES
        or content_type.endswith("+json")  # JSON is UTF-8 (RFC 8259 §8.1)
    ):
        content_type += "; charset=utf-8"
    return content_type


def _http_date(mtime: float) -> str | None:
    """Return the Last-Modified of a file modified at ``mtime``, or ``None`` if out of range."""
    # RFC 9110 §8.8.2.1: never later than the response itself.
    try:
        moment = datetime.fromtimestamp(min(mtime, time.time()), timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return email.utils.format_datetime(moment, usegmt=True)


def _not_modified(headers: Headers, etag: str, mtime: float) -> bool:
    """Evaluate the preconditions of a GET or HEAD: whether to answer 304."""
    # RFC 9110 §13.2.2: If-None-Match when present, If-Modified-Since only without it.
    if_none_match = headers.get_all("If-None-Match")
    if if_none_match:
        # RFC 9110 §13.1.2: "*" matches any current representation; else
        # weak comparison, so W/"x" matches "x".
        field = ", ".join(if_none_match)
        if field.strip() == "*":
            return True
        return any(tag == etag for tag in _ENTITY_TAG.findall(field))
    if_modified_since = headers.get_all("If-Modified-Since")
    # RFC 9110 §13.1.3: ignored unless one valid HTTP-date.
    if len(if_modified_since) != 1:
        return False
    try:
        since = email.utils.parsedate_to_datetime(if_modified_since[0])
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:  # "-0000": UTC, of unknown origin
        since = since.replace(tzinfo=timezone.utc)
    # Last-Modified has whole seconds: a file modified at 12.7 s was sent as 12 s.
    return int(mtime) <= since.timestamp()
