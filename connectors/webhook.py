"""The webhook connector plugin: the `webhook:` action (§9), its payload, its config block (`connectors.webhook`,
optional: a signing secret) and delivery over HTTP.

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

The URL may be built from data, so it only reaches what the `outbound:` rule allows (engine/outbound.py): a
host whose text already says it is refused (`127.0.0.1`, `localhost`, `[::1]`, …) is refused when the playbook is
validated (a URL written in it) or the action planned (one rendered from data); a name is resolved once at send
time and the request goes to an allowed address it resolved to. A refusal is a permanent failure, with the
reason; nothing is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.http import NetworkError, failure, pinned_call
from engine.actions import ActionKind, CompileContext, CompiledAction, Payload, PlanContext, Refusal
from engine.delivery import BaseConnector, Connector, Outcome, Receipt
from engine.outbound import Outbound, Refused
from engine.plugins import ConnectorEnv, ConnectorPlugin
from engine.store.outbox import Claimed

METHODS = ("POST", "PUT", "PATCH")
RESERVED = {"content-type", "content-length", "host", "idempotency-key", "x-playbook-signature",
            "x-playbook-timestamp"}


class WebhookAction(BaseModel):
    """A `webhook:` action."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None


@dataclass(frozen=True, slots=True)
class WebhookPayload(Payload):
    """A webhook request as planned."""

    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class WebhookKind(ActionKind):
    name = "webhook"
    options = WebhookAction
    payload = WebhookPayload
    literal = frozenset({"method"})

    def compile(self, options: BaseModel, ctx: CompileContext) -> tuple[Any, dict[str, Any]]:
        fields, files = super().compile(options, ctx)
        url = fields.get("url")
        if isinstance(url, str):            # written in the playbook, no template: checked now
            why = _outbound(ctx.settings).check_url(url)
            if why:
                ctx.problem(("url",), f"webhook to {why}")
        return fields, files

    def plan(self, action: CompiledAction, ctx: PlanContext) -> WebhookPayload:
        payload = super().plan(action, ctx)
        why = _outbound(ctx.settings).check_url(str(payload.url or ""))
        if why:
            raise Refusal(f"webhook to {why}")
        return payload

    def summary(self, payload: WebhookPayload) -> dict[str, Any]:
        return {"to": [payload.url]}


WEBHOOK = WebhookKind()


class WebhookConfig(BaseModel):
    """`connectors.webhook`: the secret that signs every request (optional), and the timeout."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    secret: SecretStr | None = None
    timeout: float = Field(10.0, gt=0)


def _outbound(settings: Any) -> Outbound:
    return Outbound(getattr(settings, "outbound", None))


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Playbook-Signature value for a body sent at `timestamp`."""
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


class WebhookConnector(BaseConnector):
    """Sends each webhook action as one JSON request; receivers deduplicate by Idempotency-Key."""

    name = "webhook"
    on_ambiguous = "resend"

    def __init__(self, conf: WebhookConfig | None = None, *, outbound: Outbound | None = None,
                 now: Callable[[], float] = time.time):
        self.outbound = outbound or Outbound()
        self.timeout = conf.timeout if conf is not None else 10.0
        self._secret = conf.secret.get_secret_value().encode() if conf is not None and conf.secret else None
        self._now = now

    def deliver(self, item: Claimed) -> Receipt:
        """POST/PUT/PATCH the rendered JSON body to the rendered URL."""
        p: WebhookPayload = item.payload
        method = str(p.method or "POST").upper()
        url = str(p.url or "")
        host = urlsplit(url).hostname or "?"
        if method not in METHODS:
            return Receipt(Outcome.PERMANENT, f"webhook method `{method}` is not one of {', '.join(METHODS)}")
        body = json.dumps(p.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {str(k): str(v) for k, v in (p.headers or {}).items() if str(k).lower() not in RESERVED}
        headers.update({"Content-Type": "application/json", "Idempotency-Key": item.dedup_key,
                        "User-Agent": "playbook-engine"})
        if self._secret is not None:
            stamp = str(int(self._now()))
            headers["X-Playbook-Timestamp"] = stamp
            headers["X-Playbook-Signature"] = sign(self._secret, stamp, body)
        try:
            resp = pinned_call(method, url, self.outbound, body=body, headers=headers, timeout=self.timeout)
        except Refused as exc:
            return Receipt(Outcome.PERMANENT, f"refused: webhook to {exc}")
        except NetworkError as exc:
            return Receipt(Outcome.TRANSIENT, f"webhook to {host}: {exc}")
        except ValueError as exc:
            return Receipt(Outcome.PERMANENT, f"webhook to {host}: {exc}")
        if resp.ok:
            return Receipt(Outcome.SENT, f"{method} {host}: HTTP {resp.status}", result={"status": resp.status})
        return failure(resp, f"webhook {host}")


class WebhookPlugin(ConnectorPlugin):
    name = "webhook"
    kind = WEBHOOK
    config = WebhookConfig
    standalone = True      # delivers without a config block (unsigned)

    def connector(self, config: Any, env: ConnectorEnv) -> Connector:
        return WebhookConnector(config, outbound=_outbound(env.settings))


plugin = WebhookPlugin()
