"""Tests for rapidws.app.routing: templates, matching, results, mounting, reversing."""

from __future__ import annotations

import uuid

import pytest

from rapidws.app.routing import (
    BadPath,
    Convertor,
    Matched,
    MethodNotAllowed,
    NotFound,
    NotWebSocket,
    Redirect,
    Route,
    Router,
    UpgradeRequired,
)

UID = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")


class EvenConvertor(Convertor[int]):
    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        number = int(value)
        if number % 2:
            raise ValueError(f"{number} is odd")
        return number

    def to_string(self, value: int) -> str:
        return str(value)


class MaybeConvertor(Convertor[str]):
    """One segment, possibly empty: lets a template match "//evil.com/x/"."""

    regex = "[^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def ws_router(*templates: str) -> Router:
    router = Router()
    for template in templates:
        router.add(template, template, kind="websocket")
    return router


def ws(router: Router, target: str) -> object:
    return router.match(target, websocket=True)


def http(router: Router, target: str, method: str = "GET") -> object:
    return router.match(target, websocket=False, method=method)


def params(router: Router, target: str) -> dict[str, object]:
    result = ws(router, target)
    assert isinstance(result, Matched), result
    return result.params


# Static and dynamic matching.


def test_match_static_route() -> None:
    router = Router()
    route = router.add("/chat", "endpoint", kind="websocket", name="chat", options={"x": 1})
    assert ws(router, "/chat") == Matched(route, {}, "")
    assert route == Route("/chat", "endpoint", "websocket", None, "chat", {"x": 1})


def test_match_dynamic_route() -> None:
    router = Router()
    route = router.add("/rooms/{room}/users/{user}", "endpoint", kind="websocket")
    assert ws(router, "/rooms/r1/users/u2") == Matched(route, {"room": "r1", "user": "u2"}, "")


def test_match_keeps_query_as_sent() -> None:
    router = ws_router("/chat", "/rooms/{room}")
    result = ws(router, "/rooms/1?token=a%20b&x")
    assert isinstance(result, Matched)
    assert result.query == "token=a%20b&x"
    assert ws(router, "/chat?") == Matched(Route("/chat", "/chat", "websocket"), {}, "")


def test_str_parameter_is_one_segment() -> None:
    router = ws_router("/rooms/{room}")
    assert ws(router, "/rooms/a/b") == NotFound()
    assert ws(router, "/rooms/") == NotFound()


def test_static_route_wins_over_dynamic_registered_first() -> None:
    router = ws_router("/items/{name}", "/items/new")
    result = ws(router, "/items/new")
    assert isinstance(result, Matched)
    assert result.route.path == "/items/new"


@pytest.mark.parametrize(
    ("templates", "winner"),
    [
        (["/items/{name}", "/items/{id:int}"], "/items/{name}"),
        (["/items/{id:int}", "/items/{name}"], "/items/{id:int}"),
    ],
)
def test_first_registered_dynamic_route_wins(templates: list[str], winner: str) -> None:
    result = ws(ws_router(*templates), "/items/5")
    assert isinstance(result, Matched)
    assert result.route.path == winner


def test_later_alternative_matches_when_earlier_matches_only_a_prefix() -> None:
    # The first alternative matches "/a/1" and closes its marker, then fails
    # at the end; the marker of the second must be the one reported.
    router = ws_router("/a/{x}", "/a/{x}/b", "/a/{x}/{y:int}")
    result = ws(router, "/a/1/b")
    assert isinstance(result, Matched)
    assert (result.route.path, result.params) == ("/a/{x}/b", {"x": "1"})
    result = ws(router, "/a/1/2")
    assert isinstance(result, Matched)
    assert (result.route.path, result.params) == ("/a/{x}/{y:int}", {"x": "1", "y": 2})


