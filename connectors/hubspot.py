"""The HubSpot task connector plugin (`connectors.hubspot`): `task` actions as CRM v3 task objects, owned by the assignee and associated with the account.

Create: `POST /crm/v3/objects/tasks` with hs_task_subject, hs_task_body, hs_task_priority
(LOW/MEDIUM/HIGH), hs_task_status NOT_STARTED, hs_timestamp (the due time, or now), hs_task_type TODO,
hubspot_owner_id (the owner whose email is the assignee, via `GET /crm/v3/owners?email=`, cached) and
`playbook_key`, the action's dedup key. For an account subject the task is associated with the
company whose `playbook_account_id` property equals the account id (companies search); without one
the task is created unassociated and the delivery detail says so.

The portal needs two custom properties: `playbook_key` on tasks (single-line text) — it lets an
ambiguous or retried attempt find the task it may already have created (tasks search) instead of
creating a second one — and, for associations, `playbook_account_id` on companies.

Each created task is recorded in the engine's `tasks` table (connector "hubspot", with the HubSpot
id) so that a resolve can close it: `task_close` sets hs_task_status COMPLETED.

Rate limits: 429 is transient with `Retry-After`, else `X-HubSpot-RateLimit-Interval-Milliseconds`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from connectors.tasks import TaskConnectorPlugin, TaskPayload, close_task, record_task
from connectors.http import Failed, HttpResponse, bearer_json_call, failure, http_url, retry_after
from engine.actions import ClosePayload
from engine.delivery import BaseConnector, Connector, Outcome, Receipt
from engine.plugins import ConnectorEnv
from engine.store import Store
from engine.store.outbox import Claimed

KEY_PROPERTY = "playbook_key"
ACCOUNT_PROPERTY = "playbook_account_id"
TASK_TO_COMPANY = 192      # HubSpot-defined association type: task -> company
PRIORITY = {"low": "LOW", "normal": "MEDIUM", "high": "HIGH"}
TIMEOUT = 30.0


class HubspotConfig(BaseModel):
    """`connectors.hubspot`: a private app token (scopes crm.objects.owners.read, crm.objects.companies.read,
    tasks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    token: SecretStr
    base_url: str = "https://api.hubapi.com"
    owner_by_email: bool = True

    _url = field_validator("base_url")(classmethod(lambda cls, v: http_url(v)))


class HubspotTasks(BaseConnector):
    """Creates and completes HubSpot tasks; finds an earlier attempt's task by `playbook_key`."""

    name = "hubspot"
    on_ambiguous = "check"

    def __init__(self, conf: HubspotConfig, store: Store, clock: Callable[[], datetime], *,
                 timeout: float = TIMEOUT):
        self.conf, self.store, self.clock, self.timeout = conf, store, clock, timeout
        self.base = conf.base_url.rstrip("/")
        self._owners: dict[str, str] = {}      # email -> owner id (hits only)
        self._companies: dict[str, str] = {}   # account id -> company id (hits only)

    def deliver(self, item: Claimed) -> Receipt:
        """Create the task (or, for task_close, complete it)."""
        try:
            if item.kind == "task_close":
                return self._complete(item)
            if item.attempts > 1 or item.ambiguous:   # an earlier attempt may have created it already
                found = self._find(item.dedup_key)
                if found is not None:
                    return self._found(item, found)
            return self._create(item)
        except Failed as exc:
            return exc.delivery

    def check(self, item: Claimed) -> Receipt | None:
        """The Receipt if HubSpot already has a task with this action's `playbook_key`."""
        if item.kind == "task_close":
            return None
        try:
            found = self._find(item.dedup_key)
        except Failed:
            return None
        return self._found(item, found) if found is not None else None

    # --- steps -----------------------------------------------------------------------------------

    def _create(self, item: Claimed) -> Receipt:
        p: TaskPayload = item.payload
        notes: list[str] = []
        due = datetime.fromisoformat(p.due_at).replace(tzinfo=None) if p.due_at else self.clock()
        props: dict[str, Any] = {
            "hs_task_subject": p.title, "hs_task_body": p.description or "",
            "hs_task_priority": PRIORITY.get(str(p.priority or "normal"), "MEDIUM"),
            "hs_task_status": "NOT_STARTED", "hs_task_type": "TODO",
            "hs_timestamp": str(int(due.replace(tzinfo=timezone.utc).timestamp() * 1000)),
            KEY_PROPERTY: item.dedup_key}
        owner = self._owner(p.assignee, notes) if p.assignee and self.conf.owner_by_email else None
        if owner:
            props["hubspot_owner_id"] = owner
        company = self._company(item.subject_id, notes) if item.subject_type == "account" else None
        body: dict[str, Any] = {"properties": props}
        if company:
            body["associations"] = [{"to": {"id": company}, "types": [
                {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": TASK_TO_COMPANY}]}]
        resp = self._call("POST", "/crm/v3/objects/tasks", body)
        if not resp.ok:
            return self._failure(resp, "creating the task")
        task_id = str((resp.json() or {}).get("id"))
        record_task(self.store, item, "hubspot", task_id, self.clock())
        detail = f"HubSpot task {task_id}" + (f" ({'; '.join(notes)})" if notes else "")
        return Receipt(Outcome.SENT, detail, result={"external_id": task_id, "owner_id": owner,
                                                      "company_id": company, "notes": notes})

    def _found(self, item: Claimed, task_id: str) -> Receipt:
        record_task(self.store, item, "hubspot", task_id, self.clock())
        return Receipt(Outcome.SENT, f"HubSpot task {task_id} already exists", result={"external_id": task_id})

    def _complete(self, item: Claimed) -> Receipt:
        p: ClosePayload = item.payload
        task_id = p.external_id or self._find(p.task_key)
        if not task_id:
            close_task(self.store, p.task_key, self.clock())
            return Receipt(Outcome.SENT, "no HubSpot task carries this key; closed locally")
        resp = self._call("PATCH", f"/crm/v3/objects/tasks/{quote(str(task_id), safe='')}",
                          {"properties": {"hs_task_status": "COMPLETED"}})
        if resp.status == 404:
            close_task(self.store, p.task_key, self.clock())
            return Receipt(Outcome.SENT, f"HubSpot task {task_id} no longer exists; closed locally",
                            result={"external_id": task_id})
        if not resp.ok:
            return self._failure(resp, "completing the task")
        close_task(self.store, p.task_key, self.clock())
        return Receipt(Outcome.SENT, f"HubSpot task {task_id} completed", result={"external_id": task_id})

    # --- look-ups --------------------------------------------------------------------------------

    def _find(self, key: str) -> str | None:
        """The id of the task whose `playbook_key` is `key`, if any."""
        resp = self._call("POST", "/crm/v3/objects/tasks/search", {
            "filterGroups": [{"filters": [{"propertyName": KEY_PROPERTY, "operator": "EQ", "value": key}]}],
            "properties": ["hs_task_subject", "hs_task_status", KEY_PROPERTY], "limit": 1})
        if not resp.ok:
            raise Failed(self._failure(resp, "searching tasks"))
        results = (resp.json() or {}).get("results") or []
        return str(results[0]["id"]) if results else None

    def _owner(self, email: str, notes: list[str]) -> str | None:
        key = email.strip().lower()
        if key in self._owners:
            return self._owners[key]
        resp = self._call("GET", "/crm/v3/owners?" + urlencode({"email": email.strip(), "limit": 1}))
        if not resp.ok:
            self._soft(resp, notes, f"owner look-up for {email} failed (HTTP {resp.status}); unassigned")
            return None
        results = (resp.json() or {}).get("results") or []
        if not results:
            notes.append(f"no HubSpot owner has the email {email}; unassigned")
            return None
        self._owners[key] = str(results[0]["id"])
        return self._owners[key]

    def _company(self, account_id: str, notes: list[str]) -> str | None:
        if account_id in self._companies:
            return self._companies[account_id]
        resp = self._call("POST", "/crm/v3/objects/companies/search", {
            "filterGroups": [{"filters": [{"propertyName": ACCOUNT_PROPERTY, "operator": "EQ",
                                           "value": account_id}]}],
            "properties": ["name", ACCOUNT_PROPERTY], "limit": 1})
        if not resp.ok:
            self._soft(resp, notes, f"company search failed (HTTP {resp.status}); not associated")
            return None
        results = (resp.json() or {}).get("results") or []
        if not results:
            notes.append(f"no company has {ACCOUNT_PROPERTY}={account_id}; not associated")
            return None
        self._companies[account_id] = str(results[0]["id"])
        return self._companies[account_id]

    # --- HTTP ------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> HttpResponse:
        return bearer_json_call(method, self.base + path, self.conf.token.get_secret_value(), body,
                                timeout=self.timeout, service="HubSpot")

    def _failure(self, resp: HttpResponse, doing: str) -> Receipt:
        """A HubSpot error answer as a Receipt, with HubSpot's own message."""
        data = resp.json()
        message = data.get("message") if isinstance(data, dict) else None
        if resp.status == 401:
            message = f"the token was rejected: {message or 'unauthorized'}"
        elif message and KEY_PROPERTY in message and resp.status == 400:
            message += f" — create the task property `{KEY_PROPERTY}` (single-line text) in HubSpot"
        wait = retry_after(resp.headers)
        if wait is None and resp.status == 429:
            interval = resp.headers.get("x-hubspot-ratelimit-interval-milliseconds")
            wait = float(interval) / 1000 if interval and interval.isdigit() else None
        return failure(resp, f"HubSpot ({doing})", message, wait)

    def _soft(self, resp: HttpResponse, notes: list[str], note: str) -> None:
        """A failed optional look-up: retry later if HubSpot is busy or down, else carry on without it."""
        if resp.status in (401, 429) or resp.status >= 500:
            raise Failed(self._failure(resp, "a look-up"))
        notes.append(note)


class HubspotPlugin(TaskConnectorPlugin):
    name = "hubspot"
    config = HubspotConfig

    def connector(self, config: Any, env: ConnectorEnv) -> Connector:
        return HubspotTasks(config, env.store, env.clock)


plugin = HubspotPlugin()
