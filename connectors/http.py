"""Small HTTP client helpers shared by the HTTP connectors (stdlib urllib, no redirects, Retry-After), and the
request to a URL built from a playbook or its data, made only to an address the `outbound` rule allows."""

from __future__ import annotations

import email.utils
import json
import http.client
import math
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Mapping
from urllib.parse import urlsplit

from engine.delivery import Outcome, Receipt
from engine.outbound import Outbound

MAX_BODY = 1 << 20          # read at most 1 MiB of any answer
TRANSIENT_STATUSES = {408, 425, 429}

class NetworkError(Exception):
    """The request got no HTTP answer (refused, reset, DNS, TLS, timeout). Never carries secrets."""


@dataclass(frozen=True)
class HttpResponse:
    """An HTTP answer: status, lower-cased headers and (at most MAX_BODY of) the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def snippet(self, limit: int = 200) -> str:
        """The start of the body as one line of text, for error details."""
        text = self.body[:limit * 4].decode("utf-8", "replace")
        text = " ".join(text.split())
        return text[:limit] + ("…" if len(text) > limit else "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: urllib would turn a redirected POST into a GET without its body."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http_url(value: str | None) -> str | None:
    """A configured URL http_call can use: http:// or https://, else ValueError (the URL itself is not repeated:
    it may carry a token)."""
    if value is not None and urlsplit(value).scheme not in ("http", "https"):
        raise ValueError("the URL must start with http:// or https://")
    return value


def http_call(method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None,
              timeout: float) -> HttpResponse:
    """One HTTP request; any status comes back as an HttpResponse, a missing answer raises NetworkError.

    Raises ValueError for a URL that is not http(s) or a header value that cannot be sent.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("the URL must start with http:// or https://")
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return HttpResponse(resp.status, _lower(resp.headers), resp.read(MAX_BODY))
    except urllib.error.HTTPError as exc:
        with exc:
            data = exc.read(MAX_BODY) if exc.fp is not None else b""
        return HttpResponse(exc.code, _lower(exc.headers), data)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise NetworkError(f"timed out after {timeout:g}s") from None
        raise NetworkError(f"cannot connect: {reason}") from None
    except TimeoutError:
        raise NetworkError(f"timed out after {timeout:g}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise NetworkError(f"{type(exc).__name__}: {exc}") from None


def pinned_call(method: str, url: str, outbound: Outbound, *, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: float) -> HttpResponse:
    """One HTTP request to a URL from a playbook or its data: its host is resolved once, the addresses the
    `outbound` rule refuses are left out, and the connection goes to an address that was checked (TLS still
    verifies the host name). No proxy, no redirects.

    Raises engine.outbound.Refused (nothing was sent), ValueError for a URL that cannot be requested, NetworkError for no answer.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("the URL must start with http:// or https://")
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("the URL's port is not a number from 1 to 65535") from None
    if not host:
        raise ValueError("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL holds credentials (user:password@); send them in a header instead")
    try:
        addresses = outbound.resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise NetworkError(f"cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}") from None
    cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    conn = cls(host, port, timeout=timeout)
    conn.addresses = addresses
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return HttpResponse(resp.status, _lower(resp.headers), resp.read(MAX_BODY))
    except TimeoutError:
        raise NetworkError(f"timed out after {timeout:g}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise NetworkError(f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


def _connect(addresses: list[tuple[int, tuple]], timeout: float | None) -> socket.socket:
    """A socket connected to the first of these (checked) addresses that answers."""
    error: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError("no address to connect to")


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to checked addresses (the Host header still names the URL's host)."""

    addresses: list[tuple[int, tuple]] = []

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to checked addresses; the certificate is verified for the URL's host name."""

    addresses: list[tuple[int, tuple]] = []

    def __init__(self, host: str, port: int, *, timeout: float):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)

    def connect(self) -> None:
        sock = _connect(self.addresses, self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers.items() if headers is not None else [])}


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), else None."""
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def failure(resp: HttpResponse, service: str, message: str | None = None,
            wait: float | None = None) -> Receipt:
    """A non-2xx answer as a Receipt: 408/425/429/5xx transient (with Retry-After), others permanent."""
    detail = f"{service} answered HTTP {resp.status}: {message or resp.snippet() or 'no body'}"
    result = {"status": resp.status}
    if resp.status in TRANSIENT_STATUSES or resp.status >= 500:
        return Receipt(Outcome.TRANSIENT, detail, wait if wait is not None else retry_after(resp.headers), result)
    if 300 <= resp.status < 400:
        where = urlsplit(resp.headers.get("location", "")).hostname or "the same host"
        detail = f"{service} answered HTTP {resp.status}, a redirect to {where}: redirects are not followed"
    return Receipt(Outcome.PERMANENT, detail, None, result)


class Failed(Exception):
    """A vendor call failed; carries the Receipt the connector returns."""

    def __init__(self, delivery: Receipt):
        super().__init__(delivery.detail)
        self.delivery = delivery


def bearer_json_call(method: str, url: str, token: str, body: Any, *, timeout: float, service: str) -> HttpResponse:
    """A JSON request with a bearer token; network trouble raises Failed (transient), a bad request Failed
    (permanent). HTTP error statuses come back as the response, for the connector to judge."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
    try:
        return http_call(method, url, body=data, headers=headers, timeout=timeout)
    except NetworkError as exc:
        raise Failed(Receipt(Outcome.TRANSIENT, f"cannot reach {service}: {exc}")) from None
    except ValueError as exc:
        raise Failed(Receipt(Outcome.PERMANENT, f"{service} request: {exc}")) from None