def test_router_of_200_routes_matches_the_last_ones() -> None:
    router = Router()
    for i in range(100):
        router.add(f"/static/{i}", f"s{i}", kind="websocket")
        router.add(f"/dynamic/{i}/{{a}}/{{b:int}}", f"d{i}", kind="websocket")
    result = ws(router, "/static/99")
    assert isinstance(result, Matched)
    assert result.route.endpoint == "s99"
    result = ws(router, "/dynamic/99/x/7")
    assert isinstance(result, Matched)
    assert (result.route.endpoint, result.params) == ("d99", {"a": "x", "b": 7})
    assert ws(router, "/dynamic/100/x/7") == NotFound()


@pytest.mark.parametrize(
    ("templates", "target", "winner"),
    [
        # A template with a parameter in an earlier segment is in a branch
        # above the other's, and still wins when registered first.
        (["/{tenant}/b/{x}", "/a/b/{x}"], "/a/b/c", "/{tenant}/b/{x}"),
        (["/a/b/{x}", "/{tenant}/b/{x}"], "/a/b/c", "/a/b/{x}"),
        (["/a/{x}/w", "/{y}/b/{z}", "/a/b/{q}"], "/a/b/w", "/a/{x}/w"),
        (["/a/x/{p}", "/{y}/b/{q}", "/a/{z}/w"], "/a/b/w", "/{y}/b/{q}"),
        # A parameter inside a segment: its branch is the segments before it.
        (["/ws/r{i}", "/ws/{name}"], "/ws/r5", "/ws/r{i}"),
        (["/ws/{name}", "/ws/r{i}"], "/ws/r5", "/ws/{name}"),
        # Deeper than the path's last slash: the walk finds the branch.
        (["/a/b/c/{x:path}", "/a/{y:path}"], "/a/b/c/d/e", "/a/b/c/{x:path}"),
        (["/a/{y:path}", "/a/b/c/{x:path}"], "/a/b/c/d/e", "/a/{y:path}"),
        (["/a/b/c/{x:path}", "/a/{y:path}"], "/a/b/z/d/e", "/a/{y:path}"),
    ],
)
def test_precedence_across_literal_segments(templates: list[str], target: str, winner: str) -> None:
    result = ws(ws_router(*templates), target)
    assert isinstance(result, Matched), result
    assert result.route.path == winner


def test_path_without_a_branch_is_matched_from_the_nearest_one() -> None:
    router = ws_router("/ws/echo/{room}", "/ws/{rest:path}", "/{any:path}")
    assert params(router, "/ws/echo/lobby") == {"room": "lobby"}
    assert params(router, "/ws/echo/lobby/more") == {"rest": "echo/lobby/more"}
    assert params(router, "/ws/other/x") == {"rest": "other/x"}
    assert params(router, "/ws/") == {"rest": ""}
    assert params(router, "/ws") == {"any": "ws"}
    assert params(router, "/elsewhere/x/y") == {"any": "elsewhere/x/y"}


def test_last_segment_parameter_alone_in_its_branch() -> None:
    # Matched without a regex: it must take exactly what "[^/]+" takes.
    router = ws_router("/ws/{user}", "/ws/echo/{room}", "/n/{id:int}")
    assert params(router, "/ws/ada") == {"user": "ada"}
    assert params(router, "/ws/echo") == {"user": "echo"}
    assert params(router, "/ws/echo/lobby") == {"room": "lobby"}
    assert params(router, "/ws/J%C3%BCrgen") == {"user": "Jürgen"}
    assert params(router, "/ws/a%2Fb") == {"user": "a/b"}
    assert ws(router, "/ws/") == NotFound()
    assert ws(router, "/ws/a/b") == NotFound()
    assert ws(router, "/ws/echo/") == NotFound()
    assert params(router, "/n/7") == {"id": 7}
    assert ws(router, "/n/x") == NotFound()


def test_custom_str_convertor_is_not_taken_for_the_builtin() -> None:
    router = Router({"str": MaybeConvertor()})
    router.add("/ws/{user}", "maybe", kind="websocket")
    assert params(router, "/ws/") == {"user": ""}
    assert params(router, "/ws/a") == {"user": "a"}


def test_mounted_last_segment_parameter() -> None:
    router = Router()
    router.mount("/admin", ws_router("/{page}"))
    assert params(router, "/admin/users") == {"page": "users"}
    assert ws(router, "/admin/users/1") == NotFound()
    assert ws(router, "/admin/") == NotFound()


