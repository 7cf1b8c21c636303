"""The Salesforce task connector plugin (`connectors.salesforce`): `task` actions as the Task sObject, upserted on an external-id field so a retry cannot duplicate.

Create: `PATCH {instance_url}/services/data/{api_version}/sobjects/Task/{external_id_field}/{value}`
with Subject, Description, Priority (Low/Normal/High), ActivityDate (the due date), Status
"Not Started" and OwnerId (the active User whose Email is the assignee, by SOQL, cached). The value
is derived from the action's dedup key (see `external_value`): the same action always upserts the
same record, so an ambiguous attempt is simply resent. 201 (created) and 200/204 (updated) are sent.

The org needs a custom Task field marked External ID and Unique (default `Playbook_Key__c`,
Text(255)) — `connectors.salesforce.external_id_field`.

Each task is recorded in the engine's `tasks` table (connector "salesforce", external id = the
Salesforce record Id) so a resolve can close it: `task_close` sets Status "Completed" on that Id
(or, when the Id is unknown, through the same external-id URL).

401 is permanent (the token is rejected — refresh it); 429, 5xx, REQUEST_LIMIT_EXCEEDED and
timeouts are transient; other 4xx are permanent with Salesforce's own error message.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any, Callable
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from connectors.tasks import TaskConnectorPlugin, TaskPayload, close_task, record_task
from connectors.http import Failed, HttpResponse, bearer_json_call, failure, http_url
from engine.actions import ClosePayload
from engine.delivery import BaseConnector, Connector, Outcome, Receipt
from engine.plugins import ConnectorEnv
from engine.store import Store
from engine.store.outbox import Claimed

PRIORITY = {"low": "Low", "normal": "Normal", "high": "High"}
TIMEOUT = 30.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def external_value(dedup_key: str) -> str:
    """The external-id value for an action: readable, URL-safe, and unique even though Salesforce matches
    external ids case-insensitively and mishandles `/` and `.` in the URL path."""
    readable = _UNSAFE.sub("_", dedup_key).strip("_")[:200]
    return f"{readable}-{hashlib.sha256(dedup_key.encode()).hexdigest()[:16]}"


class SalesforceConfig(BaseModel):
    """`connectors.salesforce`: the instance, an OAuth access token, and the Task's External ID field."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    instance_url: str
    token: SecretStr
    api_version: str = "v60.0"
    external_id_field: str = "Playbook_Key__c"

    _url = field_validator("instance_url")(classmethod(lambda cls, v: http_url(v)))


