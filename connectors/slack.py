"""The Slack connector plugin: the `slack:` action (§9), its payload, its config block (`connectors.slack`), and
delivery through the Web API (bot token), or an incoming webhook when no token is set.

With a bot token, a message goes to `channel` (a `#name` or an ID) or, for `to: someone@example.com`,
to that user's direct-message channel (users.lookupByEmail then conversations.open, both cached for
the life of the process). Every message carries the action's dedup key in its message metadata
(event type `playbook_action`), so an attempt that may or may not have landed is checked first:
`check` reads the target channel's history since the action was planned, metadata included.
Scopes: chat:write, users:read.email, im:write, and channels:history / groups:history /
im:history plus channels:read / groups:read for that check.

With only `webhook_url`, messages go to the webhook's own channel; nothing can be checked there,
so an ambiguous attempt is resent.

The message's `text`, and the `text` of each `mrkdwn` object in `blocks`, escape what their expressions output
(`&`, `<`, `>`, Slack's escaping): a value such as `<!channel>`, `<@U0123>` or `<https://x.example|click>` shows
as typed and never mentions anyone or links; mentions and links the playbook's author writes in the template
itself work as usual.

The SDK's own retry handlers are switched off: a failed call is returned to dispatch as transient
(with Slack's Retry-After on HTTP 429) and rescheduled, never slept on in the worker.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.http import http_url, retry_after
from engine.actions import ActionKind, CompileContext, Payload, Rendering
from engine.delivery import BaseConnector, Connector, Outcome, Receipt
from engine.plugins import ConnectorEnv, ConnectorPlugin
from engine.store.outbox import Claimed

EVENT_TYPE = "playbook_action"
HISTORY_PAGES = 5          # how far back `check` reads (pages of 200 messages)
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException)

TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
                    "team_added_to_org", "timeout"}
AUTH_ERRORS = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive",
               "no_permission", "ekm_access_denied", "not_allowed_token_type"}
HINTS = {
    "channel_not_found": "channel `{target}` not found: check the name, or invite the app to a private channel",
    "not_in_channel": "the app is not a member of `{target}`: /invite it to the channel",
    "is_archived": "channel `{target}` is archived",
    "users_not_found": "no Slack user has the email `{target}`",
    "user_not_found": "no Slack user has the email `{target}`",
    "cannot_dm_bot": "`{target}` is a bot and cannot receive direct messages",
    "user_disabled": "the Slack user `{target}` is deactivated",
    "msg_too_long": "the message text is too long",
    "no_text": "the message has neither text nor blocks",
    "invalid_blocks": "Slack rejected the blocks (invalid Block Kit)",
    "invalid_blocks_format": "Slack rejected the blocks (they must be a list of Block Kit objects)",
    "restricted_action": "a workspace preference forbids the app to post in `{target}`",
}


class SlackAction(BaseModel):
    """A `slack:` action."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    channel: str | None = None
    to: str | None = Field(None, description="an email address: direct message to that Slack user")
    text: str
    blocks: list[Any] | None = None

    @model_validator(mode="after")
    def _target(self) -> SlackAction:
        if bool(self.channel) == bool(self.to):
            raise ValueError("a slack action needs exactly one of `channel` or `to`")
        return self


@dataclass(frozen=True, slots=True)
class SlackPayload(Payload):
    """A Slack message as planned: to a channel, or to the user with an email address."""

    text: str
    channel: str | None = None
    to: str | None = None
    blocks: list[Any] | None = None


class SlackKind(ActionKind):
    name = "slack"
    options = SlackAction
    payload = SlackPayload

    def compile(self, options: BaseModel, ctx: CompileContext) -> tuple[Any, dict[str, Any]]:
        data = self.dump(options)
        fields = {k: ctx.structure(v, self.literal, path=(k,)) for k, v in data.items() if k not in ("text", "blocks")}
        fields["text"] = ctx.structure(data["text"], self.literal, path=("text",), markup="slack")
        if "blocks" in data:
            fields["blocks"] = _blocks(data["blocks"], ctx, ("blocks",))
        return fields, {}

    def summary(self, payload: SlackPayload) -> dict[str, Any]:
        return {"to": [payload.channel or payload.to], "text": payload.text}

    def preview(self, payload: SlackPayload, settings: Any) -> list[Rendering]:
        """Where it goes, its text and its blocks (Block Kit JSON)."""
        import json

        where = {"Channel": payload.channel} if payload.channel else {"Direct message to": payload.to or ""}
        bodies = {"text": payload.text}
        if payload.blocks:
            bodies["blocks"] = json.dumps(payload.blocks, ensure_ascii=False, indent=2)
        return [Rendering(where, bodies)]

    digest_markup = "slack"

    def digest_parts(self, payload: SlackPayload) -> list[tuple[str, str, SlackPayload]]:
        return [(str(payload.to or payload.channel), payload.text, payload)]

    def digest_message(self, recipient: str, message: Any, key: str) -> SlackPayload:
        """A digest to a user (an email address: a direct message) or a channel."""
        if "@" in recipient:
            return SlackPayload(message.text, to=recipient)
        return SlackPayload(message.text, channel=recipient)


