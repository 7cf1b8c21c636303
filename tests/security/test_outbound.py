"""Outbound requests (issue 24): a webhook URL from data reaches only what `outbound:` allows — refused hosts get
nothing (not even the signed request), the refusal is a permanent failure with its reason in `outbox list`, a URL
written in a playbook is refused by `validate`, and the address checked is the address connected to."""

from __future__ import annotations

import csv
import ipaddress
import json
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from conftest import Workspace
from connectors.webhook import WebhookConnector
from engine.delivery import Outcome
from engine.outbound import Outbound, OutboundConfig
from engine.plugins import registry
from engine.store.outbox import Claimed

SECRET = "whsec-do-not-send-7f3a"
HOOK = """
id: hook
name: Hook
activation: fire
trigger: {when: account.arr < 100}
actions:
  - webhook: {url: "{{ account.hook_url }}", body: {account: "{{ account.id }}"}}
"""


def hostile_urls(port: int) -> list[str]:
    """URLs that must never be reached: the loopback interface in every notation, the database port, cloud
    metadata, private, unspecified and multicast addresses."""
    return [
        f"http://127.0.0.1:{port}/hook", f"http://localhost:{port}/hook", f"http://LOCALHOST.:{port}/hook",
        f"http://0x7f000001:{port}/hook", f"http://2130706433:{port}/hook", f"http://0177.0.0.1:{port}/hook",
        f"http://127.1:{port}/hook", f"http://[::1]:{port}/hook", f"http://[::ffff:127.0.0.1]:{port}/hook",
        f"http://[0:0:0:0:0:ffff:7f00:1]:{port}/hook", f"https://127.0.0.1:{port}/hook",
        f"http://app.localhost:{port}/hook", "http://127.0.0.1:5432/", f"http://0.0.0.0:{port}/hook",
        f"http://[::]:{port}/hook", "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/",
        "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1/", "http://100.64.0.1/",
        "http://224.0.0.1/", "http://[ff02::1]/", "http://[fd00::1]/", "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
    ]


