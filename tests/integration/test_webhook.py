"""The webhook connector against a real local HTTP server: headers, signature, status mapping."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.delivery import Outcome
from engine.outbound import Outbound, OutboundConfig
from engine.plugins import registry
from connectors.http import retry_after
from connectors.webhook import WebhookConnector
from connectors.webhook import WebhookConfig as WebhookSettings
from engine.store.outbox import Claimed

SECRET = "s3cret-webhook-key"
LOCAL = Outbound(OutboundConfig(allow=["127.0.0.1"]))      # the test server listens on the loopback interface


def claimed(payload: dict[str, Any], key: str = "pb/account:a1/1/0/0") -> Claimed:
    return registry().load(Claimed(1, key, "webhook", "webhook", payload, 1, 1, False, "pb", "account", "a1", 1,
                                   datetime(2024, 5, 1), None))


def payload(server: HTTPServer, path: str = "/hook", **extra: Any) -> dict[str, Any]:
    return {"url": server.url_for(path), "method": "POST", "headers": {"X-Team": "cs"},
            "body": {"account": "Acme", "arr": 1200, "note": "café"}, **extra}


def connector(secret: str | None = SECRET, timeout: float = 2.0) -> WebhookConnector:
    return WebhookConnector(WebhookSettings(secret=secret, timeout=timeout), outbound=LOCAL,
                            now=lambda: 1_700_000_000)


def test_post_carries_headers_idempotency_key_and_a_verifiable_signature(httpserver: HTTPServer) -> None:
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response("ok", status=202)

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
    d = connector().deliver(claimed(payload(httpserver)))
    assert d.outcome == Outcome.SENT and d.result == {"status": 202}
    req = seen[0]
    raw = req.get_data()
    assert json.loads(raw) == {"account": "Acme", "arr": 1200, "note": "café"}
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Idempotency-Key"] == "pb/account:a1/1/0/0"
    assert req.headers["X-Team"] == "cs"
    stamp = req.headers["X-Playbook-Timestamp"]
    assert stamp == "1700000000"
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(req.headers["X-Playbook-Signature"], f"sha256={expected}")
    assert SECRET not in (d.detail or "")


def test_payload_headers_cannot_override_ours_and_no_signature_without_secret(httpserver: HTTPServer) -> None:
    seen: list[Request] = []
    httpserver.expect_request("/hook", method="PUT").respond_with_handler(
        lambda r: (seen.append(r), Response("", status=204))[1])
    p = payload(httpserver, method="put", headers={"Idempotency-Key": "mine", "content-type": "text/plain"})
    d = connector(secret=None).deliver(claimed(p))
    assert d.outcome == Outcome.SENT
    h = seen[0].headers
    assert h["Idempotency-Key"] == "pb/account:a1/1/0/0" and h["Content-Type"] == "application/json"
    assert "X-Playbook-Signature" not in h and "X-Playbook-Timestamp" not in h


def test_default_construction_without_config(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="PATCH").respond_with_data("ok")
    d = WebhookConnector(None, outbound=LOCAL).deliver(claimed(payload(httpserver, method="PATCH")))
    assert d.outcome == Outcome.SENT


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_client_errors_are_permanent(httpserver: HTTPServer, status: int) -> None:
    httpserver.expect_request("/hook").respond_with_data('{"error":"nope"}', status=status)
    d = connector().deliver(claimed(payload(httpserver)))
    assert d.outcome == Outcome.PERMANENT
    assert f"HTTP {status}" in d.detail and "nope" in d.detail


def test_429_with_retry_after_seconds_is_transient(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("slow down", status=429, headers={"Retry-After": "120"})
    d = connector().deliver(claimed(payload(httpserver)))
    assert d.outcome == Outcome.TRANSIENT and d.retry_after == 120


def test_503_with_retry_after_http_date_is_transient(httpserver: HTTPServer) -> None:
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=90), usegmt=True)
    httpserver.expect_request("/hook").respond_with_data("down", status=503, headers={"Retry-After": when})
    d = connector().deliver(claimed(payload(httpserver)))
    assert d.outcome == Outcome.TRANSIENT
    assert 80 <= d.retry_after <= 91


def test_500_without_retry_after_is_transient(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("boom", status=500)
    d = connector().deliver(claimed(payload(httpserver)))
    assert d.outcome == Outcome.TRANSIENT and d.retry_after is None


def test_redirects_are_not_followed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("", status=302, headers={"Location": "/elsewhere"})
    d = connector().deliver(claimed(payload(httpserver)))
    assert d.outcome == Outcome.PERMANENT and "redirect" in d.detail
    assert all(req.path == "/hook" for req, _ in httpserver.log)


def test_timeout_is_transient(httpserver: HTTPServer) -> None:
    def slow(_: Request) -> Response:
        time.sleep(0.6)
        return Response("late")

    httpserver.expect_request("/hook").respond_with_handler(slow)
    d = connector(timeout=0.2).deliver(claimed(payload(httpserver)))
    assert d.outcome == Outcome.TRANSIENT and "timed out" in d.detail


def test_connection_refused_is_transient() -> None:
    p = {"url": "http://127.0.0.1:9/hook", "method": "POST", "headers": {}, "body": {}}
    d = connector().deliver(claimed(p))
    assert d.outcome == Outcome.TRANSIENT and "127.0.0.1" in d.detail


@pytest.mark.parametrize("p, words", [
    ({"url": "file:///etc/passwd", "method": "POST", "body": {}}, "http"),
    ({"url": "http://127.0.0.1:9/x", "method": "DELETE", "body": {}}, "DELETE"),
    ({"url": "http://127.0.0.1:9/x", "method": "POST", "headers": {"X-Bad": "a\r\nb"}, "body": {}}, "header"),
])
def test_bad_requests_are_permanent(p: dict[str, Any], words: str) -> None:
    d = connector().deliver(claimed(p))
    assert d.outcome == Outcome.PERMANENT and words.lower() in d.detail.lower()


def test_retry_after_parsing() -> None:
    assert retry_after({"retry-after": "5"}) == 5
    assert retry_after({"retry-after": "-3"}) == 0
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None
    past = format_datetime(datetime(2000, 1, 1, tzinfo=timezone.utc), usegmt=True)
    assert retry_after({"retry-after": past}) == 0
