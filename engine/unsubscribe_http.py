"""The one-click unsubscribe endpoint (RFC 8058): a small HTTP server `playbook start` can run.

GET  …/unsubscribe?e=ADDRESS&t=TOKEN  -> a page with a confirm button (mail scanners follow GETs,
                                         so a GET alone never unsubscribes)
POST …/unsubscribe?e=ADDRESS&t=TOKEN  -> verifies the signed token and adds the address to the
                                         suppression list (body `List-Unsubscribe=One-Click` from
                                         mail clients, or the confirm form)
GET  …/healthz                        -> ok
Put it behind your reverse proxy at the URL configured as connectors.email.unsubscribe_url.

The server is waitress (a maintained, pure-Python WSGI server with no dependencies), because it gives what an
endpoint facing the internet needs without our own socket code: connections are read by one event loop, so a
slow or half-sent request holds a socket, never a thread; requests are served by a fixed pool of THREADS; at most
CONNECTIONS are open at once (more wait in the kernel's backlog); idle connections close after IDLE_SECONDS;
malformed requests (`Content-Length: abc`, oversized headers or bodies) are answered 400 (413/431) by its parser.
On top of it here: a request not received completely within REQUEST_SECONDS is closed, however slowly it trickles
in; a body over MAX_BODY is a 400; and every refused request is one log line (a JSON object with
`--log-format json`), never a traceback. Addresses never reach the log."""

from __future__ import annotations

import html
import logging
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask
from waitress import wasyncore

from engine.clock import wall_clock
from engine.consent import verify
from engine.store import Store

log = logging.getLogger("playbook.unsubscribe")
DEFAULT_HOST = "127.0.0.1"      # reachable from this machine (its reverse proxy) only, unless told otherwise
THREADS = 4                     # requests served at once
CONNECTIONS = 100               # connections open at once
IDLE_SECONDS = 15               # an open connection with nothing to do is closed after this
REQUEST_SECONDS = 10            # a request must arrive completely within this
MAX_BODY = 4096                 # bytes of a POST body (`List-Unsubscribe=One-Click` is 26)
MAX_HEADERS = 8192              # bytes of the request line and headers
MAX_ADDRESS = 320               # characters of an email address
PAGE = """<!doctype html><meta charset="utf-8"><title>Unsubscribe</title>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body>"""
HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
           ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
           ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")]
STATUS = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found", 405: "405 Method Not Allowed",
          503: "503 Service Unavailable"}


class _Refused(Exception):
    def __init__(self, status: int, reason: str, page: str):
        self.status, self.reason, self.page = status, reason, page


def make_app(store: Store, secret: bytes, on_unsubscribe: Callable[[str], None] | None = None) -> Callable:
    """The WSGI application of the endpoint, bound to one store and signing secret."""

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        try:
            status, body = _answer(environ, store, secret, on_unsubscribe)
        except _Refused as exc:
            log.warning("unsubscribe request refused: %s", exc.reason,
                        extra={"status": exc.status, "method": environ.get("REQUEST_METHOD")})
            status, body = exc.status, exc.page
        except Exception as exc:  # noqa: BLE001 - e.g. the database is restarting: the link works again later
            log.error("unsubscribe request failed: %s", type(exc).__name__, extra={"status": 503})
            log.debug("unsubscribe request failed", exc_info=True)
            status, body = 503, "<p>Please try again in a few minutes.</p>"
        data = PAGE.format(body=body).encode()
        headers = HEADERS + [("Content-Length", str(len(data)))]
        if status == 405:
            headers.append(("Allow", "GET, HEAD, POST"))
        start_response(STATUS[status], headers)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else data]

    return app