def test_literal_segments_only_prefix_a_parameter() -> None:
    router = ws_router("/ws/echo/{room}")
    assert ws(router, "/ws/echo") == NotFound()
    assert ws(router, "/ws/echo/") == NotFound()
    assert ws(router, "/ws/echoes/x") == NotFound()
    assert ws(router, "/ws/echo/a/b") == NotFound()


def test_trailing_slash_is_part_of_a_dynamic_template() -> None:
    router = ws_router("/rooms/{room}/", "/users/{user}")
    assert params(router, "/rooms/r1/") == {"room": "r1"}
    assert ws(router, "/rooms/r1") == NotFound()
    assert ws(router, "/users/u1/") == NotFound()
    assert http(router, "/users/u1/") == Redirect("/users/u1")
    assert http(router, "/rooms/r1?x=1") == Redirect("/rooms/r1/?x=1")


def test_escaped_and_converted_parameters_in_one_template() -> None:
    router = ws_router("/a/{name}/{n:int}/{u:uuid}")
    assert params(router, f"/a/J%C3%BCrgen/7/{UID}") == {"name": "Jürgen", "n": 7, "u": UID}
    assert params(router, f"/a/x/7/{UID}") == {"name": "x", "n": 7, "u": UID}
    assert ws(router, f"/a/x/y/{UID}") == NotFound()
    assert params(router, "/a/%7Eb/1/" + str(UID).upper()) == {"name": "~b", "n": 1, "u": UID}


def test_two_verbatim_parameters() -> None:
    router = ws_router("/{a}/x/{b:path}")
    assert params(router, "/1/x/2/3") == {"a": "1", "b": "2/3"}
    assert params(router, "/1%2F2/x/3") == {"a": "1/2", "b": "3"}


def test_mounted_dynamic_routes_keep_precedence_with_the_parent() -> None:
    sub = ws_router("/{room}", "/files/{file:int}")
    router = Router()
    router.add("/chat/{anything:path}", "first", kind="websocket")
    router.mount("/chat", sub)
    result = ws(router, "/chat/files/5")
    assert isinstance(result, Matched)
    assert result.route.endpoint == "first"
    other = Router()
    other.mount("/chat", sub)
    other.add("/chat/files/{name}", "last", kind="websocket")
    result = ws(other, "/chat/files/5")
    assert isinstance(result, Matched)
    assert (result.route.path, result.params) == ("/chat/files/{file:int}", {"file": 5})
    result = ws(other, "/chat/files/x")
    assert isinstance(result, Matched)
    assert (result.route.endpoint, result.params) == ("last", {"name": "x"})
    assert params(other, "/chat/lobby") == {"room": "lobby"}


def test_router_without_routes_finds_nothing() -> None:
    assert ws(Router(), "/") == NotFound()
    assert http(Router(), "/") == NotFound()


# Convertors.


@pytest.mark.parametrize(
    ("template", "target", "value"),
    [
        ("/{x:int}", "/42", 42),
        ("/{x:int}", "/007", 7),
        ("/{x:float}", "/1.5", 1.5),
        ("/{x:float}", "/3", 3.0),
        ("/{x:uuid}", f"/{UID}", UID),
        ("/{x:uuid}", f"/{str(UID).upper()}", UID),
        ("/files/{x:path}", "/files/a/b/c.txt", "a/b/c.txt"),
        ("/files/{x:path}", "/files/", ""),
        ("/{x:str}", "/abc", "abc"),
    ],
)
def test_convertor_converts(template: str, target: str, value: object) -> None:
    assert params(ws_router(template), target) == {"x": value}


@pytest.mark.parametrize(
    ("template", "target"),
    [
        ("/items/{x:int}", "/items/abc"),
        ("/items/{x:int}", "/items/-1"),
        ("/items/{x:int}", "/items/1.5"),
        ("/items/{x:float}", "/items/1."),
        ("/items/{x:float}", "/items/1e5"),
        ("/items/{x:float}", "/items/" + "9" * 400),  # overflows to inf
        ("/items/{x:uuid}", "/items/12345678-9abc-def0-1234-56789abcdefg"),
        ("/items/{x:uuid}", "/items/123456789abcdef0123456789abcdef0"),
    ],
)
def test_convertor_refuses(template: str, target: str) -> None:
    assert ws(ws_router(template), target) == NotFound()


