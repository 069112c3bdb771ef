#!/usr/bin/env bash
# uvicorn's own WebSocket tests (tests/protocols/test_websocket.py of the
# released sdist), with rapidws.asgi:UvicornProtocol added to their
# ws_protocol_cls parametrization. Runs in a throwaway directory; needs
# uvicorn[standard], wsproto, websockets, httpx2, pytest-mock, trustme, anyio.
#
#   PYTHON=.venv/bin/python bash tests/asgi/uvicorn_suite.sh
#
# Deselected, with the reason (see README "ASGI"):
# - deliberate: an app error after accept closes with 1011, a return without
#   close closes with 1000 (uvicorn drops TCP: the peer sees 1006);
# - the keepalive tests assert isinstance() on uvicorn's own classes;
# - the MockWebSocketConnection tests drive a fake transport that lacks
#   set_write_buffer_limits()/can_write_eof() and read private attributes.
set -euo pipefail
VERSION="${UVICORN_VERSION:-0.55.0}"
PYTHON="${PYTHON:-python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m pip download -q --no-deps --no-binary :all: "uvicorn==$VERSION" -d "$WORK"
tar xzf "$WORK/uvicorn-$VERSION.tar.gz" -C "$WORK"
cd "$WORK/uvicorn-$VERSION"
"$PYTHON" - <<'PY'
import pathlib
path = pathlib.Path("tests/conftest.py")
text = path.read_text()
anchor = 'id="websockets-sansio"\n        ),\n'
assert anchor in text, "uvicorn's ws_protocol_cls fixture changed"
path.write_text(text.replace(
    anchor, anchor + '        pytest.param("rapidws.asgi:UvicornProtocol", id="rapidws"),\n', 1
))
PY
DESELECT=(
  test_duplicate_handshake test_asgi_return_value test_close_transport_on_asgi_return
  test_server_keepalive_ping_pong test_server_keepalive_disabled
  test_send_respects_write_backpressure test_close_waits_for_the_peer_close_frame
  test_close_resumes_reads_paused_on_an_unconsumed_message
  test_data_frame_while_closing_does_not_pause_reads
  test_data_frame_and_peer_close_frame_in_one_read test_ping_while_closing
  test_close_gives_up_when_the_peer_never_replies
  test_connection_lost_cancels_the_pending_close_timer
  test_shutdown_while_the_close_reply_is_pending test_shutdown_during_denial_response
  test_send_after_peer_close_raises_client_disconnected
  test_connection_lost_unblocks_paused_send
)
EXPR="rapidws"
for name in "${DESELECT[@]}"; do EXPR="$EXPR and not $name"; done
"$PYTHON" -m pytest tests/protocols/test_websocket.py -o addopts="" -p no:cacheprovider \
  -q -k "$EXPR"
