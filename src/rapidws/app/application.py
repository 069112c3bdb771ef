r"""``rapidws.App``: routes with path parameters, handshake interceptors, plain HTTP beside them.

::

    app = rapidws.App(interceptors=[rapidws.allow_origins(["https://*.example.com"])])

    @app.websocket("/ws/{user_name}")
    async def chat(ws, user_name):          # a coroutine, the iterator API
        async for message in ws:
            await ws.send(f"{user_name}: {message}")

    @app.websocket("/rooms/{room:int}")
    class Room(rapidws.Endpoint): ...       # an endpoint class, one instance per connection

    app.add_websocket("/echo", Echo())      # rapidws.Callbacks: the fast path

    @app.get("/healthz")
    def health(request):
        return "ok\n"                        # str, bytes, dict/list (JSON) or a Response

    async with app.serve("127.0.0.1", 8765) as server:
        await server.serve_forever()

The App is the server's ``process_request`` hook: it matches the request
against its routes (:mod:`rapidws.app.routing`) and answers plain HTTP
requests itself, or, for a WebSocket route, runs the interceptors, accepts
the handshake and hands the connection to the route's handler. Nothing of it
runs per message: a routed connection is as fast as an unrouted one.

What the App answers instead of upgrading:

- 404 for a path no route has, and for an upgrade request to a path that only
  HTTP routes have (there is no WebSocket endpoint there);
- 426 (with ``Upgrade: websocket``) for a plain request to a WebSocket route;
- 405 (with ``Allow``) for a method an HTTP route does not take;
- 308 to the path with its trailing slash added or removed, for a plain
  request whose path has no route but whose twin has (``redirect_slashes``;
  WebSocket requests are matched strictly: browsers do not follow redirects
  for them);
- 400 for a path that is not valid (bad percent-encoding, a NUL);
- 500, with a generic body and a log record on ``rapidws.server``, when an
  interceptor or an HTTP handler raises.

A plain HTTP request's connection stays open for the next request (HTTP/1.1
keep-alive, pipelining answered in order), also for an upgrade after plain
requests; it waits for that request at most the server's ``open_timeout``.
Request bodies (``Content-Length`` or chunked) are read whole, up to
``max_body_size`` (413 beyond), before the handler runs, as ``request.body``.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from ..asyncio.connection import Settings, connection_settings
from ..asyncio.server import (
    Callbacks,
    Server,
    ServerConnection,
    _is_awaitable,
    _maybe_await,
    serve,
)
from ..asyncio.stats import UNMATCHED
from ..core.extensions.base import ServerExtensionFactory
from ..core.extensions.permessage_deflate import ServerPerMessageDeflate, with_compression
from ..core.headers import Headers
from ..core.http11 import Request, Response
from ..core.server import SelectSubprotocol, wants_upgrade
from ..pubsub.hub import Hub
from .endpoint import Endpoint, run_endpoint
from .hooks import Interceptor
from .limits import ConnectionCounter, RateLimit, RateLimitedCallbacks, TokenBucket
from .proxies import ProxySpec, TrustedProxies, bind_connection
from .routing import (
    BadPath,
    Convertor,
    Matched,
    MethodNotAllowed,
    Redirect,
    Route,
    Router,
    UpgradeRequired,
)
from .static import StaticFiles

__all__ = [
    "SERVER_DEFAULT",
    "AfterHandshake",
    "App",
    "HttpHandler",
    "RouteSettings",
    "Upgrade",
    "WebSocketHandler",
]

logger = logging.getLogger("rapidws.server")

#: What a WebSocket route runs: ``async def handler(ws, **path_params)``, an
#: :class:`~rapidws.app.endpoint.Endpoint` subclass, or a
#: :class:`~rapidws.asyncio.server.Callbacks` object.
WebSocketHandler = Callable[..., Awaitable[Any]] | type[Endpoint] | Callbacks
#: What an HTTP route runs: ``handler(request, **path_params)``, sync or async,
#: returning a Response, ``str`` (text/plain), bytes (octet-stream) or a
#: ``dict``/``list`` (JSON).
HttpHandler = Callable[..., Any]
#: A hook run after the handshake is accepted, before the 101 is sent:
#: ``(ws, request, response)``; it may add headers to ``response`` (cookies),
#: or return another Response to send instead. May be async.
AfterHandshake = Callable[
    [ServerConnection, Request, Response], "Response | Awaitable[Response | None] | None"
]

H = TypeVar("H")


@dataclass(frozen=True)
class Upgrade:
    """What an interceptor returns to go on with the upgrade and shape the 101.

    Returning ``None`` goes on too; return this to choose the subprotocol
    (one the client offered) or add response headers (``Set-Cookie``). The
    headers of several interceptors add up; the last subprotocol chosen wins.
    """

    subprotocol: str | None = None
    headers: Sequence[tuple[str, str]] = ()


class _Default(enum.Enum):
    SERVER = "the server's setting"


#: A :class:`RouteSettings` field left at this keeps the server's value.
SERVER_DEFAULT = _Default.SERVER


@dataclass(frozen=True)
class RouteSettings:
    """Limits, timeouts and compression of one WebSocket route, instead of the server's.

    Each field means what the :func:`~rapidws.asyncio.server.serve` argument
    of the same name means (``None`` disables a limit); a field left at
    :data:`SERVER_DEFAULT` keeps the server's. An upload route beside a chat::

        app.add_websocket("/upload", upload, settings=RouteSettings(max_size=64 * 2**20))

    ``compression`` replaces the server's extensions for the route (``None``
    turns compression off there).
    """

    max_size: int | _Default | None = SERVER_DEFAULT
    max_frame_size: int | _Default | None = SERVER_DEFAULT
    compression: str | ServerPerMessageDeflate | _Default | None = SERVER_DEFAULT
    ping_interval: float | _Default | None = SERVER_DEFAULT
    ping_timeout: float | _Default | None = SERVER_DEFAULT
    close_timeout: float | _Default | None = SERVER_DEFAULT
    max_queue: int | tuple[int, int] | _Default | None = SERVER_DEFAULT
    write_limit: int | tuple[int, int] | _Default = SERVER_DEFAULT

    def __post_init__(self) -> None:
        # Checked now, not at the first connection.
        for name in ("max_size", "max_frame_size"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 0:
                raise ValueError(f"{name} must be >= 0 or None")
        if self.compression is not SERVER_DEFAULT:
            with_compression(self.compression, (), ServerPerMessageDeflate)

    def connection_settings(self, server: Settings) -> Settings:
        """Merge this route's connection settings into a server's."""
        interval, timeout, close, queue_high, queue_low, write_high, write_low = server

        def pick(value: Any, default: Any) -> Any:
            return default if value is SERVER_DEFAULT else value

        return connection_settings(
            pick(self.ping_interval, interval),
            pick(self.ping_timeout, timeout),
            pick(self.close_timeout, close),
            pick(self.max_queue, None if queue_high is None else (queue_high, queue_low)),
            pick(self.write_limit, (write_high, write_low)),
        )


@dataclass(eq=False)
class _WebSocketRoute:
    """What a WebSocket route carries for the App (the router's ``Route.options``)."""

    handler: Callable[[ServerConnection], Awaitable[Any]] | Callbacks
    interceptors: tuple[Interceptor, ...]
    subprotocols: tuple[str, ...] | None
    select_subprotocol: SelectSubprotocol | None
    settings: RouteSettings | None
    # The interceptors of the apps this route is mounted in, then its own
    # app's: set when the root app compiles its routes.
    chain: tuple[Interceptor, ...] = field(default=())
    # The connection settings for the servers seen, merged once.
    merged: dict[Settings, Settings] = field(default_factory=dict)
    extensions: tuple[ServerExtensionFactory, ...] | None = None
    # The callbacks behind the app's message rate limit, made on first use.
    limited: RateLimitedCallbacks | None = None

    # Known once, not looked up per handshake: whether the route has
    # subprotocols or settings of its own, and what the connection's handler
    # setter would derive from the handler.
    customized: bool = field(init=False, default=False)
    callbacks: Callbacks | None = field(init=False, default=None)
    on_message: Callable[[Any, Any], None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.customized = (
            self.subprotocols is not None
            or self.select_subprotocol is not None
            or self.settings is not None
        )
        if isinstance(self.handler, Callbacks):
            self.callbacks = self.handler
            self.on_message = self.handler.on_message


class App:
    """A WebSocket and HTTP application: its routes, hooks and lifecycle.

    Args:
        interceptors: hooks run before every WebSocket upgrade of this app,
            before the route's own; see :meth:`websocket`.
        redirect_slashes: answer a plain request for ``/a/`` with a 308 to
            ``/a`` when only the latter has a route, and the reverse.
        convertors: path parameter convertors to add to ``str``, ``int``,
            ``float``, ``uuid`` and ``path`` (see :class:`~rapidws.app.routing.Convertor`).
        trusted_proxies: addresses and networks (``"127.0.0.1"``,
            ``"10.0.0.0/8"``) of reverse proxies whose ``Forwarded`` or
            ``X-Forwarded-For``/``-Proto`` headers give the client's address
            and scheme (``ws.client_address``, ``ws.scheme``); none by
            default. See :mod:`rapidws.app.proxies`.
        max_connections_per_ip: open WebSocket connections one client address
            may hold; a handshake beyond gets 429. ``None`` (the default): no limit.
        message_rate: the most messages per second a connection may send
            (:class:`~rapidws.app.limits.RateLimit`); beyond it, the connection
            closes with 1008. ``None`` (the default): no limit.
        hub: the app's :class:`~rapidws.Hub` (topics, broadcast); by default
            one is made on first use of :attr:`hub`, in memory.
            ``rapidws serve --broker redis://...`` gives it a Redis broker.
    """

    def __init__(
        self,
        *,
        interceptors: Iterable[Interceptor] = (),
        redirect_slashes: bool = True,
        convertors: Mapping[str, Convertor[Any]] | None = None,
        trusted_proxies: Iterable[ProxySpec] = (),
        max_connections_per_ip: int | None = None,
        message_rate: RateLimit | None = None,
        hub: Hub | None = None,
    ) -> None:
        self._hub = hub
        self._per_ip = (
            None if max_connections_per_ip is None else (ConnectionCounter(max_connections_per_ip))
        )
        self.message_rate = message_rate
        self.router = Router(convertors, redirect_slashes=redirect_slashes)
        self._trusted_proxies = TrustedProxies(trusted_proxies) or None
        self.interceptors: list[Interceptor] = list(interceptors)
        self._after_handshake: list[AfterHandshake] = []
        self._startup: list[Callable[[], Any]] = []
        self._shutdown: list[Callable[[], Any]] = []
        self._routes: list[_WebSocketRoute] = []
        self._mounted: list[App] = []
        self._compiled = False
        self._draining = False

    # Routes.

    def websocket(
        self,
        path: str,
        *,
        name: str | None = None,
        interceptors: Iterable[Interceptor] = (),
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        settings: RouteSettings | None = None,
    ) -> Callable[[H], H]:
        """Add a WebSocket route, as a decorator; see :meth:`add_websocket`."""

        def decorator(handler: H) -> H:
            self.add_websocket(
                path,
                handler,  # type: ignore[arg-type]
                name=name,
                interceptors=interceptors,
                subprotocols=subprotocols,
                select_subprotocol=select_subprotocol,
                settings=settings,
            )
            return handler

        return decorator

    def add_websocket(
        self,
        path: str,
        handler: WebSocketHandler,
        *,
        name: str | None = None,
        interceptors: Iterable[Interceptor] = (),
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        settings: RouteSettings | None = None,
    ) -> Route:
        """Add a WebSocket route.

        Args:
            path: the template: ``/ws/{user_name}``, ``/rooms/{room:int}``.
            handler: ``async def handler(ws, **path_params)``, an
                :class:`~rapidws.app.endpoint.Endpoint` subclass, or
                :class:`~rapidws.asyncio.server.Callbacks`. The path
                parameters are also on ``ws.path_params``.
            name: a name for :meth:`url_path_for`.
            interceptors: hooks ``(ws, request)`` run before the upgrade, after
                the app's, in order, sync or async: each may refuse (return a
                Response), fill ``ws.attributes``, or return :class:`Upgrade`
                to choose the subprotocol or add response headers. An exception
                is a 500 with a generic body (and a log record).
            subprotocols: the subprotocols this route speaks, in order of
                preference (instead of the server's).
            select_subprotocol: a callable ``(request, offered)`` choosing one.
            settings: this route's limits, timeouts and compression
                (:class:`RouteSettings`), instead of the server's.

        Raises:
            TypeError: ``handler`` is none of the three kinds.
            ValueError: the template is invalid or taken.
        """
        route = _WebSocketRoute(
            _connection_handler(handler),
            tuple(interceptors),
            None if subprotocols is None else tuple(subprotocols),
            select_subprotocol,
            settings,
        )
        if settings is not None and settings.compression is not SERVER_DEFAULT:
            route.extensions = tuple(
                with_compression(settings.compression, (), ServerPerMessageDeflate)
            )
        added = self.router.add(path, handler, kind="websocket", name=name, options=route)
        self._routes.append(route)
        return added

    def route(
        self,
        path: str,
        *,
        methods: Iterable[str] = ("GET",),
        name: str | None = None,
        readiness: bool = False,
    ) -> Callable[[H], H]:
        """Add a plain HTTP route, as a decorator; see :meth:`add_route`."""

        def decorator(handler: H) -> H:
            self.add_route(
                path,
                handler,  # type: ignore[arg-type]
                methods=methods,
                name=name,
                readiness=readiness,
            )
            return handler

        return decorator

    def get(
        self, path: str, *, name: str | None = None, readiness: bool = False
    ) -> Callable[[H], H]:
        """Add a plain HTTP route for ``GET`` (and ``HEAD``), as a decorator."""
        return self.route(path, methods=("GET",), name=name, readiness=readiness)

    def post(self, path: str, *, name: str | None = None) -> Callable[[H], H]:
        """Add a plain HTTP route for ``POST``, as a decorator."""
        return self.route(path, methods=("POST",), name=name)

    def add_route(
        self,
        path: str,
        handler: HttpHandler,
        *,
        methods: Iterable[str] = ("GET",),
        name: str | None = None,
        readiness: bool = False,
    ) -> Route:
        """Add a plain HTTP route beside the WebSocket routes, on the same port.

        ``handler(request, **path_params)``, sync or async, returns a
        :class:`~rapidws.core.http11.Response`, or ``str`` (sent as
        text/plain), bytes (application/octet-stream), a ``dict`` or ``list``
        (application/json). ``HEAD`` is answered wherever ``GET`` is, with the
        same headers and no body. A ``readiness`` route (a load balancer's
        health check) answers 503 without calling ``handler`` once the app
        drains (:meth:`start_draining`).
        """
        if not callable(handler):
            raise TypeError(f"an HTTP handler is a callable, not {type(handler).__name__}")
        return self.router.add(
            path, handler, kind="http", methods=methods, name=name, options=readiness
        )

    def static(self, prefix: str, directory: str | os.PathLike[str], **options: Any) -> Route:
        """Serve the files of ``directory`` under ``prefix`` (``"/"`` for the root).

        ``GET`` and ``HEAD`` only, with Content-Type, ETag and Last-Modified
        (304 when unchanged), ``index.html`` for a directory, and a 404 for any
        path that would leave ``directory`` (see
        :class:`~rapidws.app.static.StaticFiles`, which takes ``options``).
        Add it after the other routes: its ``{path:path}`` takes every path
        under ``prefix`` that no route added before it takes.
        """
        if not prefix.startswith("/") or "{" in prefix or "}" in prefix:
            raise ValueError(f"a static prefix starts with '/' and has no parameters: {prefix!r}")
        handler = StaticFiles(directory, **options)
        base = prefix.rstrip("/")
        if base:
            # "/static" itself: the handler redirects it to "/static/".
            self.add_route(base, handler)
        return self.add_route(base + "/{path:path}", handler)

    def mount(self, prefix: str, app: App) -> None:
        """Serve the routes of ``app`` under ``prefix`` (``/admin``).

        This app's interceptors run before ``app``'s, and its startup and
        shutdown hooks run ``app``'s too.
        """
        self.router.mount(prefix, app.router)
        self._mounted.append(app)

    def url_path_for(self, name: str, /, **params: object) -> str:
        """Return the path of the route named ``name``, with ``params`` filled in."""
        return self.router.url_path_for(name, **params)

    # Hooks.

    def interceptor(self, hook: H) -> H:
        """Add an interceptor run before every WebSocket upgrade of this app (a decorator)."""
        self.interceptors.append(hook)  # type: ignore[arg-type]
        return hook

    def after_handshake(self, hook: H) -> H:
        """Add a hook ``(ws, request, response)`` run on every accepted handshake (a decorator)."""
        self._after_handshake.append(hook)  # type: ignore[arg-type]
        return hook

    def on_startup(self, hook: H) -> H:
        """Add a hook ``()`` (sync or async) run before the server starts (a decorator)."""
        self._startup.append(hook)  # type: ignore[arg-type]
        return hook

    def on_shutdown(self, hook: H) -> H:
        """Add a hook ``()`` (sync or async) run after the server has closed (a decorator)."""
        self._shutdown.append(hook)  # type: ignore[arg-type]
        return hook

    # Serving.

    def serve(self, host: str | None = None, port: int | None = None, **options: Any) -> _Serving:
        """Serve this app: ``async with app.serve("127.0.0.1", 8765) as server: ...``.

        Takes the options of :func:`~rapidws.asyncio.server.serve` but
        ``process_request`` and ``process_response`` (use interceptors and
        :meth:`after_handshake`). The startup hooks run before the server
        listens, the shutdown hooks after it has closed.
        """
        for option in ("process_request", "process_response"):
            if option in options:
                raise TypeError(f"an App has no {option}: use interceptors or after_handshake")
        self.compile()
        return _Serving(self, serve(_unrouted, host, port, process_request=self.handle, **options))

    def compile(self) -> None:
        """Fix the routes (adding more then raises) and raise their errors now.

        :meth:`serve` calls it; call it yourself to check an app in a test.
        """
        if self._compiled:
            return
        self.router.freeze()
        self._set_chains(())
        self._compiled = True

    def _set_chains(self, outer: tuple[Interceptor, ...]) -> None:
        chain = (*outer, *self.interceptors)
        for route in self._routes:
            route.chain = (*chain, *route.interceptors)
        for app in self._mounted:
            app._set_chains(chain)
            app._compiled = True

    async def _run_hooks(self, hooks: list[Callable[[], Any]]) -> None:
        for hook in hooks:
            await _maybe_await(hook())

    async def startup(self) -> None:
        """Connect the hub's broker, run the startup hooks: this app's, then the mounted apps'."""
        if self._hub is not None:
            # Before listening: a broker that cannot start fails the start.
            await self._hub.start()
        await self._run_hooks(self._startup)
        for app in self._mounted:
            await app.startup()

    async def shutdown(self) -> None:
        """Run the shutdown hooks (the mounted apps', then this app's); stop the hub."""
        for app in reversed(self._mounted):
            await app.shutdown()
        await self._run_hooks(self._shutdown)
        if self._hub is not None:
            await self._hub.stop()

    @property
    def hub(self) -> Hub:
        """The app's :class:`~rapidws.Hub`: ``app.hub.subscribe(ws, "room")``."""
        if self._hub is None:
            self._hub = Hub()
        return self._hub

    @property
    def draining(self) -> bool:
        """Whether the app is shutting down: see :meth:`start_draining`."""
        return self._draining

    def start_draining(self) -> None:
        """Tell load balancers and new clients that this server is going away.

        From now on, readiness routes answer 503 and WebSocket handshakes are
        refused with 503 and ``Retry-After``, while open connections go on;
        then close the server (its connections get 1001, or 1012 for a
        restart) when the load balancer has taken it out of rotation. ``rapidws
        serve`` does this on SIGTERM.
        """
        self._draining = True
        for app in self._mounted:
            app.start_draining()

    # The server's process_request hook.

    def handle(self, ws: ServerConnection, request: Request) -> Response | Awaitable[Response]:
        """Route a request: answer it, or prepare ``ws`` for its WebSocket route.

        The server's ``process_request`` hook (:meth:`serve` installs it).
        Returns the response to send: the 101 of an accepted upgrade, or any
        other answer; an awaitable that makes it when an interceptor or a
        handler is async. Sync hooks and handlers run at once: no task, no
        coroutine.
        """
        if self._trusted_proxies is not None:
            self._trusted_proxies.apply(ws, request)  # before the interceptors read it
        target = request.target
        if not target.startswith("/"):
            # Absolute-form (RFC 9112 section 3.2.2): its path and query.
            query = request.query
            target = request.path + ("?" + query if query else "")
        upgrade = wants_upgrade(request)
        match = self.router.match(target, websocket=upgrade, method=request.method)
        # A plain request's connection may serve the next one (a page, its
        # script, then the upgrade); a refused upgrade or a bad path closes.
        keep_alive = not upgrade and type(match) is not BadPath and not self._draining
        response: Response | Awaitable[Response]
        if type(match) is not Matched:
            if upgrade:
                ws.route = UNMATCHED  # the metrics' label
            response = _refusal(match)
        elif upgrade:
            ws.route = match.route.path  # the metrics' label: the template, not the path
            # The router hands back what add_websocket() gave it.
            options: _WebSocketRoute = match.route.options  # type: ignore[assignment]
            if self._draining:
                response = Response(503, _SHUTTING_DOWN, [("Retry-After", "1")])
            elif self._per_ip is not None and self._per_ip.full(_client_ip(ws)):
                response = Response(429, _TOO_MANY, [("Retry-After", "1")])
            else:
                ws.path_params = match.params
                ws._serve_with(options.handler, options.callbacks, options.on_message)
                if options.customized:
                    _customize(ws, options)
                response = self._intercept(ws, request, options, 0, [])
        elif self._draining and match.route.options:
            response = Response(503, _SHUTTING_DOWN)
        else:
            bind_connection(request, ws)  # for connection_of(request)
            response = _answer(match.route.endpoint, request, match.params)
        if type(response) is not Response and _is_awaitable(response):
            return self._finish_later(ws, request, keep_alive, response)
        if response.status == 101:
            return response  # accept() made it whole
        return self._finish(ws, request, keep_alive, response)

    def _finish(
        self, ws: ServerConnection, request: Request, keep_alive: bool, response: Response
    ) -> Response:
        """Add the headers of an answer other than a 101 (accept() made that whole)."""
        if response.status != 101:
            headers = response.headers
            if "Connection" not in headers:
                asked = request.headers.get("Connection") or ""
                wanted = keep_alive and "close" not in asked.lower()
                headers["Connection"] = "keep-alive" if wanted else "close"
            server_header = ws.protocol.server_header
            if server_header is not None and "Server" not in headers:
                headers["Server"] = server_header
        return response

    async def _finish_later(
        self,
        ws: ServerConnection,
        request: Request,
        keep_alive: bool,
        pending: Awaitable[Response],
    ) -> Response:
        return self._finish(ws, request, keep_alive, await pending)

    def _intercept(
        self,
        ws: ServerConnection,
        request: Request,
        route: _WebSocketRoute,
        index: int,
        headers: list[tuple[str, str]],
    ) -> Response | Awaitable[Response]:
        """Run the interceptors from ``index`` on, then accept the handshake."""
        chain = route.chain
        while index < len(chain):
            result = chain[index](ws, request)
            index += 1
            if result is None:
                continue  # the common answer: go on
            if _is_awaitable(result):
                return _resume(
                    result,
                    functools.partial(_intercepted, ws, headers),
                    functools.partial(self._intercept, ws, request, route, index, headers),
                )
            if _intercepted(ws, headers, result):
                return result  # a Response
        response = ws.protocol.accept(request)
        if response.status != 101:
            return response
        for name, value in headers:
            response.headers[name] = value
        if self._after_handshake or self._per_ip is not None or self.message_rate is not None:
            return self._after(ws, request, route, response, 0)
        return response

    def _after(
        self,
        ws: ServerConnection,
        request: Request,
        route: _WebSocketRoute,
        response: Response,
        index: int,
    ) -> Response | Awaitable[Response]:
        """Run the after-handshake hooks from ``index`` on, then admit the connection."""
        hooks = self._after_handshake
        while index < len(hooks):
            replacement = hooks[index](ws, request, response)
            index += 1
            if _is_awaitable(replacement):
                return _resume(
                    replacement,
                    _is_not_none,
                    functools.partial(self._after, ws, request, route, response, index),
                )
            if replacement is not None:
                return replacement
        if self._per_ip is not None or self.message_rate is not None:
            self._limit(ws, route)
        return response

    def _limit(self, ws: ServerConnection, route: _WebSocketRoute) -> None:
        """Put an accepted connection under the app's abuse limits."""
        if self._per_ip is not None:
            self._per_ip.add(ws, _client_ip(ws))
        rate = self.message_rate
        if rate is not None:
            if isinstance(route.handler, Callbacks):
                if route.limited is None:
                    route.limited = RateLimitedCallbacks(route.handler, rate)
                ws.handler = route.limited
            else:
                # Where recv() hands messages over: coroutines and endpoints.
                ws._message_hook = TokenBucket(rate, ws)


def _customize(ws: ServerConnection, route: _WebSocketRoute) -> None:
    """Give a connection its route's subprotocols and settings, before the upgrade."""
    if route.subprotocols is not None:
        ws.protocol.available_subprotocols = route.subprotocols
    if route.select_subprotocol is not None:
        ws.protocol.select_subprotocol = route.select_subprotocol
    if route.settings is not None:
        _apply(route, ws)


def _apply(route: _WebSocketRoute, ws: ServerConnection) -> None:
    """Give a connection its route's settings, before the upgrade."""
    settings = route.settings
    assert settings is not None
    protocol = ws.protocol
    if settings.max_size is not SERVER_DEFAULT:
        protocol.max_message_size = settings.max_size
    if settings.max_frame_size is not SERVER_DEFAULT:
        protocol.max_frame_size = settings.max_frame_size
    if route.extensions is not None:
        protocol.extension_factories = route.extensions
    server = ws.server._settings
    merged = route.merged.get(server)
    if merged is None:
        merged = route.merged[server] = settings.connection_settings(server)
    ws._use_settings(merged)


class _Serving:
    """What :meth:`App.serve` returns: an async context manager around the server."""

    def __init__(self, app: App, server: serve) -> None:
        self._app = app
        self._serve = server

    async def __aenter__(self) -> Server:
        await self._app.startup()
        try:
            return await self._serve.__aenter__()
        except BaseException:
            await self._app.shutdown()  # what startup opened, closed again
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._serve.__aexit__(exc_type, exc_value, traceback)
        finally:
            await self._app.shutdown()


def _chosen(chosen: str, request: Request, offered: Sequence[str]) -> str:
    if chosen not in offered:
        raise ValueError(f"an interceptor chose subprotocol {chosen!r}, which was not offered")
    return chosen


def _connection_handler(
    handler: WebSocketHandler,
) -> Callable[[ServerConnection], Awaitable[Any]] | Callbacks:
    """Return the server-side handler of a route, which passes the path parameters."""
    if isinstance(handler, Callbacks):
        return handler
    if isinstance(handler, type) and issubclass(handler, Endpoint):
        return functools.partial(run_endpoint, handler)
    if inspect.iscoroutinefunction(handler):
        coroutine_function = handler

        def run(ws: ServerConnection) -> Awaitable[Any]:
            return coroutine_function(ws, **ws.path_params)

        return run
    raise TypeError(
        "a WebSocket handler is a coroutine function, an Endpoint subclass or Callbacks, "
        f"not {handler!r}"
    )


async def _unrouted(ws: ServerConnection) -> None:
    # Never runs: the App gives every upgraded connection its route's handler.
    raise AssertionError("a connection was upgraded without a route")  # pragma: no cover


async def _resume(
    pending: Awaitable[Any],
    answers: Callable[[Any], bool],
    resume: Callable[[], Response | Awaitable[Response]],
) -> Response:
    """Await what a hook returned: it answers the request, or the steps after it go on."""
    result = await pending
    if answers(result):
        return result  # type: ignore[no-any-return]  # a Response
    return await _maybe_await(resume())  # type: ignore[no-any-return]


def _is_not_none(result: object) -> bool:
    return result is not None


def _intercepted(ws: ServerConnection, headers: list[tuple[str, str]], result: object) -> bool:
    """Take what an interceptor returned; tell whether it answers instead (a Response)."""
    if isinstance(result, Response):
        return True
    if isinstance(result, Upgrade):
        headers.extend(result.headers)
        if result.subprotocol is not None:
            chosen = result.subprotocol
            ws.protocol.select_subprotocol = functools.partial(_chosen, chosen)
    return False


def _answer(
    handler: Any, request: Request, params: Mapping[str, object]
) -> Response | Awaitable[Response]:
    """Run an HTTP handler and make its result a response (the engine drops a HEAD's body)."""
    try:
        result = handler(request, **params)
        if not _is_awaitable(result):
            return _to_response(result)
    except Exception:
        return _handler_failed(request)
    return _answer_later(request, result)


async def _answer_later(request: Request, pending: Awaitable[Any]) -> Response:
    try:
        return _to_response(await pending)
    except Exception:
        return _handler_failed(request)


def _handler_failed(request: Request) -> Response:
    logger.error("HTTP handler failed: %s %s", request.method, request.path, exc_info=True)
    return Response(500, "Internal Server Error\n")


def _to_response(result: object) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, str):
        return Response(200, result)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(200, bytes(result), [("Content-Type", "application/octet-stream")])
    if isinstance(result, (dict, list)):
        body = json.dumps(result, separators=(",", ":")).encode()
        return Response(200, body, [("Content-Type", "application/json")])
    raise TypeError(
        f"an HTTP handler returns a Response, str, bytes, dict or list, not {type(result).__name__}"
    )


_SHUTTING_DOWN = "Service Unavailable: shutting down\n"
_TOO_MANY = "Too Many Requests: too many connections from this address\n"


def _client_ip(ws: ServerConnection) -> Any:
    # The client behind trusted proxies, not the proxy.
    address = ws.client_address
    return address[0] if isinstance(address, tuple) else address


_REFUSALS = {
    404: "Not Found\n",
    426: "Upgrade Required: this is a WebSocket endpoint\n",
    405: "Method Not Allowed\n",
    308: "Permanent Redirect\n",
}


def _refusal(match: object) -> Response:
    """Return the answer to a request that no route takes."""
    if isinstance(match, BadPath):
        return Response(400, f"Bad Request: {match.reason}\n")
    status: int = match.status  # type: ignore[attr-defined]
    headers = Headers()
    if isinstance(match, UpgradeRequired):
        # RFC 9110 section 15.5.22: a 426 names the protocol to upgrade to.
        headers["Upgrade"] = "websocket"
        headers["Sec-WebSocket-Version"] = "13"
    elif isinstance(match, MethodNotAllowed):
        headers["Allow"] = ", ".join(sorted(match.allowed))
    elif isinstance(match, Redirect):
        headers["Location"] = match.location
    return Response(status, _REFUSALS[status], headers)