def test_custom_convertor() -> None:
    router = Router(convertors={"even": EvenConvertor()})
    router.add("/n/{n:even}", "even", kind="websocket")
    assert params(router, "/n/4") == {"n": 4}
    assert ws(router, "/n/3") == NotFound()  # convert() raised ValueError


def test_custom_convertor_overrides_builtin_in_its_router_only() -> None:
    router = Router(convertors={"int": EvenConvertor()})
    router.add("/n/{n:int}", "even", kind="websocket")
    assert ws(router, "/n/3") == NotFound()
    assert params(ws_router("/n/{n:int}"), "/n/3") == {"n": 3}


def test_custom_convertor_is_not_global() -> None:
    Router(convertors={"even": EvenConvertor()})
    with pytest.raises(ValueError, match="unknown convertor 'even'"):
        Router().add("/n/{n:even}", "even", kind="websocket")


@pytest.mark.parametrize(("regex", "error"), [("(a)", "groups"), ("[a", "invalid regex")])
def test_custom_convertor_regex_is_checked(regex: str, error: str) -> None:
    class Bad(EvenConvertor):
        pass

    Bad.regex = regex
    with pytest.raises(ValueError, match=error):
        Router(convertors={"bad": Bad()})


# Percent-encoding.


def test_parameter_is_decoded_once() -> None:
    assert params(ws_router("/a/{x}"), "/a/%2541") == {"x": "%41"}


def test_encoded_slash_stays_in_segment() -> None:
    router = ws_router("/a/{x}", "/a/{x}/{y}")
    result = ws(router, "/a/b%2Fc")
    assert isinstance(result, Matched)
    assert (result.route.path, result.params) == ("/a/{x}", {"x": "b/c"})


@pytest.mark.parametrize("target", ["/ws/J%C3%BCrgen", "/ws/J%c3%bcrgen", "/ws/%4A%C3%BC%72gen"])
def test_non_ascii_parameter(target: str) -> None:
    assert params(ws_router("/ws/{user}"), target) == {"user": "Jürgen"}


@pytest.mark.parametrize("target", ["/caf%C3%A9/x", "/caf%c3%a9/x", "/%63af%C3%A9/x"])
def test_non_ascii_literal(target: str) -> None:
    assert params(ws_router("/café/{y}"), target) == {"y": "x"}


@pytest.mark.parametrize("target", ["/ws/~user", "/ws/%7Euser", "/ws/%7euser", "/%77s/%7E%75ser"])
def test_unreserved_escapes_are_normalized(target: str) -> None:
    assert params(ws_router("/ws/~user"), target) == {}


@pytest.mark.parametrize(("template", "target"), [("/a b", "/a%20b"), ("/a b", "/a b")])
def test_raw_character_outside_uri_grammar_is_its_escape(template: str, target: str) -> None:
    assert params(ws_router(template), target) == {}


def test_reserved_character_differs_from_its_escape() -> None:
    router = ws_router("/a+b")
    assert ws(router, "/a+b") != NotFound()
    assert ws(router, "/a%2Bb") == NotFound()


def test_percent_in_template_is_literal() -> None:
    router = ws_router("/100%")
    assert params(router, "/100%25") == {}


@pytest.mark.parametrize(
    "target",
    ["/a/%zz", "/a/%4", "/a/b%", "/a/%FF", "/a/%C3", "/a/%00", "/a/b\x00", "/a/ü", "/a/\n"],
)
def test_bad_path(target: str) -> None:
    result = ws(ws_router("/a/{x}"), target)
    assert isinstance(result, BadPath)
    assert result.status == 400
    assert target not in result.reason


# Hostile targets.


