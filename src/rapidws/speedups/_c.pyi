"""The C twin of :mod:`rapidws.speedups.pure`; see it for the documentation."""

from typing import Any

# The same classes as the reference twin, to the type checker.
from .pure import ConnectionCore as ConnectionCore
from .pure import ProtocolCore as ProtocolCore

__all__ = [
    "DIRECT_READ_MIN",
    "JOIN_LIMIT",
    "ConnectionCore",
    "MessageBuffer",
    "ProtocolCore",
    "Utf8Validator",
    "accept_key",
    "add_header",
    "append_unmasked",
    "apply_mask",
    "encode_frame",
    "parse_frame_header",
    "parse_head",
    "parse_request_line",
    "read_messages",
    "serialize_head",
    "set_open_state",
]

DIRECT_READ_MIN: int
JOIN_LIMIT: int
HEADER_NAMES: dict[str, tuple[str, str]]
HEADER_NAMES_MAX: int
HEADER_VALUES: dict[str, str]
HEADER_VALUES_MAX: int
SHARED_NAME_LENGTH: int
SHARED_VALUE_LENGTH: int
SHARED_VALUE_NAMES: frozenset[str]

def add_header(
    items: list[str], index: dict[str, str | list[str]] | None, name: str, value: str
) -> None: ...
def parse_head(
    data: bytes,
    end: int,
    max_line: float | None,
    max_headers: float | None,
    max_header_bytes: float | None,
    /,
) -> tuple[bytes, list[str], dict[str, str | list[str]]]: ...
def parse_request_line(line: bytes, /) -> tuple[str, str, tuple[int, int]]: ...
def accept_key(key: str, /) -> str: ...
def serialize_head(start_line: str, items: list[str], body: bytes, /) -> bytes: ...
def set_open_state(state: object) -> None: ...
def append_unmasked(
    dst: bytearray,
    src: bytes | bytearray | memoryview,
    start: int,
    end: int,
    mask: bytes | None,
    offset: int,
) -> None: ...
def apply_mask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes: ...
def encode_frame(
    first: int, payload: str | bytes | bytearray | memoryview, mask: bytes | None = None
) -> bytes: ...
def read_messages(
    buf: bytes | bytearray, pos: int, masked: bool, limit: int, events: list[Any]
) -> int: ...
def parse_frame_header(
    buf: bytes | bytearray, pos: int
) -> tuple[int, int, int, bytes | None, int] | None: ...

class Utf8Validator:
    def validate(self, data: bytes | bytearray | memoryview, final: bool = False) -> bool: ...
    def reset(self) -> None: ...

class MessageBuffer:
    def __init__(self, size: int) -> None: ...
    @property
    def filled(self) -> int: ...
    def append(
        self,
        src: bytes | bytearray | memoryview,
        start: int,
        end: int,
        mask: bytes | None,
        offset: int,
    ) -> None: ...
    def finish(self) -> bytes: ...
    def reserve(self, n: int) -> memoryview: ...
    def commit(self, nbytes: int, mask: bytes | None, offset: int) -> None: ...