def _blocks(value: Any, ctx: CompileContext, path: tuple[Any, ...]) -> Any:
    """Block Kit with its templates compiled: the `text` of a `mrkdwn` object (which Slack reads for mentions and
    links) escapes what its expressions output; other strings (plain text, URLs, ids) are rendered as they are."""
    if isinstance(value, dict):
        slack_text = value.get("type") == "mrkdwn"
        return {k: (ctx.structure(v, frozenset(), path=path + (k,), markup="slack")
                    if slack_text and k == "text" else _blocks(v, ctx, path + (k,))) for k, v in value.items()}
    if isinstance(value, list):
        return [_blocks(v, ctx, path + (i,)) for i, v in enumerate(value)]
    return ctx.structure(value, frozenset(), path=path)


SLACK = SlackKind()


class SlackConfig(BaseModel):
    """`connectors.slack`: a bot token (or an incoming webhook URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    token: SecretStr | None = None
    base_url: str = "https://slack.com/api/"
    webhook_url: SecretStr | None = None
    timeout: float = Field(30.0, gt=0)

    _url = field_validator("base_url")(classmethod(lambda cls, v: http_url(v)))

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value():
            http_url(v.get_secret_value())
        return v

    @model_validator(mode="after")
    def _credentials(self) -> SlackConfig:
        if not any(s is not None and s.get_secret_value() for s in (self.token, self.webhook_url)):
            raise ValueError("the slack connector needs `token` (a bot token) or `webhook_url`")
        return self


class SlackConnector(BaseConnector):
    """Posts Slack messages; checks channel history for the dedup key when an attempt is ambiguous."""

    name = "slack"

    def __init__(self, conf: SlackConfig, *, client: Any = None):
        from slack_sdk import WebClient
        from slack_sdk.webhook import WebhookClient

        self.conf = conf
        token = conf.token.get_secret_value() if conf.token else None
        base_url = conf.base_url if conf.base_url.endswith("/") else conf.base_url + "/"
        self.client: Any = client or (
            WebClient(token=token, base_url=base_url, timeout=conf.timeout, retry_handlers=[]) if token else None)
        self.webhook: Any = None
        if self.client is None and conf.webhook_url:
            self.webhook = WebhookClient(conf.webhook_url.get_secret_value(), timeout=conf.timeout,
                                         retry_handlers=[])
        self.on_ambiguous = "check" if self.client is not None else "resend"
        self._users: dict[str, str] = {}      # email -> user id
        self._dms: dict[str, str] = {}        # user id -> direct-message channel id
        self._channels: dict[str, str] = {}   # channel name -> channel id (for history)

    def deliver(self, item: Claimed) -> Receipt:
        """Post one message: to a channel, or as a direct message to the user with an email."""
        if self.client is not None:
            return self._guard(lambda: self._post(item), _target(item.payload))
        if self.webhook is not None:
            return self._post_webhook(item)
        return Receipt(Outcome.PERMANENT, "the slack connector needs `token` (a bot token) or `webhook_url`")

    def check(self, item: Claimed) -> Receipt | None:
        """The Receipt if a message carrying this action's dedup key is already in the target channel."""
        if self.client is None:
            return None
        try:
            channel = self._history_channel(item.payload)
            if channel is None:
                return None
            oldest = item.created_at.replace(tzinfo=timezone.utc).timestamp() - 60
            cursor: str | None = None
            for _ in range(HISTORY_PAGES):
                page = self.client.conversations_history(channel=channel, oldest=f"{oldest:.6f}", limit=200,
                                                         include_all_metadata=True, cursor=cursor)
                for message in page.get("messages") or []:
                    meta = message.get("metadata") or {}
                    if meta.get("event_type") == EVENT_TYPE and \
                            (meta.get("event_payload") or {}).get("dedup_key") == item.dedup_key:
                        return Receipt(Outcome.SENT, f"message {message.get('ts')} in {channel}",
                                        result={"channel": channel, "ts": message.get("ts")})
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor or not page.get("has_more"):
                    break
        except (_api_error(), *NETWORK_ERRORS):
            return None
        return None

    def close(self) -> None:
        self._users.clear()
        self._dms.clear()
        self._channels.clear()

    # --- Web API ---------------------------------------------------------------------------------

    def _post(self, item: Claimed) -> Receipt:
        assert self.client is not None
        p: SlackPayload = item.payload
        channel = self._dm_channel(p.to) if p.to else p.channel
        if not channel:
            return Receipt(Outcome.PERMANENT, "a slack action needs `channel` or `to`")
        resp = self.client.chat_postMessage(
            channel=channel, text=p.text, blocks=p.blocks or None,
            metadata={"event_type": EVENT_TYPE, "event_payload": {"dedup_key": item.dedup_key}})
        where = p.to or p.channel
        return Receipt(Outcome.SENT, f"posted to {where}",
                        result={"channel": resp.get("channel"), "ts": resp.get("ts")})

    def _user_id(self, email: str) -> str:
        assert self.client is not None
        key = email.strip().lower()
        if key not in self._users:
            self._users[key] = self.client.users_lookupByEmail(email=email.strip())["user"]["id"]
        return self._users[key]

    def _dm_channel(self, email: str) -> str:
        assert self.client is not None
        user = self._user_id(email)
        if user not in self._dms:
            self._dms[user] = self.client.conversations_open(users=user)["channel"]["id"]
        return self._dms[user]

    def _history_channel(self, p: SlackPayload) -> str | None:
        """The channel ID whose history would hold the message, or None when it cannot be found."""
        if p.to:
            return self._dm_channel(p.to)
        channel = str(p.channel or "")
        if CHANNEL_ID.match(channel):
            return channel
        name = channel.lstrip("#")
        if name not in self._channels:
            self._load_channels()
        return self._channels.get(name)

    def _load_channels(self) -> None:
        assert self.client is not None
        cursor: str | None = None
        while True:
            page = self.client.conversations_list(types="public_channel,private_channel", exclude_archived=True,
                                                  limit=1000, cursor=cursor)
            for ch in page.get("channels") or []:
                self._channels[ch["name"]] = ch["id"]
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return

    def _guard(self, call: Callable[[], Receipt], target: str) -> Receipt:
        """Run a Web API call, turning SDK and network errors into a Receipt."""
        try:
            return call()
        except _api_error() as exc:
            return _api_failure(exc, target)
        except NETWORK_ERRORS as exc:
            return Receipt(Outcome.TRANSIENT, f"cannot reach Slack: {_network_reason(exc)}")

    # --- incoming webhook ------------------------------------------------------------------------

    def _post_webhook(self, item: Claimed) -> Receipt:
        assert self.webhook is not None
        p: SlackPayload = item.payload
        if p.to:
            return Receipt(Outcome.PERMANENT, "direct messages need a bot `token`; an incoming webhook "
                                              "posts only to its own channel")
        try:
            resp = self.webhook.send(text=p.text, blocks=p.blocks or None)
        except NETWORK_ERRORS as exc:
            return Receipt(Outcome.TRANSIENT, f"cannot reach the Slack webhook: {_network_reason(exc)}")
        status, body = resp.status_code, " ".join(str(resp.body or "").split())[:200]
        if status == 200:
            return Receipt(Outcome.SENT, "posted to the incoming webhook's channel", result={"status": status})
        detail = f"Slack webhook answered HTTP {status}: {body or 'no body'}"
        if status == 429 or status >= 500:
            headers = {str(k).lower(): str(v[0] if isinstance(v, list) else v)
                       for k, v in (resp.headers or {}).items()}
            return Receipt(Outcome.TRANSIENT, detail, retry_after(headers), {"status": status})
        return Receipt(Outcome.PERMANENT, detail, None, {"status": status})


