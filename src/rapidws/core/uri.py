"""WebSocket URIs (RFC 6455 section 3)."""

from __future__ import annotations

import dataclasses
from urllib.parse import quote, unquote, urlsplit

from ..exceptions import InvalidURI

__all__ = ["WebSocketURI", "parse_uri"]


@dataclasses.dataclass(frozen=True)
class WebSocketURI:
    """A parsed ``ws://`` or ``wss://`` URI.

    Attributes:
        secure: ``True`` for ``wss://``.
        host: the host name or address, without brackets for IPv6.
        port: the port, defaulting to 80 or 443.
        resource: the path and query to send in the request line,
            percent-encoded where needed.
        user_info: the user name and password of the URI, if any; the client
            sends them with HTTP Basic authentication.
    """

    secure: bool
    host: str
    port: int
    resource: str
    user_info: tuple[str, str] | None = None

    @property
    def host_header(self) -> str:
        """The value of the ``Host`` header: the port only when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_uri(uri: str) -> WebSocketURI:
    """Parse and check a WebSocket URI.

    Raises:
        InvalidURI: when the scheme is not ws or wss, the host is missing, the
            port is invalid, or the URI has a fragment (RFC 6455 section 3).
    """
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"{uri!r} is not a valid URI: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(f"{uri!r} is not a WebSocket URI: the scheme must be ws or wss")
    if not parts.hostname:
        raise InvalidURI(f"{uri!r} has no host")
    if parts.fragment:
        raise InvalidURI(f"{uri!r} has a fragment, which WebSocket URIs may not have")
    secure = parts.scheme == "wss"
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    # Spaces and non-ASCII would break the request line: encode them, and
    # leave what is encoded already (and the delimiters) as it is.
    resource = quote(resource, safe="!#$%&'()*+,/:;=?@[]~")
    user_info = None
    if parts.username is not None:
        user_info = (unquote(parts.username), unquote(parts.password or ""))
    if port is None:
        port = 443 if secure else 80
    return WebSocketURI(secure, parts.hostname, port, resource, user_info)