class SalesforceTasks(BaseConnector):
    """Upserts Salesforce Tasks by an external id derived from the dedup key; closes them on resolve."""

    name = "salesforce"
    on_ambiguous = "resend"
    batch_safe = True    # an upsert on the external id: delivering twice updates the same Task

    def __init__(self, conf: SalesforceConfig, store: Store, clock: Callable[[], datetime], *,
                 timeout: float = TIMEOUT):
        self.conf, self.store, self.clock, self.timeout = conf, store, clock, timeout
        self.base = f"{conf.instance_url.rstrip('/')}/services/data/{conf.api_version}"
        self._owners: dict[str, str] = {}   # email -> User Id (hits only)

    def upsert_path(self, dedup_key: str) -> str:
        """The sObject-by-external-id path of the Task an action creates."""
        return f"/sobjects/Task/{self.conf.external_id_field}/{quote(external_value(dedup_key), safe='')}"

    def deliver(self, item: Claimed) -> Receipt:
        """Upsert the task (or, for task_close, complete it)."""
        try:
            return self._complete(item) if item.kind == "task_close" else self._upsert(item)
        except Failed as exc:
            return exc.delivery

    def _upsert(self, item: Claimed) -> Receipt:
        p: TaskPayload = item.payload
        notes: list[str] = []
        fields: dict[str, Any] = {
            "Subject": p.title[:255], "Description": p.description or "",
            "Priority": PRIORITY.get(str(p.priority or "normal"), "Normal"), "Status": "Not Started"}
        if p.due_at:
            fields["ActivityDate"] = datetime.fromisoformat(p.due_at).date().isoformat()
        owner = self._owner(p.assignee, notes) if p.assignee else None
        if owner:
            fields["OwnerId"] = owner
        path = self.upsert_path(item.dedup_key)
        resp = self._call("PATCH", path, fields)
        if not resp.ok:
            return self._failure(resp, "upserting the task")
        data = resp.json()
        record_id = data.get("id") if isinstance(data, dict) else None
        if not record_id:   # 204 No Content (older API versions, on update): ask for the Id
            found = self._call("GET", path + "?" + urlencode({"fields": "Id"}))
            record_id = (found.json() or {}).get("Id") if found.ok and isinstance(found.json(), dict) else None
        record_task(self.store, item, "salesforce", record_id, self.clock())
        created = resp.status == 201
        detail = f"Salesforce task {record_id or '?'} {'created' if created else 'updated'}"
        detail += f" ({'; '.join(notes)})" if notes else ""
        return Receipt(Outcome.SENT, detail, result={"external_id": record_id, "created": created,
                                                      "owner_id": owner, "notes": notes})

    def _complete(self, item: Claimed) -> Receipt:
        p: ClosePayload = item.payload
        record_id = p.external_id
        path = f"/sobjects/Task/{quote(str(record_id), safe='')}" if record_id else self.upsert_path(p.task_key)
        resp = self._call("PATCH", path, {"Status": "Completed"})
        if resp.status == 404:
            close_task(self.store, p.task_key, self.clock())
            return Receipt(Outcome.SENT, "the Salesforce task no longer exists; closed locally")
        if not resp.ok:
            return self._failure(resp, "completing the task")
        close_task(self.store, p.task_key, self.clock())
        return Receipt(Outcome.SENT, f"Salesforce task {record_id or external_value(p.task_key)} completed",
                        result={"external_id": record_id})

    def _owner(self, email: str, notes: list[str]) -> str | None:
        key = email.strip().lower()
        if key in self._owners:
            return self._owners[key]
        literal = email.strip().replace("\\", "\\\\").replace("'", "\\'")
        soql = f"SELECT Id FROM User WHERE Email = '{literal}' AND IsActive = true LIMIT 1"
        resp = self._call("GET", "/query?" + urlencode({"q": soql}))
        if not resp.ok:
            if resp.status in (401, 429) or resp.status >= 500 or _limit_exceeded(resp):
                raise Failed(self._failure(resp, "looking up the owner"))
            notes.append(f"owner look-up for {email} failed (HTTP {resp.status}); default owner")
            return None
        records = (resp.json() or {}).get("records") or []
        if not records:
            notes.append(f"no active Salesforce user has the email {email}; default owner")
            return None
        self._owners[key] = str(records[0]["Id"])
        return self._owners[key]

    def _call(self, method: str, path: str, body: Any = None) -> HttpResponse:
        return bearer_json_call(method, self.base + path, self.conf.token.get_secret_value(), body,
                                timeout=self.timeout, service="Salesforce")

    def _failure(self, resp: HttpResponse, doing: str) -> Receipt:
        """A Salesforce error answer as a Receipt, with Salesforce's errorCode and message."""
        message = _message(resp)
        if resp.status == 401:
            return Receipt(Outcome.PERMANENT, f"Salesforce rejected the token (401, {message or 'unauthorized'}): "
                                               "refresh the access token", None, {"status": 401})
        if _limit_exceeded(resp):
            return Receipt(Outcome.TRANSIENT, f"Salesforce ({doing}): {message}", None, {"status": resp.status})
        if resp.status == 300:
            message = f"several Tasks share this {self.conf.external_id_field}; mark the field Unique"
        return failure(resp, f"Salesforce ({doing})", message)


def _message(resp: HttpResponse) -> str | None:
    data = resp.json()
    errors = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    parts = [f"{e.get('errorCode')}: {e.get('message')}" for e in errors if isinstance(e, dict) and e.get("message")]
    return "; ".join(parts) or None


def _limit_exceeded(resp: HttpResponse) -> bool:
    return resp.status == 403 and "REQUEST_LIMIT_EXCEEDED" in resp.snippet(2000)


class SalesforcePlugin(TaskConnectorPlugin):
    name = "salesforce"
    config = SalesforceConfig

    def connector(self, config: Any, env: ConnectorEnv) -> Connector:
        return SalesforceTasks(config, env.store, env.clock)


plugin = SalesforcePlugin()