def _target(p: SlackPayload) -> str:
    return str(p.to or p.channel or "?")


def _api_error() -> type[Exception]:
    """slack_sdk's API error (imported when a Slack connector runs: the action kind and config need no SDK)."""
    from slack_sdk.errors import SlackApiError

    return SlackApiError


def _api_failure(exc: Any, target: str) -> Receipt:
    """Map a Slack API error to transient (rate limits, outages) or permanent (everything else)."""
    resp = exc.response
    status = getattr(resp, "status_code", 200) or 200
    data = resp.data if isinstance(getattr(resp, "data", None), dict) else {}
    error = str(data.get("error") or f"HTTP {status}")
    headers = {str(k).lower(): str(v[0] if isinstance(v, list) else v) for k, v in (resp.headers or {}).items()}
    result = {"error": error, "status": status}
    if status == 429 or error == "ratelimited":
        return Receipt(Outcome.TRANSIENT, f"Slack rate limit ({error})", retry_after(headers), result)
    if status >= 500 or error in TRANSIENT_ERRORS:
        return Receipt(Outcome.TRANSIENT, f"Slack is unavailable: {error}", retry_after(headers), result)
    if error in AUTH_ERRORS:
        return Receipt(Outcome.PERMANENT, f"Slack rejected the bot token ({error})", None, result)
    if error == "missing_scope":
        needed = data.get("needed") or "?"
        return Receipt(Outcome.PERMANENT, f"the bot token lacks the `{needed}` scope (missing_scope)", None, result)
    hint = HINTS.get(error)
    detail = f"{hint.format(target=target)} ({error})" if hint else f"Slack refused the message: {error}"
    return Receipt(Outcome.PERMANENT, detail, None, result)


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


class SlackPlugin(ConnectorPlugin):
    name = "slack"
    kind = SLACK
    config = SlackConfig

    def connector(self, config: Any, env: ConnectorEnv) -> Connector:
        return SlackConnector(config)


plugin = SlackPlugin()
