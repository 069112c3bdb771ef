"""Routes: map a request target and its kind to an endpoint and its path parameters.

Sans-I/O, standard library only. The App calls :meth:`Router.match` in the
handshake hook with the request target as sent (``/ws/J%C3%BCrgen?token=x``)
and gets back one of the small results of :data:`Match`; each carries the HTTP
``status`` it stands for.

Rules:

1. Matching runs on the *encoded* path, so an encoded slash (``%2F``) never
   splits a segment. The path is first normalized as RFC 3986 §6.2.2 allows:
   escapes of unreserved characters are decoded (§2.3, §6.2.2.2), the hex of
   the other escapes is uppercased (§6.2.2.1), and a printable ASCII character
   that may not appear raw in a path (§3.3: a space, ``{``, ``|``...) is
   encoded, as browsers do. Template literals are compiled to the same form,
   so ``/ws/%7Euser`` matches ``/ws/~user`` and ``/caf%C3%A9`` matches
   ``/café``. A reserved character differs from its escape (§2.2): ``/a+b``
   does not match ``/a%2Bb``. Templates are written decoded: a ``%`` in one is
   a literal percent sign.
2. Each parameter is percent-decoded exactly once, after matching, as strict
   UTF-8 (``%2541`` gives ``%41``), then handed to its convertor.
3. Static templates are found with one dict lookup. The dynamic ones of each
   kind hang in a trie keyed by the whole literal segments before their first
   parameter (``/ws/r{i}/{room}`` under ``""``, ``"ws"``). Each branch has one
   regex: the alternation, in registration order, of its templates and of
   those above it, which are all the templates that can match a path reaching
   it; so a path costs one regex of a few alternatives, not of every route.
   The branch is found with one dict lookup of the path up to its last slash,
   else by walking the trie. A branch whose only template is its segments and
   one ``str`` parameter (``/ws/{user}``) takes the rest of the path when it
   is one non-empty segment, without a regex. Each alternative ends with an
   empty marker group. The marker closes last, so ``match.lastindex`` tells which template
   matched, and its parameters are the groups just before it; the offsets
   are computed once.
4. WebSocket and HTTP routes share one path space, looked up per kind: an
   upgrade goes to the first WebSocket template that matches its path, a
   plain request to the first HTTP one; the other kind only picks the error
   (426 or 404). Static templates come before dynamic ones; among dynamic
   templates that match, the first registered decides, and its methods alone
   make the 405's ``Allow`` set.
5. Dot segments are not resolved (RFC 3986 §5.2.4 is the client's job): they
   are text like any other, and ``/a/{x}`` matches ``/a/..`` with
   ``x=".."``. Code that maps a parameter to a file must check it itself.
6. The router is fixed once it has compiled: on the first
   :meth:`~Router.match` or :meth:`~Router.url_path_for`, or on
   :meth:`~Router.freeze`, which also freezes the routers mounted in it.

Other choices: :meth:`Router.url_path_for` takes the route name
positional-only, so that a parameter may be called ``name``; the marker groups
are unnamed and found with ``lastindex``, an int that indexes the offsets
directly; an upgrade request to a path that has only HTTP routes gets
:class:`NotWebSocket`, a 404 rather than a 405 or 426, because for a
WebSocket client there is no endpoint there.
"""

from __future__ import annotations

import dataclasses
import decimal
import keyword
import math
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeAlias, TypeVar, cast
from urllib.parse import quote, unquote_to_bytes

__all__ = [
    "BadPath",
    "Convertor",
    "Match",
    "Matched",
    "MethodNotAllowed",
    "NotFound",
    "NotWebSocket",
    "Redirect",
    "Route",
    "Router",
    "UpgradeRequired",
]

T = TypeVar("T")

