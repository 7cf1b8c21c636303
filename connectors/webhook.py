"""Outgoing webhooks (§9), and the small stdlib HTTP client the CRM task connectors share.

Each webhook action is one JSON request (POST, PUT or PATCH) to the rendered `url`, with the
rendered `headers` plus:

* `Content-Type: application/json`
* `Idempotency-Key: <dedup key>` — stable across retries, so the receiver can drop duplicates;
  that is why an ambiguous attempt is simply resent (`on_ambiguous = "resend"`).
* when `connectors.webhook.secret` is set, a signature:

      X-Playbook-Timestamp: <unix seconds>
      X-Playbook-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body bytes)>

  The receiver recomputes the HMAC over the timestamp, a dot, and the raw request body exactly
  as received (before any JSON parsing), compares with `hmac.compare_digest`, and rejects
  timestamps older than a few minutes to stop replays.

2xx is sent; 408, 425, 429 and 5xx are transient (honouring `Retry-After` in seconds or as an
HTTP-date); other statuses — redirects included, which are never followed — are permanent.
Connection errors and timeouts are transient. Details name the host only: URLs and headers may
carry credentials.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import http.client
import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from connectors.base import BaseConnector, Delivery, Outcome
from engine.settings import WebhookConnector as WebhookSettings
from engine.store.outbox import Claimed

MAX_BODY = 1 << 20          # read at most 1 MiB of any answer
METHODS = ("POST", "PUT", "PATCH")
RESERVED = {"content-type", "content-length", "host", "idempotency-key", "x-playbook-signature",
            "x-playbook-timestamp"}
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
            wait: float | None = None) -> Delivery:
    """A non-2xx answer as a Delivery: 408/425/429/5xx transient (with Retry-After), others permanent."""
    detail = f"{service} answered HTTP {resp.status}: {message or resp.snippet() or 'no body'}"
    result = {"status": resp.status}
    if resp.status in TRANSIENT_STATUSES or resp.status >= 500:
        return Delivery(Outcome.TRANSIENT, detail, wait if wait is not None else retry_after(resp.headers), result)
    if 300 <= resp.status < 400:
        where = urlsplit(resp.headers.get("location", "")).hostname or "the same host"
        detail = f"{service} answered HTTP {resp.status}, a redirect to {where}: redirects are not followed"
    return Delivery(Outcome.PERMANENT, detail, None, result)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Playbook-Signature value for a body sent at `timestamp`."""
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


class WebhookConnector(BaseConnector):
    """Sends each webhook action as one JSON request; receivers deduplicate by Idempotency-Key."""

    name = "webhook"
    on_ambiguous = "resend"

    def __init__(self, conf: WebhookSettings | None = None, *, now: Callable[[], float] = time.time):
        self.timeout = conf.timeout if conf is not None else 10.0
        self._secret = conf.secret.get_secret_value().encode() if conf is not None and conf.secret else None
        self._now = now

    def deliver(self, item: Claimed) -> Delivery:
        """POST/PUT/PATCH the rendered JSON body to the rendered URL."""
        p = item.payload
        method = str(p.get("method") or "POST").upper()
        url = str(p.get("url") or "")
        host = urlsplit(url).hostname or "?"
        if method not in METHODS:
            return Delivery(Outcome.PERMANENT, f"webhook method `{method}` is not one of {', '.join(METHODS)}")
        body = json.dumps(p.get("body"), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {str(k): str(v) for k, v in (p.get("headers") or {}).items() if str(k).lower() not in RESERVED}
        headers.update({"Content-Type": "application/json", "Idempotency-Key": item.dedup_key,
                        "User-Agent": "playbook-engine"})
        if self._secret is not None:
            stamp = str(int(self._now()))
            headers["X-Playbook-Timestamp"] = stamp
            headers["X-Playbook-Signature"] = sign(self._secret, stamp, body)
        try:
            resp = http_call(method, url, body=body, headers=headers, timeout=self.timeout)
        except NetworkError as exc:
            return Delivery(Outcome.TRANSIENT, f"webhook to {host}: {exc}")
        except ValueError as exc:
            return Delivery(Outcome.PERMANENT, f"webhook to {host}: {exc}")
        if resp.ok:
            return Delivery(Outcome.SENT, f"{method} {host}: HTTP {resp.status}", result={"status": resp.status})
        return failure(resp, f"webhook {host}")