@pytest.mark.parametrize("target", ["*", "http://host/abs", "ws://host/a/b", "", "?x=/a/b", "a/b"])
def test_target_not_in_origin_form_is_bad(target: str) -> None:
    assert ws(ws_router("/a/{x}"), target) == BadPath("the request target is not a path")


def test_double_slash_target_is_a_path() -> None:
    router = ws_router("/{p:path}")
    assert params(router, "//evil.com/x") == {"p": "/evil.com/x"}
    assert ws(ws_router("/x"), "//evil.com/x") == NotFound()


@pytest.mark.parametrize("target", ["/a/..", "/a/%2E%2E", "/a/.%2e"])
def test_dot_segments_are_not_resolved(target: str) -> None:
    assert params(ws_router("/a/{x}"), target) == {"x": ".."}


def test_overlong_target_has_no_special_limit() -> None:
    router = ws_router("/a/{x}", "/b/{x}/c")
    long = "x" * 100_000
    assert params(router, f"/a/{long}") == {"x": long}
    assert ws(router, f"/b/{long}/d") == NotFound()


# Results and their statuses.


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (Matched(Route("/", None, "http"), {}, ""), 200),
        (NotFound(), 404),
        (NotWebSocket(), 404),
        (UpgradeRequired(Route("/", None, "websocket")), 426),
        (MethodNotAllowed(frozenset({"GET"})), 405),
        (Redirect("/"), 308),
        (BadPath("x"), 400),
    ],
)
def test_result_status(result: object, status: int) -> None:
    assert result.status == status  # type: ignore[attr-defined]


def test_plain_request_to_websocket_route_requires_upgrade() -> None:
    router = Router()
    route = router.add("/ws/{room}", "ws", kind="websocket")
    assert http(router, "/ws/1") == UpgradeRequired(route)


def test_upgrade_to_http_route_is_not_websocket() -> None:
    router = Router()
    router.add("/health", "health", kind="http")
    router.add("/items/{id:int}", "items", kind="http")
    assert ws(router, "/health") == NotWebSocket()
    assert ws(router, "/items/1") == NotWebSocket()
    assert ws(router, "/items/x") == NotFound()


def test_same_path_for_websocket_and_http() -> None:
    router = Router()
    socket = router.add("/chat/{room}", "socket", kind="websocket")
    page = router.add("/chat/{room}", "page", kind="http", methods=["GET"])
    assert ws(router, "/chat/1") == Matched(socket, {"room": "1"}, "")
    assert http(router, "/chat/1") == Matched(page, {"room": "1"}, "")


def test_lookup_is_per_kind() -> None:
    # An HTTP template that matches first does not hide a WebSocket one.
    router = Router()
    router.add("/items/{id:int}", "page", kind="http")
    socket = router.add("/items/{name}", "socket", kind="websocket")
    assert ws(router, "/items/5") == Matched(socket, {"name": "5"}, "")
    assert http(router, "/items/abc") == UpgradeRequired(socket)


def test_method_not_allowed_lists_methods() -> None:
    router = Router()
    router.add("/items/{id}", "read", kind="http", methods=["GET"])
    router.add("/items/{other}", "write", kind="http", methods=["POST", "PUT"])
    result = http(router, "/items/1", "DELETE")
    assert result == MethodNotAllowed(frozenset({"GET", "HEAD", "POST", "PUT"}))


def test_options_is_not_special() -> None:
    router = Router()
    router.add("/items", "read", kind="http", methods=["GET"])
    assert http(router, "/items", "OPTIONS") == MethodNotAllowed(frozenset({"GET", "HEAD"}))


def test_methods_select_the_route() -> None:
    router = Router()
    read = router.add("/items/{id}", "read", kind="http", methods=["GET"])
    write = router.add("/items/{id}", "write", kind="http", methods=["POST"])
    assert http(router, "/items/1", "POST") == Matched(write, {"id": "1"}, "")
    assert http(router, "/items/1", "HEAD") == Matched(read, {"id": "1"}, "")
    assert read.methods == frozenset({"GET", "HEAD"})
    assert write.methods == frozenset({"POST"})