def _answer(environ: dict[str, Any], store: Store, secret: bytes,
            on_unsubscribe: Callable[[str], None] | None) -> tuple[int, str]:
    method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
    if "\x00" in path or not path.startswith("/"):
        raise _Refused(400, "malformed path", "<p>Bad request.</p>")
    endpoint = path.rstrip("/").rsplit("/", 1)[-1]
    if endpoint not in ("unsubscribe", "healthz"):
        raise _Refused(404, "unknown path", "<p>Not found.</p>")
    if method not in ("GET", "HEAD", "POST"):
        raise _Refused(405, f"method {method[:20]} not allowed", "<p>Method not allowed.</p>")
    if endpoint == "healthz":
        return 200, "ok"
    if method == "POST":
        _read_body(environ)
    address = _verified(environ.get("QUERY_STRING", ""), secret)
    shown = html.escape(address)
    if method != "POST":
        return 200, (f"<p>Stop emails to <b>{shown}</b>?</p><form method=post>"
                     f"<button name=List-Unsubscribe value=One-Click>Unsubscribe</button></form>")
    with store.write() as tx:
        tx.suppressions.add(address, "unsubscribed", wall_clock(), "one-click link")
    if on_unsubscribe:
        on_unsubscribe(address)
    return 200, f"<p><b>{shown}</b> will receive no more emails from us.</p>"


def _read_body(environ: dict[str, Any]) -> bytes:
    """The POST body (at most MAX_BODY bytes; waitress has read it already)."""
    length = environ.get("CONTENT_LENGTH") or "0"
    if not length.isdigit():
        raise _Refused(400, "malformed Content-Length", "<p>Bad request.</p>")
    if int(length) > MAX_BODY:
        raise _Refused(400, "body too large", "<p>Bad request.</p>")
    return environ["wsgi.input"].read(int(length))


def _verified(query: str, secret: bytes) -> str:
    """The address of a link whose token is valid for it."""
    invalid = _Refused(400, "invalid unsubscribe link", "<p>This unsubscribe link is not valid.</p>")
    try:
        params = parse_qs(query, errors="strict", max_num_fields=10)
    except (ValueError, UnicodeDecodeError):
        raise invalid from None
    address, token = (params.get("e") or [""])[0], (params.get("t") or [""])[0]
    if not address or not token or len(address) > MAX_ADDRESS or len(token) > 64 \
            or not verify(secret, address, token):
        raise invalid
    return address


# ---- the server --------------------------------------------------------------------------------
class _ErrorTask(ErrorTask):
    """waitress's answer to a request its parser refused (400, 413, 431), logged as one line."""

    def execute(self) -> None:
        error = self.request.error
        log.warning("unsubscribe request refused: %s", getattr(error, "reason", "malformed request"),
                    extra={"status": getattr(error, "code", 400)})
        super().execute()


class _Channel(HTTPChannel):
    """A connection that notes when the request it is reading started."""

    error_task_class = _ErrorTask
    request_started = 0.0

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.monotonic()
        return super().received(data)


class _Server(TcpWSGIServer):
    channel_class = _Channel

    def maintenance(self, now: float) -> None:
        """Close idle connections (waitress) and those whose request has not arrived in REQUEST_SECONDS."""
        super().maintenance(now)
        late = time.monotonic() - REQUEST_SECONDS
        for channel in list(self.active_channels.values()):
            if channel.request is not None and not channel.requests and channel.request_started < late:
                log.warning("unsubscribe request refused: not received within %d s", REQUEST_SECONDS,
                            extra={"status": 408})
                channel.will_close = True


class Endpoint:
    """The running endpoint: its address, and shutdown()."""

    def __init__(self, server: _Server):
        self.server = server
        self.host, self.port = server.effective_host, int(server.effective_port)
        self.thread = threading.Thread(target=server.run, name="unsubscribe-http", daemon=True)
        self.thread.start()

    def shutdown(self) -> None:
        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self.server._map)
        self.thread.join(timeout=5)


def serve(store: Store, secret: bytes, host: str = DEFAULT_HOST, port: int = 8025) -> Endpoint:
    """Start the endpoint in a daemon thread."""
    server = _Server(make_app(store, secret), host=host, port=port, threads=THREADS, connection_limit=CONNECTIONS,
                     channel_timeout=IDLE_SECONDS, cleanup_interval=1, max_request_header_size=MAX_HEADERS,
                     max_request_body_size=64 * 1024, ident="playbook-engine", expose_tracebacks=False,
                     clear_untrusted_proxy_headers=True, asyncore_use_poll=True)
    return Endpoint(server)