def workspace(ws: Workspace, urls: list[str], extra: str = "") -> None:
    config = (ws.root / "config.yaml").read_text().replace("nps: integer}", "nps: integer, hook_url: string}")
    (ws.root / "config.yaml").write_text(config + f"connectors:\n  webhook: {{secret: {SECRET}, timeout: 2}}\n"
                                         + extra)
    with open(ws.root / "data" / "accounts.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "arr", "hook_url"])
        for i, url in enumerate(urls):
            w.writerow([f"A{i:02d}", f"Acme {i}", 10, url])
    ws.playbook("hook", HOOK)
    ws.sync()


def outbox(ws: Workspace) -> dict[str, dict[str, Any]]:
    rows = json.loads(ws.cli("outbox", "list", "--format", "json").stdout)
    return {r["subject_id"]: r for r in rows["actions"]}


def test_urls_from_data_to_internal_addresses_are_refused_and_nothing_is_sent(ws_sqlite: Workspace,
                                                                              httpserver: HTTPServer) -> None:
    urls = hostile_urls(httpserver.port)
    workspace(ws_sqlite, urls)
    ws_sqlite.cli("run", "--now", "2026-03-02T09:00", expect=1)
    assert httpserver.log == []                         # not one request, signed or not
    rows = outbox(ws_sqlite)
    assert len(rows) == len(urls)
    for i, url in enumerate(urls):
        row = rows[f"A{i:02d}"]
        assert row["status"] == "failed", (url, row)
        assert "refused: webhook to" in row["last_error"] and "outbound.allow" in row["last_error"], (url, row)
        assert SECRET not in json.dumps(row)


def test_a_name_resolving_inside_is_refused_at_send_time_with_the_reason_in_the_outbox(
        ws_sqlite: Workspace, httpserver: HTTPServer) -> None:
    name = socket.gethostname()
    try:
        addresses = {ipaddress.ip_address(i[4][0]) for i in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    except OSError:
        pytest.skip(f"{name} does not resolve here")
    if any(a.is_global for a in addresses):
        pytest.skip(f"{name} resolves to a public address here")
    workspace(ws_sqlite, [f"http://{name}:{httpserver.port}/hook"])
    ws_sqlite.cli("run", "--now", "2026-03-02T09:00", expect=None)
    row = outbox(ws_sqlite)["A00"]
    assert row["status"] == "failed" and row["attempts"] == 1, row
    assert row["last_error"].startswith(f"refused: webhook to {name} ("), row
    assert httpserver.log == []


def test_the_dry_run_shows_the_refusal(ws_sqlite: Workspace) -> None:
    workspace(ws_sqlite, ["http://0x7f000001:8080/hook"])
    out = ws_sqlite.cli("run", "--dry-run", "--now", "2026-03-02T09:00", "--format", "json", expect=None).stdout
    assert "0x7f000001 (127.0.0.1) is a loopback address" in out
    assert ws_sqlite.outbox_rows() == []


def test_a_listed_address_is_reached_with_the_signature(ws_sqlite: Workspace, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    workspace(ws_sqlite, [httpserver.url_for("/hook")], "outbound: {allow: [127.0.0.1]}\n")
    ws_sqlite.cli("run", "--now", "2026-03-02T09:00")
    [(request, _)] = httpserver.log
    assert request.headers["X-Playbook-Signature"].startswith("sha256=")
    assert outbox(ws_sqlite)["A00"]["status"] == "sent"


def test_a_listed_port_allows_that_port_only(ws_sqlite: Workspace, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    urls = [httpserver.url_for("/hook"), "http://127.0.0.1:5432/"]
    workspace(ws_sqlite, urls, f"outbound: {{allow: ['127.0.0.1:{httpserver.port}']}}\n")
    ws_sqlite.cli("run", "--now", "2026-03-02T09:00", expect=1)
    rows = outbox(ws_sqlite)
    assert rows["A00"]["status"] == "sent" and rows["A01"]["status"] == "failed"
    assert len(httpserver.log) == 1


def test_public_false_refuses_what_is_not_listed(ws_sqlite: Workspace) -> None:
    workspace(ws_sqlite, ["http://93.184.216.34/hook"], "outbound: {public: false}\n")
    ws_sqlite.cli("run", "--now", "2026-03-02T09:00", expect=1)
    assert "`outbound.public` is false" in outbox(ws_sqlite)["A00"]["last_error"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]/x",
                                 "http://2130706433/", "http://169.254.169.254/latest/"])
def test_validate_refuses_a_written_url_at_its_line(ws_sqlite: Workspace, url: str) -> None:
    ws_sqlite.playbook("static", f"""
        id: static
        name: Static
        trigger: {{when: account.arr < 100}}
        actions:
          - webhook: {{url: "{url}"}}
        """)
    out = ws_sqlite.cli("validate", expect=1)
    text = out.stdout + out.stderr
    assert "static.yaml:5" in text and "outbound.allow" in text, text


@pytest.mark.parametrize("entry, message", [
    ("10.0.0.0/33", "is not an address or a network in CIDR notation"),
    ("hooks.example:99999", "the port must be a number from 1 to 65535"),
    ("not a host", "is not a host name"),
])
def test_a_bad_allow_entry_is_a_config_error_at_its_line(ws_sqlite: Workspace, entry: str, message: str) -> None:
    ws_sqlite.configure(f"outbound:\n  allow:\n    - 127.0.0.1\n    - '{entry}'\n")
    out = ws_sqlite.cli("validate", expect=1)
    text = out.stdout + out.stderr
    assert "config.yaml:18:" in text and message in text, text


def claimed(url: str) -> Claimed:
    return registry().load(Claimed(1, "pb/account:a1/1/0/0", "webhook", "webhook",
                                   {"url": url, "body": {"a": 1}}, 1, 1, False, "pb", "account", "a1", 1,
                                   datetime(2024, 5, 1), None))


def test_a_name_that_resolves_to_an_internal_address_is_refused_at_send_time(httpserver: HTTPServer) -> None:
    name = socket.gethostname()
    addresses = {ipaddress.ip_address(i[4][0]) for i in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    if any(a.is_global for a in addresses):
        pytest.skip(f"{name} resolves to a public address here")
    connector = WebhookConnector(None, outbound=Outbound())
    d = connector.deliver(claimed(f"http://{name}:{httpserver.port}/hook"))
    assert d.outcome == Outcome.PERMANENT and d.detail.startswith(f"refused: webhook to {name} (")
    assert httpserver.log == []


def test_the_address_checked_is_the_address_connected_to(httpserver: HTTPServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the resolver answers an allowed address first and an internal one after; the name is
    resolved once and the request goes to the address that was checked, with the name as its Host."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    real, calls = socket.getaddrinfo, []

    def resolver(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.rebind.example":
            return real(host, port, *args, **kwargs)
        calls.append(host)
        answer = "127.0.0.1" if len(calls) == 1 else "10.9.9.9"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    connector = WebhookConnector(None, outbound=Outbound(OutboundConfig(allow=["127.0.0.1"])))
    d = connector.deliver(claimed(f"http://hooks.rebind.example:{httpserver.port}/hook"))
    assert d.outcome == Outcome.SENT, d.detail
    assert calls == ["hooks.rebind.example"]
    [(request, _)] = httpserver.log
    assert request.headers["Host"] == f"hooks.rebind.example:{httpserver.port}"
    d = connector.deliver(claimed(f"http://hooks.rebind.example:{httpserver.port}/hook"))
    assert d.outcome == Outcome.PERMANENT and "10.9.9.9" in d.detail and len(httpserver.log) == 1


def test_a_name_with_one_internal_and_one_allowed_address_connects_only_to_the_allowed_one(
        httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    real = socket.getaddrinfo

    def resolver(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "two.example":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.9.9", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    connector = WebhookConnector(None, outbound=Outbound(OutboundConfig(allow=["127.0.0.0/8"])))
    d = connector.deliver(claimed(f"http://two.example:{httpserver.port}/hook"))
    assert d.outcome == Outcome.SENT and len(httpserver.log) == 1


def test_https_to_a_checked_address_still_verifies_the_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection goes to the checked address, but TLS verifies the certificate for the URL's host name:
    trusted for `localhost`, refused for a name the certificate does not carry."""
    import ssl

    from smtp_server import self_signed_cert

    made = self_signed_cert(tmp_path)
    if isinstance(made, str):
        pytest.skip(made)
    cert, key = made
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    try:
        server.expect_request("/hook").respond_with_data("ok")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: real(
            "127.0.0.1" if host == "other.example" else host, port, *a, **k))
        connector = WebhookConnector(None, outbound=Outbound(OutboundConfig(allow=["127.0.0.1"])))
        d = connector.deliver(claimed(f"https://localhost:{server.port}/hook"))
        assert d.outcome == Outcome.SENT, d.detail
        d = connector.deliver(claimed(f"https://other.example:{server.port}/hook"))
        assert d.outcome != Outcome.SENT and "certificate" in d.detail.lower(), d.detail
        assert len(server.log) == 1
    finally:
        server.clear()
        if server.is_running():
            server.stop()