def test_head_is_not_implied_without_get() -> None:
    router = Router()
    router.add("/items", "write", kind="http", methods=["POST"])
    assert http(router, "/items", "HEAD") == MethodNotAllowed(frozenset({"POST"}))


def test_methods_none_takes_any_method() -> None:
    router = Router()
    route = router.add("/any", "any", kind="http")
    for method in ["GET", "POST", "BREW"]:
        assert http(router, "/any", method) == Matched(route, {}, "")


# Trailing slashes.


@pytest.mark.parametrize(
    ("template", "target", "location"),
    [
        ("/items", "/items/", "/items"),
        ("/items", "/items/?page=2&x", "/items?page=2&x"),
        ("/items/", "/items", "/items/"),
        ("/items/", "/items?", "/items/?"),
        ("/items/{id}", "/items/1/?a=b", "/items/1?a=b"),
        ("/caf\u00e9/", "/caf%c3%a9", "/caf%C3%A9/"),
    ],
)
def test_plain_request_is_redirected_to_twin(template: str, target: str, location: str) -> None:
    router = Router()
    router.add(template, "page", kind="http")
    assert http(router, target) == Redirect(location)


def test_plain_request_is_redirected_to_websocket_only_twin() -> None:
    router = ws_router("/ws")
    assert http(router, "/ws/") == Redirect("/ws")


def test_websocket_request_is_never_redirected() -> None:
    router = ws_router("/ws", "/rooms/")
    router.add("/page", "page", kind="http")
    assert ws(router, "/ws/") == NotFound()
    assert ws(router, "/rooms") == NotFound()
    assert ws(router, "/page/") == NotFound()


def test_redirect_slashes_off_is_strict() -> None:
    router = Router(redirect_slashes=False)
    router.add("/items", "page", kind="http")
    assert http(router, "/items/") == NotFound()


def test_root_has_no_twin() -> None:
    router = Router()
    router.add("//", "odd", kind="http")
    assert http(router, "/") == NotFound()


def test_no_redirect_to_another_host() -> None:
    router = Router(convertors={"maybe": MaybeConvertor()})
    router.add("/{a:maybe}/{b}/{c}/", "page", kind="http")
    assert http(router, "//evil.com/x/") != NotFound()
    assert http(router, "//evil.com/x") == NotFound()


def test_no_redirect_when_path_matches_with_other_method() -> None:
    router = Router()
    router.add("/items/", "page", kind="http", methods=["POST"])
    router.add("/items", "page", kind="http", methods=["GET"])
    assert http(router, "/items/") == MethodNotAllowed(frozenset({"POST"}))


# Mounting.


def test_mount_nested_two_levels() -> None:
    inner = Router()
    inner.add("/{id:int}", "user", kind="websocket", name="user")
    middle = Router()
    middle.add("/status", "status", kind="http")
    middle.mount("/users", inner)
    outer = Router()
    outer.mount("/admin", middle)
    result = ws(outer, "/admin/users/7")
    assert isinstance(result, Matched)
    assert result.params == {"id": 7}
    assert result.route == Route("/admin/users/{id:int}", "user", "websocket", name="user")
    assert http(outer, "/admin/status") != NotFound()
    assert http(outer, "/admin/users/7") == UpgradeRequired(result.route)
    assert outer.url_path_for("user", id=7) == "/admin/users/7"
    assert middle.url_path_for("user", id=7) == "/users/7"


def test_mount_root_route_becomes_prefix_exactly() -> None:
    sub = ws_router("/")
    router = Router(redirect_slashes=False)
    router.mount("/admin", sub)
    result = ws(router, "/admin")
    assert isinstance(result, Matched)
    assert result.route.path == "/admin"
    assert ws(router, "/admin/") == NotFound()


def test_mount_uses_sub_router_convertors() -> None:
    sub = Router(convertors={"even": EvenConvertor()})
    sub.add("/{n:even}", "even", kind="websocket")
    router = Router()
    router.mount("/n", sub)
    assert params(router, "/n/4") == {"n": 4}
    assert ws(router, "/n/3") == NotFound()


