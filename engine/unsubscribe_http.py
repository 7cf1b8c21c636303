"""The one-click unsubscribe endpoint (RFC 8058): a tiny HTTP server `playbook start` can run.

GET  /unsubscribe?e=ADDRESS&t=TOKEN  -> a page with a confirm button (mail scanners follow GETs,
                                        so a GET alone never unsubscribes)
POST /unsubscribe?e=ADDRESS&t=TOKEN  -> verifies the signed token and adds the address to the
                                        suppression list (body `List-Unsubscribe=One-Click` from
                                        mail clients, or the confirm form)
Put it behind your reverse proxy at the URL configured as connectors.email.unsubscribe_url.
"""

from __future__ import annotations

import html
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlparse

from engine.clock import wall_clock
from engine.consent import verify
from engine.store import Store

log = logging.getLogger("playbook.unsubscribe")
PAGE = """<!doctype html><meta charset="utf-8"><title>Unsubscribe</title>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body>"""


def make_handler(store: Store, secret: bytes, on_unsubscribe: Callable[[str], None] | None = None) -> type:
    """A request handler class bound to one store and signing secret."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "playbook-engine"

        def _params(self) -> tuple[str, str] | None:
            q = parse_qs(urlparse(self.path).query)
            address, token = (q.get("e") or [""])[0], (q.get("t") or [""])[0]
            if not address or not token or not verify(secret, address, token):
                return None
            return address, token

        def _send(self, code: int, body: str) -> None:
            data = PAGE.format(body=body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            params = self._params()
            if urlparse(self.path).path.rstrip("/").endswith("/healthz"):
                return self._send(200, "ok")
            if params is None:
                return self._send(400, "<p>This unsubscribe link is not valid.</p>")
            address = html.escape(params[0])
            self._send(200, f"<p>Stop emails to <b>{address}</b>?</p><form method=post>"
                            f"<button name=List-Unsubscribe value=One-Click>Unsubscribe</button></form>")

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(min(length, 4096))
            params = self._params()
            if params is None:
                return self._send(400, "<p>This unsubscribe link is not valid.</p>")
            with store.write() as tx:
                tx.suppressions.add(params[0], "unsubscribed", wall_clock(), "one-click link")
            if on_unsubscribe:
                on_unsubscribe(params[0])
            self._send(200, f"<p><b>{html.escape(params[0])}</b> will receive no more emails from us.</p>")

        def log_message(self, fmt: str, *args: object) -> None:  # addresses stay out of access logs
            log.debug("unsubscribe endpoint: %s", self.command)

    return Handler


def serve(store: Store, secret: bytes, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; returns the server (call shutdown() to stop)."""
    server = ThreadingHTTPServer((host, port), make_handler(store, secret))
    threading.Thread(target=server.serve_forever, name="unsubscribe-http", daemon=True).start()
    return server
