"""HubSpot and Salesforce task connectors against local servers standing in for the CRMs, with a real SQLite store."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.delivery import Outcome
from engine.plugins import registry
from connectors.hubspot import HubspotTasks
from connectors.salesforce import SalesforceTasks, external_value
from connectors.hubspot import HubspotConfig as HubspotSettings
from connectors.salesforce import SalesforceConfig as SalesforceSettings
from conftest import Db
from engine.store.outbox import Claimed

NOW = datetime(2024, 5, 1, 9, 0)
KEY = "churn-risk/account:acme/1/0/0"
TOKEN = "pat-na1-secret"
Handler = Callable[[Request], Any]


def task_item(key: str = KEY, *, attempts: int = 1, ambiguous: bool = False, **over: Any) -> Claimed:
    payload = {"title": "Call Acme", "description": "Usage dropped 40%", "assignee": "csm@example.com",
               "priority": "high", "due_at": "2024-05-03T09:00:00", "close_on_resolve": True, **over}
    return registry().load(Claimed(1, key, "task", "x", payload, attempts, 1, ambiguous, "churn-risk", "account",
                                   "acme", 1, NOW, None))


def close_item(external_id: str | None, task_key: str = KEY) -> Claimed:
    return registry().load(Claimed(2, "churn-risk/account:acme/1/close/1", "task_close", "x",
                                   {"task_key": task_key, "external_id": external_id, "title": "Call Acme"},
                                   1, 1, False, "churn-risk", "account", "acme", 1, NOW, None))


class FakeApi:
    """Routes (method, path regex) to handlers returning (status, json[, headers]); records every request."""

    def __init__(self, server: HTTPServer):
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[dict[str, Any]] = []
        server.expect_request(re.compile(".*")).respond_with_handler(self)

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.insert(0, (method, re.compile(pattern + "$"), handler))

    def __call__(self, request: Request) -> Response:
        body = json.loads(request.get_data() or b"null")
        self.requests.append({"method": request.method, "path": request.path, "args": dict(request.args),
                              "json": body, "auth": request.headers.get("Authorization")})
        for method, pattern, handler in self.routes:
            if method == request.method and pattern.match(request.path):
                status, data, *headers = handler(request)
                text = "" if data is None else json.dumps(data)
                return Response(text, status=status, headers=headers[0] if headers else None,
                                content_type="application/json")
        return Response(json.dumps({"message": f"no route {request.method} {request.path}"}), status=404)

    def sent(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and re.match(path + "$", r["path"])]


@pytest.fixture
def db(tmp_path: Path) -> Db:
    database = Db(f"sqlite:///{tmp_path}/t.db")
    yield database
    database.dispose()


def stored(db: Db, status: str | None = None) -> list[dict]:
    with db.store.read() as tx:
        return tx.tasks.list(status=status)


# --- HubSpot -----------------------------------------------------------------------------------


@pytest.fixture
def hubspot(httpserver: HTTPServer) -> FakeApi:
    api = FakeApi(httpserver)
    api.route("GET", "/crm/v3/owners/?", lambda r: (200, {"results": [{"id": "77", "email": r.args["email"]}]
                                                          if r.args.get("email") == "csm@example.com" else []}))
    api.route("POST", "/crm/v3/objects/companies/search", lambda r: (200, {"total": 1, "results": [{"id": "5001"}]}))
    api.route("POST", "/crm/v3/objects/tasks/search", lambda r: (200, {"total": 0, "results": []}))
    api.route("POST", "/crm/v3/objects/tasks", lambda r: (201, {"id": "9001", "properties": {}}))
    api.route("PATCH", "/crm/v3/objects/tasks/\\w+", lambda r: (200, {"id": r.path.rsplit("/", 1)[1]}))
    return api


def hub(httpserver: HTTPServer, db: Db, **kw: Any) -> HubspotTasks:
    return HubspotTasks(HubspotSettings(token=TOKEN, base_url=httpserver.url_for("/"), **kw), db.store, lambda: NOW,
                        timeout=2)


def test_hubspot_creates_an_owned_associated_task_and_records_it(httpserver: HTTPServer, hubspot: FakeApi,
                                                                 db: Db) -> None:
    d = hub(httpserver, db).deliver(task_item())
    assert d.outcome == Outcome.SENT and d.result["external_id"] == "9001" and d.result["notes"] == []
    [owner] = hubspot.sent("GET", "/crm/v3/owners/?")
    assert owner["args"]["email"] == "csm@example.com"
    [company] = hubspot.sent("POST", "/crm/v3/objects/companies/search")
    assert company["json"]["filterGroups"][0]["filters"] == [
        {"propertyName": "playbook_account_id", "operator": "EQ", "value": "acme"}]
    [create] = hubspot.sent("POST", "/crm/v3/objects/tasks")
    assert create["auth"] == f"Bearer {TOKEN}"
    props = create["json"]["properties"]
    assert props == {"hs_task_subject": "Call Acme", "hs_task_body": "Usage dropped 40%", "hs_task_priority": "HIGH",
                     "hs_task_status": "NOT_STARTED", "hs_task_type": "TODO",
                     "hs_timestamp": "1714726800000",            # 2024-05-03T09:00Z in ms
                     "playbook_key": KEY, "hubspot_owner_id": "77"}
    assert create["json"]["associations"] == [{"to": {"id": "5001"}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}]}]
    assert not hubspot.sent("POST", "/crm/v3/objects/tasks/search")      # a first attempt does not search
    [row] = stored(db)
    assert (row["connector"], row["external_id"], row["dedup_key"], row["status"]) == ("hubspot", "9001", KEY, "open")
    assert row["due_at"] == datetime(2024, 5, 3, 9) and row["assignee"] == "csm@example.com"


def test_hubspot_caches_owner_and_company_lookups(httpserver: HTTPServer, hubspot: FakeApi, db: Db) -> None:
    c = hub(httpserver, db)
    for n in range(2):
        assert c.deliver(task_item(f"{KEY}-{n}")).outcome == Outcome.SENT
    assert len(hubspot.sent("GET", "/crm/v3/owners/?")) == 1
    assert len(hubspot.sent("POST", "/crm/v3/objects/companies/search")) == 1
    assert len(hubspot.sent("POST", "/crm/v3/objects/tasks")) == 2


def test_hubspot_without_owner_or_company_creates_an_unassociated_task(httpserver: HTTPServer, hubspot: FakeApi,
                                                                      db: Db) -> None:
    hubspot.route("POST", "/crm/v3/objects/companies/search", lambda r: (200, {"total": 0, "results": []}))
    d = hub(httpserver, db).deliver(task_item(assignee="stranger@example.com", due_at=None, priority="low"))
    assert d.outcome == Outcome.SENT
    assert "not associated" in d.detail and "stranger@example.com" in d.detail
    [create] = hubspot.sent("POST", "/crm/v3/objects/tasks")
    assert "associations" not in create["json"] and "hubspot_owner_id" not in create["json"]["properties"]
    assert create["json"]["properties"]["hs_task_priority"] == "LOW"
    assert create["json"]["properties"]["hs_timestamp"] == "1714554000000"   # no due date: now (NOW, UTC)


def test_hubspot_owner_lookup_can_be_switched_off(httpserver: HTTPServer, hubspot: FakeApi, db: Db) -> None:
    assert hub(httpserver, db, owner_by_email=False).deliver(task_item()).outcome == Outcome.SENT
    assert not hubspot.sent("GET", "/crm/v3/owners/?")


@pytest.mark.parametrize("headers, wait", [({"Retry-After": "12"}, 12.0),
                                           ({"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, 10.0)])
def test_hubspot_rate_limit_is_transient(httpserver: HTTPServer, hubspot: FakeApi, db: Db,
                                         headers: dict[str, str], wait: float) -> None:
    hubspot.route("POST", "/crm/v3/objects/tasks", lambda r: (429, {"status": "error", "message": "You have reached "
                                                                    "your secondly limit."}, headers))
    d = hub(httpserver, db).deliver(task_item())
    assert d.outcome == Outcome.TRANSIENT and d.retry_after == wait and "secondly limit" in d.detail
    assert stored(db) == []


def test_hubspot_rate_limited_lookup_is_transient_before_creating(httpserver: HTTPServer, hubspot: FakeApi,
                                                                  db: Db) -> None:
    hubspot.route("GET", "/crm/v3/owners/?", lambda r: (429, {"message": "slow"}, {"Retry-After": "3"}))
    d = hub(httpserver, db).deliver(task_item())
    assert d.outcome == Outcome.TRANSIENT and d.retry_after == 3
    assert not hubspot.sent("POST", "/crm/v3/objects/tasks")


@pytest.mark.parametrize("status, message, outcome, words", [
    (401, "Authentication credentials not found.", Outcome.PERMANENT, "token was rejected"),
    (400, 'Property values were not valid: "playbook_key" does not exist', Outcome.PERMANENT,
     "create the task property"),
    (502, "Bad gateway", Outcome.TRANSIENT, "502")])
def test_hubspot_errors(httpserver: HTTPServer, hubspot: FakeApi, db: Db, status: int, message: str,
                        outcome: Outcome, words: str) -> None:
    hubspot.route("POST", "/crm/v3/objects/tasks", lambda r: (status, {"status": "error", "message": message}))
    d = hub(httpserver, db).deliver(task_item())
    assert d.outcome == outcome and words in d.detail and TOKEN not in d.detail


def test_hubspot_unreachable_is_transient(db: Db) -> None:
    c = HubspotTasks(HubspotSettings(token=TOKEN, base_url="http://127.0.0.1:9"), db.store, lambda: NOW, timeout=1)
    d = c.deliver(task_item())
    assert d.outcome == Outcome.TRANSIENT and "HubSpot" in d.detail


def test_hubspot_check_finds_the_task_an_earlier_attempt_created(httpserver: HTTPServer, hubspot: FakeApi,
                                                                 db: Db) -> None:
    c = hub(httpserver, db)
    assert c.on_ambiguous == "check"
    assert c.check(task_item(ambiguous=True)) is None
    hubspot.route("POST", "/crm/v3/objects/tasks/search", lambda r: (200, {"total": 1, "results": [
        {"id": "4242", "properties": {"playbook_key": r.get_json()["filterGroups"][0]["filters"][0]["value"]}}]}))
    found = c.check(task_item(ambiguous=True))
    assert found is not None and found.outcome == Outcome.SENT and found.result == {"external_id": "4242"}
    search = hubspot.sent("POST", "/crm/v3/objects/tasks/search")[-1]["json"]
    assert search["filterGroups"][0]["filters"] == [{"propertyName": "playbook_key", "operator": "EQ", "value": KEY}]
    [row] = stored(db)
    assert row["external_id"] == "4242" and row["connector"] == "hubspot"
    assert not hubspot.sent("POST", "/crm/v3/objects/tasks")


def test_hubspot_retry_searches_before_creating_again(httpserver: HTTPServer, hubspot: FakeApi, db: Db) -> None:
    hubspot.route("POST", "/crm/v3/objects/tasks/search", lambda r: (200, {"total": 1, "results": [{"id": "4242"}]}))
    d = hub(httpserver, db).deliver(task_item(attempts=2))
    assert d.outcome == Outcome.SENT and d.result["external_id"] == "4242"
    assert not hubspot.sent("POST", "/crm/v3/objects/tasks")


def test_hubspot_task_close_completes_the_task(httpserver: HTTPServer, hubspot: FakeApi, db: Db) -> None:
    c = hub(httpserver, db)
    c.deliver(task_item())
    d = c.deliver(close_item("9001"))
    assert d.outcome == Outcome.SENT
    [patch] = hubspot.sent("PATCH", "/crm/v3/objects/tasks/9001")
    assert patch["json"] == {"properties": {"hs_task_status": "COMPLETED"}} and patch["auth"] == f"Bearer {TOKEN}"
    [row] = stored(db, status=None)
    assert row["status"] == "closed" and row["closed_at"] == NOW


def test_hubspot_task_close_without_id_searches_by_key_and_tolerates_404(httpserver: HTTPServer, hubspot: FakeApi,
                                                                        db: Db) -> None:
    hubspot.route("POST", "/crm/v3/objects/tasks/search", lambda r: (200, {"total": 1, "results": [{"id": "31"}]}))
    hubspot.route("PATCH", "/crm/v3/objects/tasks/31", lambda r: (404, {"message": "not found"}))
    d = hub(httpserver, db).deliver(close_item(None))
    assert d.outcome == Outcome.SENT and "no longer exists" in d.detail
    assert hubspot.sent("POST", "/crm/v3/objects/tasks/search")[0]["json"]["filterGroups"][0]["filters"][0][
        "value"] == KEY


# --- Salesforce --------------------------------------------------------------------------------

API = "/services/data/v60.0"


class FakeSalesforce(FakeApi):
    """Task records keyed by the external id, matched case-insensitively as Salesforce does."""

    def __init__(self, server: HTTPServer, *, no_content_on_update: bool = False):
        super().__init__(server)
        self.records: dict[str, dict[str, Any]] = {}
        self.no_content_on_update = no_content_on_update
        self.route("GET", f"{API}/query", self.query)
        self.route("PATCH", f"{API}/sobjects/Task/Playbook_Key__c/[^/]+", self.upsert)
        self.route("GET", f"{API}/sobjects/Task/Playbook_Key__c/[^/]+", self.get)
        self.route("PATCH", f"{API}/sobjects/Task/00T\\w+", self.update)

    def query(self, r: Request) -> tuple[int, Any]:
        hit = "csm@example.com" in r.args["q"]
        return 200, {"totalSize": int(hit), "done": True, "records": [{"Id": "005USER01"}] if hit else []}

    def upsert(self, r: Request) -> tuple[int, Any]:
        ext = unquote(r.path.rsplit("/", 1)[1]).lower()
        if ext in self.records:
            self.records[ext].update(r.get_json())
            if self.no_content_on_update:
                return 204, None
            return 200, {"id": self.records[ext]["Id"], "success": True, "errors": [], "created": False}
        self.records[ext] = {"Id": f"00T{len(self.records):06d}", **r.get_json()}
        return 201, {"id": self.records[ext]["Id"], "success": True, "errors": [], "created": True}

    def get(self, r: Request) -> tuple[int, Any]:
        rec = self.records.get(unquote(r.path.rsplit("/", 1)[1]).lower())
        return (200, {"Id": rec["Id"]}) if rec else (404, [{"errorCode": "NOT_FOUND", "message": "not found"}])

    def update(self, r: Request) -> tuple[int, Any]:
        for rec in self.records.values():
            if rec["Id"] == r.path.rsplit("/", 1)[1]:
                rec.update(r.get_json())
                return 204, None
        return 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]


def sf(httpserver: HTTPServer, db: Db) -> SalesforceTasks:
    conf = SalesforceSettings(instance_url=httpserver.url_for("/").rstrip("/"), token=TOKEN)
    return SalesforceTasks(conf, db.store, lambda: NOW, timeout=2)


def test_salesforce_upserts_on_the_external_id_and_records_the_task(httpserver: HTTPServer, db: Db) -> None:
    api = FakeSalesforce(httpserver)
    c = sf(httpserver, db)
    assert c.on_ambiguous == "resend"
    d = c.deliver(task_item())
    assert d.outcome == Outcome.SENT and d.result["external_id"] == "00T000000" and d.result["created"] is True
    [query] = api.sent("GET", f"{API}/query")
    assert "FROM User WHERE Email = 'csm@example.com'" in query["args"]["q"] and query["auth"] == f"Bearer {TOKEN}"
    [upsert] = api.sent("PATCH", f"{API}/sobjects/Task/Playbook_Key__c/.+")
    assert upsert["path"] == f"{API}/sobjects/Task/Playbook_Key__c/{external_value(KEY)}"
    assert upsert["auth"] == f"Bearer {TOKEN}"
    assert upsert["json"] == {"Subject": "Call Acme", "Description": "Usage dropped 40%", "Priority": "High",
                              "Status": "Not Started", "ActivityDate": "2024-05-03", "OwnerId": "005USER01"}
    [row] = stored(db)
    assert (row["connector"], row["external_id"], row["dedup_key"]) == ("salesforce", "00T000000", KEY)


def test_salesforce_same_action_twice_upserts_the_same_record(httpserver: HTTPServer, db: Db) -> None:
    api = FakeSalesforce(httpserver)
    c = sf(httpserver, db)
    first, second = c.deliver(task_item()), c.deliver(task_item(attempts=2))
    assert first.outcome == second.outcome == Outcome.SENT
    assert first.result["external_id"] == second.result["external_id"] and second.result["created"] is False
    paths = {r["path"] for r in api.sent("PATCH", f"{API}/sobjects/Task/Playbook_Key__c/.+")}
    assert len(paths) == 1 and len(api.records) == 1 and len(stored(db)) == 1
    assert len(api.sent("GET", f"{API}/query")) == 1          # owner cached


def test_salesforce_update_without_body_fetches_the_id(httpserver: HTTPServer, db: Db) -> None:
    api = FakeSalesforce(httpserver, no_content_on_update=True)
    c = sf(httpserver, db)
    c.deliver(task_item())
    d = c.deliver(task_item(attempts=2))
    assert d.outcome == Outcome.SENT and d.result["external_id"] == "00T000000"
    assert api.sent("GET", f"{API}/sobjects/Task/Playbook_Key__c/.+")[0]["args"] == {"fields": "Id"}


def test_salesforce_unknown_owner_keeps_the_default(httpserver: HTTPServer, db: Db) -> None:
    api = FakeSalesforce(httpserver)
    d = sf(httpserver, db).deliver(task_item(assignee="o'brien@example.com", due_at=None, priority="normal"))
    assert d.outcome == Outcome.SENT and "default owner" in d.detail
    assert "Email = 'o\\'brien@example.com'" in api.sent("GET", f"{API}/query")[0]["args"]["q"]
    body = api.sent("PATCH", f"{API}/sobjects/Task/Playbook_Key__c/.+")[0]["json"]
    assert "OwnerId" not in body and "ActivityDate" not in body and body["Priority"] == "Normal"


def test_salesforce_task_close_sets_completed(httpserver: HTTPServer, db: Db) -> None:
    api = FakeSalesforce(httpserver)
    c = sf(httpserver, db)
    c.deliver(task_item())
    d = c.deliver(close_item("00T000000"))
    assert d.outcome == Outcome.SENT
    [patch] = api.sent("PATCH", f"{API}/sobjects/Task/00T000000")
    assert patch["json"] == {"Status": "Completed"}
    assert stored(db, status=None)[0]["status"] == "closed"


def test_salesforce_task_close_without_id_uses_the_external_id(httpserver: HTTPServer, db: Db) -> None:
    api = FakeSalesforce(httpserver)
    c = sf(httpserver, db)
    c.deliver(task_item())
    assert c.deliver(close_item(None)).outcome == Outcome.SENT
    last = api.sent("PATCH", f"{API}/sobjects/Task/Playbook_Key__c/.+")[-1]
    assert last["path"].endswith(external_value(KEY)) and last["json"] == {"Status": "Completed"}
    assert list(api.records.values())[0]["Status"] == "Completed"


def test_salesforce_task_close_of_a_deleted_task_is_sent(httpserver: HTTPServer, db: Db) -> None:
    FakeSalesforce(httpserver)
    d = sf(httpserver, db).deliver(close_item("00T999999"))
    assert d.outcome == Outcome.SENT and "no longer exists" in d.detail


@pytest.mark.parametrize("status, body, outcome, words", [
    (401, [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"}], Outcome.PERMANENT,
     "rejected the token"),
    (400, [{"errorCode": "INVALID_FIELD", "message": "No such column 'Playbook_Key__c' on entity 'Task'"}],
     Outcome.PERMANENT, "No such column"),
    (403, [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}],
     Outcome.TRANSIENT, "REQUEST_LIMIT_EXCEEDED"),
    (503, [{"errorCode": "SERVER_UNAVAILABLE", "message": "down for maintenance"}], Outcome.TRANSIENT, "503"),
])
def test_salesforce_errors(httpserver: HTTPServer, db: Db, status: int, body: Any, outcome: Outcome,
                           words: str) -> None:
    api = FakeSalesforce(httpserver)
    api.route("PATCH", f"{API}/sobjects/Task/Playbook_Key__c/[^/]+", lambda r: (status, body))
    d = sf(httpserver, db).deliver(task_item())
    assert d.outcome == outcome and words in d.detail and TOKEN not in d.detail
    assert stored(db) == []


def test_salesforce_rate_limit_honours_retry_after(httpserver: HTTPServer, db: Db) -> None:
    api = FakeSalesforce(httpserver)
    api.route("PATCH", f"{API}/sobjects/Task/Playbook_Key__c/[^/]+", lambda r: (429, [], {"Retry-After": "20"}))
    d = sf(httpserver, db).deliver(task_item())
    assert d.outcome == Outcome.TRANSIENT and d.retry_after == 20


def test_salesforce_timeout_is_transient(httpserver: HTTPServer, db: Db) -> None:
    api = FakeSalesforce(httpserver)

    def slow(r: Request) -> tuple[int, Any]:
        time.sleep(0.5)
        return 201, {"id": "00T1"}

    api.route("PATCH", f"{API}/sobjects/Task/Playbook_Key__c/[^/]+", slow)
    c = SalesforceTasks(SalesforceSettings(instance_url=httpserver.url_for("/"), token=TOKEN), db.store, lambda: NOW,
                        timeout=0.2)
    d = c.deliver(task_item())
    assert d.outcome == Outcome.TRANSIENT and "timed out" in d.detail


def test_external_value_is_url_safe_and_distinguishes_case() -> None:
    a, b = external_value("pb/account:Acme/1/0/0"), external_value("pb/account:acme/1/0/0")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", a) and a.lower() != b.lower()
    assert a == external_value("pb/account:Acme/1/0/0") and a.startswith("pb_account_Acme_1_0_0-")