def test_mount_prefix_is_encoded() -> None:
    router = Router()
    router.mount("/café", ws_router("/x"))
    assert params(router, "/caf%C3%A9/x") == {}


def test_mount_keeps_registration_order() -> None:
    router = ws_router("/items/{name}")
    router.mount("/items", ws_router("/{id:int}"))
    result = ws(router, "/items/5")
    assert isinstance(result, Matched)
    assert result.route.path == "/items/{name}"


@pytest.mark.parametrize("prefix", ["", "/", "admin", "/admin/", "/admin/{x}", "/a{"])
def test_mount_prefix_is_checked(prefix: str) -> None:
    with pytest.raises(ValueError, match="mount prefix"):
        Router().mount(prefix, Router())


def test_mount_cycle_is_refused() -> None:
    outer, inner = Router(), Router()
    outer.mount("/inner", inner)
    with pytest.raises(ValueError, match="cycle"):
        inner.mount("/outer", outer)
    with pytest.raises(ValueError, match="cycle"):
        outer.mount("/self", outer)


def test_freezing_freezes_mounted_routers() -> None:
    sub = Router()
    router = Router()
    router.mount("/sub", sub)
    router.freeze()
    with pytest.raises(RuntimeError, match="fixed"):
        sub.add("/x", "x", kind="websocket")


def test_mount_conflict_is_found_at_compile() -> None:
    router = ws_router("/admin/x")
    router.mount("/admin", ws_router("/x"))
    with pytest.raises(ValueError, match="duplicate route"):
        router.freeze()


def test_mount_duplicate_name_is_found_at_compile() -> None:
    router = Router()
    router.add("/a", "a", kind="websocket", name="index")
    sub = Router()
    sub.add("/b", "b", kind="websocket", name="index")
    router.mount("/sub", sub)
    with pytest.raises(ValueError, match="duplicate route name 'index'"):
        ws(router, "/a")