# RFC 3986 §2.3: an escape of one of these is the character itself (§6.2.2.2).
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 §3.3: pchar = unreserved / pct-encoded / sub-delims / ":" / "@".
# These are what quote() must keep raw in a segment beyond the unreserved.
_SEGMENT_SAFE = "!$&'()*+,;=:@"
# A path without any other character is already normalized: the common case
# costs one scan in C, and no match object.
_NOT_NORMALIZED = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/]")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE_OR_RAW = re.compile(r"%[0-9A-Fa-f]{2}|[^A-Za-z0-9\-._~!$&'()*+,;=:@/]")
_PARAM = re.compile(r"\{([^{}]*)\}")
# RFC 9110 §5.6.2.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")


# Convertors.


class Convertor(ABC, Generic[T]):
    """Turns the text of a path parameter into a value, and back.

    Pass instances to :class:`Router` under a name, and use the name in
    templates: ``{id:even}``. Built in: ``str`` (the default: one segment),
    ``int`` and ``float`` (non-negative, decimal digits), ``uuid`` (any case,
    gives :class:`uuid.UUID`), ``path`` (the rest of the path, slashes
    included; it must end the template).

    Attributes:
        regex: what the parameter matches in the normalized path (rule 1 of
            the module): unreserved characters appear as themselves, others
            as uppercase ``%XX`` escapes. No capturing groups: use ``(?:...)``.
    """

    regex: str

    @abstractmethod
    def convert(self, value: str) -> T:
        """Return the value of a parameter.

        Args:
            value: the parameter's text, percent-decoded.

        Raises:
            ValueError: ``value`` is not a valid value: the path is not found.
        """

    @abstractmethod
    def to_string(self, value: T) -> str:
        """Return the text of a value, before percent-encoding.

        Args:
            value: a value that :meth:`convert` could have returned.
        """


class _StrConvertor(Convertor[str]):
    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _PathConvertor(_StrConvertor):
    regex = ".*"


class _IntConvertor(Convertor[int]):
    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


class _FloatConvertor(Convertor[float]):
    regex = r"[0-9]+(?:\.[0-9]+)?"

    def convert(self, value: str) -> float:
        number = float(value)
        if math.isinf(number):  # 400 digits overflow to inf, which no URL means
            raise ValueError(f"{value} is too large")
        return number

    def to_string(self, value: float) -> str:
        # repr() is the shortest text that reads back as the same float, and
        # Decimal writes it without the exponent that the regex has no room for.
        return format(decimal.Decimal(repr(value)), "f")


class _UUIDConvertor(Convertor[uuid.UUID]):
    regex = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def convert(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_string(self, value: uuid.UUID) -> str:
        return str(value)


# The defaults that each Router copies: not a registry, nothing adds to it.
_DEFAULT_CONVERTORS: Mapping[str, Convertor[Any]] = {
    "str": _StrConvertor(),
    "int": _IntConvertor(),
    "float": _FloatConvertor(),
    "uuid": _UUIDConvertor(),
    "path": _PathConvertor(),
}


# Routes and results.


@dataclass(frozen=True, slots=True)
class Route:
    """A route, as :meth:`Router.add` made it.

    Attributes:
        path: the template as written (``/rooms/{room:int}``); for a route
            that came through :meth:`Router.mount`, with the prefix.
        endpoint: what the App calls; the router does not look at it.
        kind: ``"websocket"`` or ``"http"``.
        methods: the HTTP methods it takes, ``HEAD`` added wherever ``GET``
            is (RFC 9110 §9.3.2); ``None`` for any method, and always for a
            WebSocket route.
        name: the name for :meth:`Router.url_path_for`, or ``None``.
        options: the App's settings for this route; the router does not look
            at them.
    """

    path: str
    endpoint: object
    kind: Literal["websocket", "http"]
    methods: frozenset[str] | None = None
    name: str | None = None
    options: object = None


# Not frozen: a frozen dataclass's __init__ costs a microsecond, once per
# request; nothing changes a match after the router returns it.
@dataclass(slots=True)
class Matched:
    """A route takes the request.

    Attributes:
        route: the route.
        params: the path parameters by name, decoded and converted.
        query: the query as sent, without the ``?`` (``""`` when none).
    """

    # Nothing went wrong; the endpoint decides (101 for a WebSocket).
    status: ClassVar[int] = 200
    route: Route
    params: dict[str, object]
    query: str


@dataclass(frozen=True, slots=True)
class NotFound:
    """No route has this path, or a convertor refused a parameter."""

    status: ClassVar[int] = 404


@dataclass(frozen=True, slots=True)
class NotWebSocket:
    """An upgrade request to a path that only HTTP routes have.

    A 404 rather than a 405 or 426: for a WebSocket client, there is no
    endpoint there.
    """

    status: ClassVar[int] = 404


@dataclass(frozen=True, slots=True)
class UpgradeRequired:
    """A plain HTTP request to a path that only a WebSocket route has.

    The response must carry ``Upgrade: websocket`` (RFC 9110 §15.5.22).

    Attributes:
        route: the WebSocket route.
    """

    status: ClassVar[int] = 426
    route: Route


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    """HTTP routes have this path, but not for this method.

    Attributes:
        allowed: the methods they take, for the ``Allow`` header (RFC 9110
            §15.5.6).
    """

    status: ClassVar[int] = 405
    allowed: frozenset[str]


@dataclass(frozen=True, slots=True)
class Redirect:
    """The path with its trailing slash added or removed has a route.

    Only for plain HTTP requests, and only with ``redirect_slashes``.
    Permanent and keeping the method (RFC 9110 §15.4.9).

    Attributes:
        location: the path, normalized, and the query as sent.
    """

    status: ClassVar[int] = 308
    location: str


@dataclass(frozen=True, slots=True)
class BadPath:
    """The request target is not a valid origin-form path.

    Attributes:
        reason: what is wrong, without echoing the target.
    """

    status: ClassVar[int] = 400
    reason: str


Match: TypeAlias = (
    Matched | NotFound | NotWebSocket | UpgradeRequired | MethodNotAllowed | Redirect | BadPath
)

_NOT_FOUND = NotFound()
_NOT_WEBSOCKET = NotWebSocket()


# Templates, compiled.


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    convertor: Convertor[Any]
    # The convertor's regex alone, to check what url_path_for() writes.
    pattern: re.Pattern[str]
    # The convertor gives the text itself (str, path): no call per request.
    verbatim: bool


@dataclass(frozen=True, slots=True)
class _Template:
    """A template: literal text in normalized encoded form, and parameters."""

    pieces: tuple[str | _Param, ...]
    # The regex source; templates with the same one match the same paths.
    pattern: str
    params: tuple[_Param, ...]
    names: tuple[str, ...]
    # Every parameter is its own text (str, path): no convertor to call.
    verbatim: bool
    # The normalized path, for a template without parameters.
    static: str | None

    @classmethod
    def of(cls, pieces: tuple[str | _Param, ...]) -> _Template:
        # re.escape() works character by character, so adjacent literal pieces
        # (a mount prefix and a template's first literal) need no merging.
        pattern = "".join(
            re.escape(piece) if isinstance(piece, str) else f"({piece.convertor.regex})"
            for piece in pieces
        )
        params = tuple(piece for piece in pieces if isinstance(piece, _Param))
        static = None if params else "".join(piece for piece in pieces if isinstance(piece, str))
        names = tuple(param.name for param in params)
        verbatim = all(param.verbatim for param in params)
        return cls(pieces, pattern, params, names, verbatim, static)


@dataclass(frozen=True, slots=True)
class _Entry:
    route: Route
    template: _Template


@dataclass(frozen=True, slots=True)
class _Mount:
    prefix: str
    router: Router


def _encode_literal(text: str) -> str:
    """Write template text in normalized encoded form (rule 1), as UTF-8 escapes."""
    return quote(text, safe=_SEGMENT_SAFE + "/")


def _conflicts(a: _Entry, b: _Entry) -> bool:
    """Tell whether two routes would take the same requests."""
    return (
        a.route.kind == b.route.kind
        and a.template.pattern == b.template.pattern
        and (
            a.route.methods is None
            or b.route.methods is None
            or bool(a.route.methods & b.route.methods)
        )
    )


class _InvalidPath(Exception):
    """The message is the reason of a BadPath."""


def _normalize(path: str) -> str:
    """Normalize a raw path as RFC 3986 §6.2.2.1 and §6.2.2.2 allow (rule 1).

    The caller has found a character that needs it (``_NOT_NORMALIZED``).

    Raises:
        _InvalidPath: the path cannot be normalized, or holds a NUL.
    """
    # The HTTP layer lets only printable ASCII through; the same check here
    # keeps match() safe for any caller.
    if not path.isascii() or not path.isprintable():
        raise _InvalidPath("the path is not printable ASCII")
    if _STRAY_PERCENT.search(path):
        raise _InvalidPath("invalid percent-encoding in the path")
    path = _ESCAPE_OR_RAW.sub(_normalize_one, path)
    # A NUL ends a string in C and in most file APIs; no route needs one.
    if "%00" in path:
        raise _InvalidPath("NUL in the path")
    return path


def _normalize_one(match: re.Match[str]) -> str:
    text = match[0]
    if len(text) == 1:
        return f"%{ord(text):02X}"
    char = chr(int(text[1:], 16))
    return char if char in _UNRESERVED else text.upper()


class _Node:
    """The routes of one kind whose templates match the same paths."""

    __slots__ = ("any_method", "by_method", "entries", "template")

    def __init__(self, template: _Template) -> None:
        self.template = template
        self.entries: list[_Entry] = []
        # A WebSocket route, or an HTTP route for any method. Routes that
        # conflict are refused, so it is alone when set.
        self.any_method: _Entry | None = None
        self.by_method: dict[str, _Entry] = {}

    def add(self, entry: _Entry) -> None:
        for other in self.entries:
            if _conflicts(other, entry):
                raise _duplicate(entry.route, other.route)
        self.entries.append(entry)
        if entry.route.methods is None:
            self.any_method = entry
        else:
            self.by_method.update(dict.fromkeys(entry.route.methods, entry))

    def select(self, method: str) -> _Entry | None:
        return self.any_method or self.by_method.get(method)


def _duplicate(route: Route, other: Route) -> ValueError:
    methods = "" if route.methods is None else f" {sorted(route.methods)}"
    return ValueError(
        f"duplicate route: {route.kind}{methods} {route.path!r} takes the same requests as "
        f"{other.path!r}"
    )


class _Branch:
    """A node of the trie of literal segments (rule 3)."""

    __slots__ = ("children", "markers", "nodes", "regex", "tail")

    def __init__(self) -> None:
        self.children: dict[str, _Branch] = {}
        # The nodes whose templates' literal segments lead here, with their
        # registration rank.
        self.nodes: list[tuple[int, _Node]] = []
        # Compiled from the nodes here and above, in registration order.
        self.regex: re.Pattern[str] | None = None
        # Marker group index -> the node and the slice of match.groups()
        # that holds its parameters.
        self.markers: dict[int, tuple[_Node, int, int]] = {}
        # When the only template that can match is this branch's segments and
        # then one str parameter (``/ws/{user}``): the node, and where the
        # parameter starts. The regex is then left unused.
        self.tail: tuple[_Node, int] | None = None

    def compile(self, key: str, above: list[tuple[int, _Node]]) -> None:
        candidates = sorted(above + self.nodes, key=lambda ranked: ranked[0])
        if len(candidates) == 1:
            node = candidates[0][1]
            *literals, last = node.template.pieces
            if (
                isinstance(last, _Param)
                and type(last.convertor) is _StrConvertor
                and all(isinstance(piece, str) for piece in literals)
                and "".join(cast(list[str], literals)) == key
            ):
                self.tail = node, len(key)
        alternatives = []
        group = 0
        for _, node in candidates:
            # Convertor regexes have no groups of their own (Router checks),
            # so this alternative has one group per parameter, then the marker.
            alternatives.append(f"{node.template.pattern}()")
            first, group = group, group + len(node.template.params) + 1
            self.markers[group] = (node, first, group - 1)
        if alternatives:
            self.regex = re.compile("|".join(alternatives))
        for segment, child in self.children.items():
            child.compile(f"{key}{segment}/", candidates)


class _Lookup:
    """The routes of one kind: a dict of static paths, a trie of regexes for the rest."""

    __slots__ = ("branches", "depth", "root", "static", "tails")

    def __init__(self, entries: Iterable[_Entry]) -> None:
        nodes: dict[str, _Node] = {}  # by pattern, in registration order
        for entry in entries:
            pattern = entry.template.pattern
            if pattern not in nodes:
                nodes[pattern] = _Node(entry.template)
            nodes[pattern].add(entry)
        self.static: dict[str, _Node] = {}
        self.root = _Branch()
        self.depth = 0
        # Each branch by its segments joined, with the slash after them:
        # "/ws/" for "", "ws".
        self.branches: dict[str, _Branch] = {}
        for rank, node in enumerate(nodes.values()):
            template = node.template
            if template.static is not None:
                self.static[template.static] = node
                continue
            literal = ""
            for piece in template.pieces:
                if not isinstance(piece, str):
                    break
                literal += piece
            # The whole segments before the first parameter, after the empty
            # one before the leading slash: "/ws/r{i}/{room}" gives "", "ws".
            segments = literal.split("/")[:-1]
            self.depth = max(self.depth, len(segments))
            branch = self.root
            for depth, segment in enumerate(segments, 1):
                branch = branch.children.setdefault(segment, _Branch())
                self.branches["/".join(segments[:depth]) + "/"] = branch
            branch.nodes.append((rank, node))
        self.root.compile("", [])
        # The branches that end in one str parameter, by the same key: the
        # common dynamic route (/ws/{user}) found with one lookup.
        self.tails: dict[str, _Node] = {
            key: branch.tail[0] for key, branch in self.branches.items() if branch.tail is not None
        }

    def find(self, path: str) -> tuple[_Node, tuple[str, ...]] | None:
        """Return the node whose template matches ``path`` first, and its parameters' text."""
        node = self.static.get(path)
        if node is not None:
            return node, ()
        # Only templates whose literal segments are those of the path can
        # match it: those of the deepest branch the path reaches, and above.
        # That is the path up to its last slash when it has a branch (a
        # parameter in the last segment, the common case); else walk.
        cut = path.rfind("/") + 1
        prefix = path[:cut]
        node = self.tails.get(prefix)
        if node is not None:
            text = path[cut:]  # after the last slash: it has none
            return (node, (text,)) if text else None
        branch = self.branches.get(prefix)
        if branch is None:
            branch = self.root
            for segment in path.split("/", self.depth):
                child = branch.children.get(segment)
                if child is None:
                    break
                branch = child
        tail = branch.tail
        if tail is not None:
            # What the regex "<the segments>([^/]+)" does, without a regex.
            node, start = tail
            text = path[start:]
            return (node, (text,)) if text and "/" not in text else None
        regex = branch.regex
        match = None if regex is None else regex.fullmatch(path)
        if match is None:
            return None
        # The marker is the last group to close in the alternative that
        # matched, so lastindex is set.
        node, first, last = branch.markers[match.lastindex]  # type: ignore[index]
        return node, match.groups()[first:last]


@dataclass(frozen=True, slots=True)
class _Tables:
    websocket: _Lookup
    http: _Lookup
    names: dict[str, _Entry]


def _matched(
    entry: _Entry, texts: tuple[str, ...], query: str, escaped: bool
) -> Matched | NotFound | BadPath:
    """Decode and convert the parameters; ``escaped``: the path has a ``%``."""
    template = entry.template
    if template.verbatim and not escaped:
        # The common case: nothing to decode or convert. One parameter is
        # commoner still, and a dict display costs a fifth of dict(zip()).
        names = template.names
        if len(names) == 1:
            return Matched(entry.route, {names[0]: texts[0]}, query)
        return Matched(entry.route, dict(zip(names, texts, strict=True)), query)
    params: dict[str, object] = {}
    for param, raw in zip(template.params, texts, strict=True):
        text = raw
        if "%" in raw:
            try:
                # Decoded exactly once (rule 2): "%2541" is "%41", never "A".
                text = unquote_to_bytes(raw).decode()
            except UnicodeDecodeError:
                return BadPath(f"the {param.name} parameter is not UTF-8")
        if param.verbatim:
            params[param.name] = text
            continue
        try:
            params[param.name] = param.convertor.convert(text)
        except ValueError:
            return _NOT_FOUND
    return Matched(entry.route, params, query)


# The router.


class Router:
    """Routes for WebSocket and HTTP requests, compiled once (see the module docstring).

    Args:
        convertors: convertors to add, or to use instead of the built-in ones
            of the same name, for this router's templates.
        redirect_slashes: whether a plain HTTP request for a path without a
            route, whose twin with the trailing slash added or removed has
            one, gets a :class:`Redirect` there. WebSocket requests never do:
            browsers do not follow redirects for them, and RFC 6455 §4.1 does
            not require clients to.

    Raises:
        ValueError: a convertor's regex does not compile or has a group.
    """

    def __init__(
        self,
        convertors: Mapping[str, Convertor[Any]] | None = None,
        *,
        redirect_slashes: bool = True,
    ) -> None:
        for name, convertor in (convertors or {}).items():
            try:
                groups = re.compile(convertor.regex).groups
            except re.error as exc:
                raise ValueError(f"convertor {name!r}: invalid regex: {exc}") from None
            if groups:
                # They would shift the group offsets of the combined regex.
                raise ValueError(f"convertor {name!r}: use (?:...) rather than groups in its regex")
        self._convertors = {**_DEFAULT_CONVERTORS, **(convertors or {})}
        self._redirect_slashes = redirect_slashes
        self._items: list[_Entry | _Mount] = []
        self._tables: _Tables | None = None

    def add(
        self,
        path: str,
        endpoint: object,
        *,
        kind: Literal["websocket", "http"],
        methods: Iterable[str] | None = None,
        name: str | None = None,
        options: object = None,
    ) -> Route:
        """Add a route.

        Args:
            path: the template: ``/rooms/{room}``, ``/items/{id:int}``. A
                parameter is ``{name}`` or ``{name:convertor}``, its name a
                Python identifier; the rest is literal text, written decoded.
            endpoint: what the App calls.
            kind: ``"websocket"`` or ``"http"``.
            methods: for an HTTP route, the methods it takes (case-sensitive,
                RFC 9110 §9.1), ``HEAD`` implied by ``GET``; ``None`` for any.
            name: a name for :meth:`url_path_for`, unique in the router.
            options: the App's settings for this route.

        Returns:
            The route, as :meth:`match` will return it.

        Raises:
            ValueError: the template or the methods are invalid, or the route
                takes requests that an earlier one takes, or the name is taken.
            TypeError: ``methods`` is a string.
            RuntimeError: the router has compiled already.
        """
        self._check_open()
        if kind not in ("websocket", "http"):
            raise ValueError(f"kind is 'websocket' or 'http', not {kind!r}")
        checked = None
        if methods is not None:
            if kind == "websocket":
                raise ValueError("methods are for HTTP routes; a WebSocket handshake is a GET")
            checked = _check_methods(methods)
        entry = _Entry(Route(path, endpoint, kind, checked, name, options), self._parse(path))
        for item in self._items:
            if isinstance(item, _Entry):
                if name is not None and item.route.name == name:
                    raise ValueError(f"duplicate route name {name!r}")
                if _conflicts(item, entry):
                    raise _duplicate(entry.route, item.route)
        self._items.append(entry)
        return entry.route

    def mount(self, prefix: str, router: Router) -> None:
        """Put the routes of another router, and its mounts, under a prefix.

        They are read when this router compiles, which freezes ``router`` too.
        A route of ``router`` for ``/`` becomes ``prefix`` exactly, not
        ``prefix + "/"``. ``router``'s convertors apply to its templates.

        Args:
            prefix: literal text (no parameters), starting with ``/`` and not
                ending with one: ``/admin``.
            router: the router to mount.

        Raises:
            ValueError: the prefix is invalid, or ``router`` is this router or
                mounts it.
            RuntimeError: this router has compiled already.
        """
        self._check_open()
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(
                f"a mount prefix starts with '/' and does not end with one: {prefix!r}"
            )
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"a mount prefix is literal text, without parameters: {prefix!r}")
        if router._reaches(self):
            raise ValueError("mounting this router would make a cycle")
        self._items.append(_Mount(prefix, router))

    def freeze(self) -> None:
        """Compile the routes, which fixes them: :meth:`add` and :meth:`mount` then raise.

        :meth:`match` and :meth:`url_path_for` compile on first use; calling
        this at startup raises the errors that mounting brings there instead.

        Raises:
            ValueError: two routes brought together by :meth:`mount` take the
                same requests or have the same name.
        """
        self._compiled()

    def match(self, target: str, *, websocket: bool, method: str = "GET") -> Match:
        """Find the route for a request.

        Args:
            target: the request target as sent: path and query, percent-encoded.
            websocket: whether the request asks to upgrade to WebSocket.
            method: the request method, for HTTP routes.

        Returns:
            :class:`Matched`, or what to answer instead.

        Raises:
            ValueError: as :meth:`freeze`, on the first call.
        """
        tables = self._tables or self._compiled()
        raw_path, question, query = target.partition("?")
        # Origin-form only (RFC 9112 §3.2.1): "*" and absolute-form name no
        # path of ours; a caller that accepts absolute-form converts it first.
        if not raw_path.startswith("/"):
            return BadPath("the request target is not a path")
        path = raw_path
        escaped = False  # a "%" is among the characters that need normalizing
        if _NOT_NORMALIZED.search(path) is not None:
            try:
                path = _normalize(raw_path)
            except _InvalidPath as exc:
                return BadPath(str(exc))
            escaped = "%" in path

        if websocket:
            found = tables.websocket.find(path)
            if found is not None:
                node, texts = found
                return _matched(node.entries[0], texts, query, escaped)
            # No trailing-slash redirect: WebSocket clients do not follow them.
            return _NOT_FOUND if tables.http.find(path) is None else _NOT_WEBSOCKET

        found = tables.http.find(path)
        if found is not None:
            node, texts = found
            entry = node.select(method)
            if entry is None:
                return MethodNotAllowed(frozenset(node.by_method))
            return _matched(entry, texts, query, escaped)
        found = tables.websocket.find(path)
        if found is not None:
            return UpgradeRequired(found[0].entries[0].route)
        if self._redirect_slashes:
            twin = path[:-1] if path.endswith("/") else path + "/"
            # A Location of "//host/x" is another host (RFC 3986 §4.2), and
            # "/" has no twin.
            if (
                twin.startswith("/")
                and not twin.startswith("//")
                and (tables.http.find(twin) or tables.websocket.find(twin))
            ):
                return Redirect(twin + question + query)
        return _NOT_FOUND

    def url_path_for(self, name: str, /, **params: object) -> str:
        """Write the path of a named route, the reverse of :meth:`match`.

        Each value goes through its convertor's ``to_string()`` and is
        percent-encoded; a slash in it is encoded as ``%2F`` unless the
        convertor's regex takes slashes (``path``).

        Args:
            name: the route's name.
            **params: a value for each parameter of its template.

        Returns:
            The path, percent-encoded.

        Raises:
            KeyError: no route has this name.
            TypeError: the parameters are not those of the template.
            ValueError: a value's text does not match its convertor's regex,
                or as :meth:`freeze`, on the first call.
        """
        entry = (self._tables or self._compiled()).names.get(name)
        if entry is None:
            raise KeyError(f"no route named {name!r}")
        expected = {param.name for param in entry.template.params}
        if params.keys() != expected:
            raise TypeError(
                f"route {name!r} takes parameters {sorted(expected)}, not {sorted(params)}"
            )
        return "".join(
            piece if isinstance(piece, str) else _encode_param(piece, params[piece.name])
            for piece in entry.template.pieces
        )

    def _check_open(self) -> None:
        if self._tables is not None:
            raise RuntimeError(
                "routes are fixed once the router has compiled (on its first match(), "
                "url_path_for() or freeze(), or its parent's)"
            )

    def _reaches(self, router: Router) -> bool:
        return router is self or any(
            item.router._reaches(router) for item in self._items if isinstance(item, _Mount)
        )

    def _parse(self, template: str) -> _Template:
        if not template.startswith("/"):
            raise ValueError(f"a route template starts with '/': {template!r}")
        pieces: list[str | _Param] = []
        names: set[str] = set()
        position = 0
        for match in _PARAM.finditer(template):
            self._add_literal(pieces, template, template[position : match.start()])
            name, colon, convertor_name = match[1].partition(":")
            if not colon:
                convertor_name = "str"
            if not name.isidentifier() or keyword.iskeyword(name):
                raise ValueError(f"parameter {name!r} is not a Python identifier in {template!r}")
            if name in names:
                raise ValueError(f"duplicate parameter {name!r} in {template!r}")
            if pieces and isinstance(pieces[-1], _Param):
                # Where one ends and the next begins would be a guess.
                raise ValueError(f"parameter {name!r} follows another without text in {template!r}")
            convertor = self._convertors.get(convertor_name)
            if convertor is None:
                raise ValueError(
                    f"unknown convertor {convertor_name!r} in {template!r}; "
                    f"known: {', '.join(sorted(self._convertors))}"
                )
            if convertor_name == "path" and match.end() != len(template):
                raise ValueError(f"a path parameter must end the template: {template!r}")
            names.add(name)
            verbatim = type(convertor) in (_StrConvertor, _PathConvertor)
            pieces.append(_Param(name, convertor, re.compile(convertor.regex), verbatim))
            position = match.end()
        self._add_literal(pieces, template, template[position:])
        return _Template.of(tuple(pieces))

    @staticmethod
    def _add_literal(pieces: list[str | _Param], template: str, text: str) -> None:
        if "{" in text or "}" in text:
            raise ValueError(f"unbalanced brace in {template!r}")
        if text:
            pieces.append(_encode_literal(text))

    def _flatten(self) -> Iterator[_Entry]:
        """Yield this router's routes, and its mounted routers', in registration order."""
        for item in self._items:
            if isinstance(item, _Entry):
                yield item
                continue
            encoded_prefix = _encode_literal(item.prefix)
            for entry in item.router._flatten():
                route, pieces = entry.route, entry.template.pieces
                if route.path == "/":
                    path, pieces = item.prefix, (encoded_prefix,)
                else:
                    path, pieces = item.prefix + route.path, (encoded_prefix, *pieces)
                yield _Entry(dataclasses.replace(route, path=path), _Template.of(pieces))

    def _compiled(self) -> _Tables:
        if self._tables is not None:
            return self._tables
        for item in self._items:
            if isinstance(item, _Mount):
                item.router.freeze()
        entries = list(self._flatten())
        names: dict[str, _Entry] = {}
        for entry in entries:
            name = entry.route.name
            if name is not None:
                if name in names:
                    raise ValueError(f"duplicate route name {name!r}")
                names[name] = entry
        self._tables = _Tables(
            websocket=_Lookup(entry for entry in entries if entry.route.kind == "websocket"),
            http=_Lookup(entry for entry in entries if entry.route.kind == "http"),
            names=names,
        )
        return self._tables


def _check_methods(methods: Iterable[str]) -> frozenset[str]:
    if isinstance(methods, str):
        raise TypeError("methods is a collection of method names, not a string")
    checked = frozenset(methods)
    if not checked:
        raise ValueError("methods is empty, so no request would match; None means any method")
    for method in checked:
        if not _TOKEN.fullmatch(method):
            raise ValueError(f"invalid method {method!r}")
        if method != method.upper():
            # Methods are case-sensitive (RFC 9110 §9.1): "get" is a typo far
            # more often than an extension method.
            raise ValueError(f"method {method!r} is not uppercase")
    # RFC 9110 §9.3.2: a server that takes GET takes HEAD.
    return checked | {"HEAD"} if "GET" in checked else checked


def _encode_param(param: _Param, value: object) -> str:
    text = param.convertor.to_string(value)
    # Keep slashes raw if the convertor takes them ("path"), else send them
    # as %2F, which stays in the segment (rule 1).
    for safe in (_SEGMENT_SAFE + "/", _SEGMENT_SAFE):
        encoded = quote(text, safe=safe)
        if param.pattern.fullmatch(encoded):
            return encoded
    raise ValueError(f"{text!r} is not a valid value for parameter {param.name!r}")
