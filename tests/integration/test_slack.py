"""The Slack connector: the real slack_sdk WebClient against a local server speaking the Web API shape."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Callable

import pytest
from pydantic import ValidationError
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.delivery import Outcome
from engine.plugins import registry
from connectors.slack import SlackConnector
from connectors.slack import SlackConfig as SlackSettings
from engine.store.outbox import Claimed

TOKEN = "xoxb-test-token"
KEY = "pb/account:a1/1/0/0"


def claimed(payload: dict[str, Any], key: str = KEY, ambiguous: bool = False) -> Claimed:
    return registry().load(Claimed(1, key, "slack", "slack", payload, 1, 1, ambiguous, "pb", "account", "a1", 1,
                       datetime(2024, 5, 1, 9, 0), None))


class FakeSlack:
    """A tiny Slack Web API: per-method handlers, every call recorded with its parameters."""

    def __init__(self, server: HTTPServer):
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "chat.postMessage": lambda p: {"ok": True, "channel": "C0CHANNEL1", "ts": "1714554000.000100",
                                           "message": {"text": p.get("text")}},
            "users.lookupByEmail": lambda p: {"ok": True, "user": {"id": "U0ALICE01"}}
            if p.get("email") == "alice@example.com" else {"ok": False, "error": "users_not_found"},
            "conversations.open": lambda p: {"ok": True, "channel": {"id": "D0DMALICE"}},
            "conversations.list": lambda p: {"ok": True, "channels": [{"id": "C0CHANNEL1", "name": "cs-alerts"}],
                                             "response_metadata": {"next_cursor": ""}},
            "conversations.history": lambda p: {"ok": True, "messages": [], "has_more": False},
        }
        server.expect_request(re.compile(r"^/api/[\w.]+$"), method="POST").respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        method = request.path.rsplit("/", 1)[1]
        params: dict[str, Any] = dict(request.args)
        if request.is_json:
            params.update(request.get_json())
        else:
            params.update(request.form.to_dict())
        for k in ("metadata", "blocks"):
            if isinstance(params.get(k), str):
                params[k] = json.loads(params[k])
        self.calls.append((method, params, request.headers.get("Authorization")))
        answer = self.handlers[method](params)
        if isinstance(answer, Response):
            return answer
        return Response(json.dumps(answer), status=200, content_type="application/json")

    def called(self, method: str) -> list[dict[str, Any]]:
        return [p for m, p, _ in self.calls if m == method]


@pytest.fixture
def slack(httpserver: HTTPServer) -> FakeSlack:
    return FakeSlack(httpserver)


@pytest.fixture
def connector(httpserver: HTTPServer) -> SlackConnector:
    return SlackConnector(SlackSettings(token=TOKEN, base_url=httpserver.url_for("/api/"), timeout=2))


def test_channel_post_carries_text_blocks_and_the_dedup_key(slack: FakeSlack, connector: SlackConnector) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Acme* is at risk"}}]
    d = connector.deliver(claimed({"channel": "#cs-alerts", "text": "Acme is at risk", "blocks": blocks}))
    assert d.outcome == Outcome.SENT
    assert d.result == {"channel": "C0CHANNEL1", "ts": "1714554000.000100"}
    [post] = slack.called("chat.postMessage")
    assert post["channel"] == "#cs-alerts" and post["text"] == "Acme is at risk"
    assert post["blocks"] == blocks
    assert post["metadata"] == {"event_type": "playbook_action", "event_payload": {"dedup_key": KEY}}
    assert slack.calls[0][2] == f"Bearer {TOKEN}"
    assert connector.on_ambiguous == "check"


def test_direct_message_looks_the_user_up_once(slack: FakeSlack, connector: SlackConnector) -> None:
    for n, email in enumerate(["alice@example.com", "Alice@Example.com"]):
        d = connector.deliver(claimed({"to": email, "text": f"hi {n}"}, key=f"k{n}"))
        assert d.outcome == Outcome.SENT
    assert len(slack.called("users.lookupByEmail")) == 1
    assert len(slack.called("conversations.open")) == 1
    assert slack.called("conversations.open")[0]["users"] == "U0ALICE01"
    assert [p["channel"] for p in slack.called("chat.postMessage")] == ["D0DMALICE", "D0DMALICE"]


def test_unknown_user_is_permanent(slack: FakeSlack, connector: SlackConnector) -> None:
    d = connector.deliver(claimed({"to": "nobody@example.com", "text": "hi"}))
    assert d.outcome == Outcome.PERMANENT
    assert "nobody@example.com" in d.detail and "users_not_found" in d.detail
    assert not slack.called("chat.postMessage")


def test_rate_limit_is_transient_with_retry_after(slack: FakeSlack, connector: SlackConnector) -> None:
    slack.handlers["chat.postMessage"] = lambda p: Response(json.dumps({"ok": False, "error": "ratelimited"}),
                                                            status=429, headers={"Retry-After": "30"},
                                                            content_type="application/json")
    d = connector.deliver(claimed({"channel": "#cs-alerts", "text": "x"}))
    assert d.outcome == Outcome.TRANSIENT and d.retry_after == 30
    assert len(slack.called("chat.postMessage")) == 1      # no retry inside the worker


def test_server_error_is_transient(slack: FakeSlack, connector: SlackConnector) -> None:
    slack.handlers["chat.postMessage"] = lambda p: Response("<html>Bad Gateway</html>", status=502)
    d = connector.deliver(claimed({"channel": "#cs-alerts", "text": "x"}))
    assert d.outcome == Outcome.TRANSIENT


@pytest.mark.parametrize("error, words", [
    ("channel_not_found", "#nowhere"), ("not_in_channel", "invite"), ("invalid_auth", "token"),
    ("msg_too_long", "too long"), ("something_new", "something_new")])
def test_api_errors_are_permanent(slack: FakeSlack, connector: SlackConnector, error: str, words: str) -> None:
    slack.handlers["chat.postMessage"] = lambda p: {"ok": False, "error": error}
    d = connector.deliver(claimed({"channel": "#nowhere", "text": "x"}))
    assert d.outcome == Outcome.PERMANENT and words in d.detail and error in d.detail
    assert TOKEN not in d.detail


def test_unreachable_slack_is_transient() -> None:
    c = SlackConnector(SlackSettings(token=TOKEN, base_url="http://127.0.0.1:9/api/", timeout=1))
    d = c.deliver(claimed({"channel": "#cs-alerts", "text": "x"}))
    assert d.outcome == Outcome.TRANSIENT and "Slack" in d.detail


def test_check_finds_the_message_by_its_metadata(slack: FakeSlack, connector: SlackConnector) -> None:
    slack.handlers["conversations.history"] = lambda p: {"ok": True, "has_more": False, "messages": [
        {"ts": "1714554000.000200", "text": "other", "metadata": {"event_type": "playbook_action",
                                                                  "event_payload": {"dedup_key": "another"}}},
        {"ts": "1714554000.000100", "text": "ours", "metadata": {"event_type": "playbook_action",
                                                                 "event_payload": {"dedup_key": KEY}}},
        {"ts": "1714554000.000050", "text": "a person"}]}
    found = connector.check(claimed({"channel": "#cs-alerts", "text": "x"}, ambiguous=True))
    assert found is not None and found.outcome == Outcome.SENT
    assert found.result == {"channel": "C0CHANNEL1", "ts": "1714554000.000100"}
    [hist] = slack.called("conversations.history")
    assert hist["channel"] == "C0CHANNEL1"
    assert str(hist["include_all_metadata"]).lower() in ("1", "true")
    assert float(hist["oldest"]) == 1714554000 - 60      # since the action was planned (09:00 UTC), less a minute


def test_check_returns_none_when_absent_or_unknown(slack: FakeSlack, connector: SlackConnector) -> None:
    assert connector.check(claimed({"channel": "C0CHANNEL1", "text": "x"})) is None
    assert not slack.called("conversations.list")          # an ID needs no look-up
    assert connector.check(claimed({"channel": "#unknown", "text": "x"})) is None
    dm = connector.check(claimed({"to": "alice@example.com", "text": "x"}))
    assert dm is None and slack.called("conversations.history")[-1]["channel"] == "D0DMALICE"


def test_check_gives_up_quietly_on_errors(slack: FakeSlack, connector: SlackConnector) -> None:
    slack.handlers["conversations.history"] = lambda p: {"ok": False, "error": "missing_scope",
                                                         "needed": "channels:history"}
    assert connector.check(claimed({"channel": "C0CHANNEL1", "text": "x"})) is None


def test_incoming_webhook_mode(httpserver: HTTPServer) -> None:
    bodies: list[dict[str, Any]] = []
    httpserver.expect_request("/services/T0/B0/xyz", method="POST").respond_with_handler(
        lambda r: (bodies.append(r.get_json()), Response("ok"))[1])
    c = SlackConnector(SlackSettings(webhook_url=httpserver.url_for("/services/T0/B0/xyz"), timeout=2))
    assert c.on_ambiguous == "resend" and c.check(claimed({"channel": "#x", "text": "x"})) is None
    blocks = [{"type": "section", "text": {"type": "plain_text", "text": "hello"}}]
    d = c.deliver(claimed({"channel": "#cs-alerts", "text": "hello", "blocks": blocks}))
    assert d.outcome == Outcome.SENT
    assert bodies == [{"text": "hello", "blocks": blocks}]
    dm = c.deliver(claimed({"to": "alice@example.com", "text": "hi"}))
    assert dm.outcome == Outcome.PERMANENT and "token" in dm.detail


@pytest.mark.parametrize("status, body, outcome", [
    (429, "rate_limited", Outcome.TRANSIENT), (500, "rollup_error", Outcome.TRANSIENT),
    (404, "no_service", Outcome.PERMANENT), (400, "invalid_payload", Outcome.PERMANENT)])
def test_incoming_webhook_errors(httpserver: HTTPServer, status: int, body: str, outcome: Outcome) -> None:
    httpserver.expect_request("/hook").respond_with_data(body, status=status, headers={"Retry-After": "7"})
    c = SlackConnector(SlackSettings(webhook_url=httpserver.url_for("/hook"), timeout=2))
    d = c.deliver(claimed({"channel": "#x", "text": "hello"}))
    assert d.outcome == outcome and body in d.detail
    assert "/hook" not in d.detail                        # the webhook URL is a secret
    if outcome == Outcome.TRANSIENT:
        assert d.retry_after == 7


def test_unconfigured_is_a_config_error_and_permanent_if_built_anyway() -> None:
    with pytest.raises(ValidationError, match="needs `token` \\(a bot token\\) or `webhook_url`"):
        SlackSettings(token="")
    d = SlackConnector(SlackSettings.model_construct()).deliver(claimed({"channel": "#x", "text": "x"}))
    assert d.outcome == Outcome.PERMANENT and "webhook_url" in d.detail