# Templates and routes, checked at add().


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("chat", "starts with '/'"),
        ("", "starts with '/'"),
        ("/{x:nope}", "unknown convertor 'nope'"),
        ("/{x:}", "unknown convertor ''"),
        ("/{x}/{x:int}", "duplicate parameter 'x'"),
        ("/{x", "unbalanced brace"),
        ("/x}", "unbalanced brace"),
        ("/{{x}}", "unbalanced brace"),
        ("/{}", "not a Python identifier"),
        ("/{:int}", "not a Python identifier"),
        ("/{1x}", "not a Python identifier"),
        ("/{ x }", "not a Python identifier"),
        ("/{class}", "not a Python identifier"),
        ("/{p:path}/x", "must end the template"),
        ("/{a}{b}", "follows another"),
    ],
)
def test_invalid_template(template: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Router().add(template, "x", kind="websocket")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("/a", "websocket", None), ("/a", "websocket", None)),
        (("/a/{x}", "websocket", None), ("/a/{y}", "websocket", None)),
        (("/a", "http", ["GET"]), ("/a", "http", ["POST", "GET"])),
        (("/a", "http", ["GET"]), ("/a", "http", ["HEAD"])),
        (("/a", "http", None), ("/a", "http", ["POST"])),
        (("/a", "http", ["POST"]), ("/a", "http", None)),
    ],
)
def test_duplicate_route(
    first: tuple[str, str, list[str] | None], second: tuple[str, str, list[str] | None]
) -> None:
    router = Router()
    router.add(first[0], "x", kind=first[1], methods=first[2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate route"):
        router.add(second[0], "y", kind=second[1], methods=second[2])  # type: ignore[arg-type]


def test_routes_that_do_not_overlap_are_not_duplicates() -> None:
    router = Router()
    router.add("/a", "w", kind="websocket")
    router.add("/a", "g", kind="http", methods=["GET"])
    router.add("/a", "p", kind="http", methods=["POST"])
    router.add("/a/{x:int}", "i", kind="websocket")
    router.add("/a/{x}", "s", kind="websocket")


def test_duplicate_name() -> None:
    router = Router()
    router.add("/a", "a", kind="websocket", name="index")
    with pytest.raises(ValueError, match="duplicate route name 'index'"):
        router.add("/b", "b", kind="http", name="index")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"kind": "sse"}, "kind is 'websocket' or 'http'"),
        ({"kind": "websocket", "methods": ["GET"]}, "methods are for HTTP routes"),
        ({"kind": "http", "methods": []}, "methods is empty"),
        ({"kind": "http", "methods": ["get"]}, "not uppercase"),
        ({"kind": "http", "methods": ["G T"]}, "invalid method"),
    ],
)
def test_invalid_route(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Router().add("/a", "x", **kwargs)  # type: ignore[arg-type]


def test_methods_as_string_is_refused() -> None:
    with pytest.raises(TypeError, match="not a string"):
        Router().add("/a", "x", kind="http", methods="GET")


@pytest.mark.parametrize("compile_by", ["match", "url_path_for", "freeze"])
def test_routes_are_fixed_after_compile(compile_by: str) -> None:
    router = ws_router("/a")
    router.add("/b", "b", kind="http", name="b")
    if compile_by == "match":
        ws(router, "/a")
    elif compile_by == "url_path_for":
        router.url_path_for("b")
    else:
        router.freeze()
        router.freeze()  # again: nothing happens
    with pytest.raises(RuntimeError, match="routes are fixed once the router has compiled"):
        router.add("/c", "c", kind="websocket")
    with pytest.raises(RuntimeError, match="routes are fixed"):
        router.mount("/d", Router())


# Reversing.


@pytest.mark.parametrize(
    ("template", "value", "path"),
    [
        ("/u/{x}", "Jürgen", "/u/J%C3%BCrgen"),
        ("/u/{x}", "a/b", "/u/a%2Fb"),
        ("/u/{x}", "100%", "/u/100%25"),
        ("/u/{x}", "a b?#", "/u/a%20b%3F%23"),
        ("/u/{x}", "~a+b:@", "/u/~a+b:@"),
        ("/u/{x:int}", 42, "/u/42"),
        ("/u/{x:float}", 1.5, "/u/1.5"),
        ("/u/{x:float}", 0.1, "/u/0.1"),
        ("/u/{x:float}", 1e20, "/u/100000000000000000000"),
        ("/u/{x:float}", 2.0, "/u/2.0"),
        ("/u/{x:uuid}", UID, f"/u/{UID}"),
        ("/u/{x:path}", "a/b/ü", "/u/a/b/%C3%BC"),
        ("/café/{x}", "y", "/caf%C3%A9/y"),
    ],
)
def test_url_path_for_round_trip(template: str, value: object, path: str) -> None:
    router = Router()
    router.add(template, "x", kind="websocket", name="x")
    assert router.url_path_for("x", x=value) == path
    assert params(router, path) == {"x": value}


def test_url_path_for_static_route_and_param_called_name() -> None:
    router = Router()
    router.add("/", "home", kind="http", name="home")
    router.add("/users/{name}", "user", kind="http", name="user")
    assert router.url_path_for("home") == "/"
    assert router.url_path_for("user", name="bob") == "/users/bob"


def test_url_path_for_unknown_name() -> None:
    with pytest.raises(KeyError, match="no route named 'x'"):
        ws_router("/a").url_path_for("x")


@pytest.mark.parametrize("given", [{}, {"x": 1, "y": 2}, {"y": 1}])
def test_url_path_for_wrong_parameters(given: dict[str, object]) -> None:
    router = Router()
    router.add("/{x:int}", "x", kind="websocket", name="x")
    with pytest.raises(TypeError, match=r"takes parameters \['x'\]"):
        router.url_path_for("x", **given)


@pytest.mark.parametrize(
    ("template", "value"),
    [("/{x:int}", -1), ("/{x}", ""), ("/{x:float}", float("inf")), ("/{x:float}", -0.5)],
)
def test_url_path_for_value_that_cannot_match(template: str, value: object) -> None:
    router = Router()
    router.add(template, "x", kind="websocket", name="x")
    with pytest.raises(ValueError, match="not a valid value for parameter 'x'"):
        router.url_path_for("x", x=value)
