"""`playbook start` under stress: two processes plan what one plans, leader take-over, one catch-up
after downtime, clean SIGTERM, SIGHUP reload keeping the last good playbook."""

from __future__ import annotations

import signal
import time
from datetime import timedelta

from sqlalchemy import select

from engine.app import App
from engine.clock import wall_clock
from reliability.figures import record_figure
from reliability.polling import wait_for

PLAYBOOKS = {
    "small": """
id: small
name: Small accounts
activation: fire
trigger: {when: account.arr < 1000}
actions:
  - slack: {channel: "#cs", text: "{{ account.name }} is small"}
  - task: {title: "Call {{ account.name }}", assignee: "{{ account.csm_email }}"}
""",
    "big": """
id: big
name: Big accounts
activation: fire
trigger: {when: account.arr >= 1000}
where: ["account.seats > 5"]
actions:
  - webhook: {url: "https://example.invalid/big", body: {account: "{{ account.id }}"}}
""",
}


def prepare(ws, accounts: int = 200) -> None:  # noqa: ANN001
    for name, text in PLAYBOOKS.items():
        ws.playbook(name, text)
    ws.data("accounts", [{"id": f"A{i:04}", "name": f"Acme {i}", "arr": (i * 37) % 2000, "seats": i % 11,
                          "csm_email": f"csm{i % 4}@example.com"} for i in range(accounts)])
    ws.sync()


def query(ws, fn):  # noqa: ANN001, ANN201
    """fn(tx) in one transaction on the workspace's store (committed)."""
    app = App(ws.config)
    try:
        with app.store.write() as tx:
            return fn(tx)
    finally:
        app.close()


def scheduled_runs(ws) -> int:  # noqa: ANN001
    """Scheduled evaluations of single playbooks (one run row covers the playbooks evaluated together)."""
    details = query(ws, lambda tx: tx.conn.execute(select(tx.schema.runs.c.detail)
                                                   .where(tx.schema.runs.c.kind == "scheduled")).scalars().all())
    return sum(len(d or {}) for d in details)


def planned_keys(ws) -> list[str]:  # noqa: ANN001
    return sorted(r["dedup_key"] for r in query(ws, lambda tx: tx.outbox.list(limit=100_000)))


def run_start(ws, processes: int, ticks: int) -> float:  # noqa: ANN001
    """Run `processes` start processes until `ticks` evaluations of each playbook happened."""
    started = time.perf_counter()
    procs = [ws.spawn("start", "--every", "0.3", "--lease", "3", "--workers", "1") for _ in range(processes)]
    try:
        deadline = time.monotonic() + 120
        while scheduled_runs(ws) < ticks * len(PLAYBOOKS) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.communicate(timeout=60)
            assert p.returncode == 0
    return time.perf_counter() - started


def test_two_start_processes_plan_what_one_plans(pg_factory) -> None:  # noqa: ANN001
    one, two, split = pg_factory(), pg_factory(), pg_factory()
    for ws in (one, two, split):
        prepare(ws)
    run_start(one, 1, ticks=20)
    run_start(two, 2, ticks=20)
    # split brain: two processes evaluating at the same time, no leader lease at all
    procs = [split.spawn("run", "--no-dispatch") for _ in range(2) for _ in range(10)]
    for p in procs:
        p.communicate(timeout=120)
    keys = planned_keys(one)
    assert keys and planned_keys(two) == keys and planned_keys(split) == keys
    assert len(keys) == len(set(keys))
    record_figure("two_start_processes_20_ticks", {"planned_one": len(keys), "planned_two": len(planned_keys(two)),
                                                   "planned_split_brain_20_runs": len(planned_keys(split)),
                                                   "identical": True})


def test_leader_killed_another_takes_over(pg_ws) -> None:  # noqa: ANN001
    prepare(pg_ws, accounts=20)
    a = pg_ws.spawn("start", "--every", "1", "--lease", "3", "--workers", "1")
    holder = lambda: query(pg_ws, lambda tx: tx.leases.holder("scheduler"))  # noqa: E731
    deadline = time.monotonic() + 60
    while not (holder() and holder()["owner"].endswith(f":{a.pid}")) and time.monotonic() < deadline:
        time.sleep(0.1)
    b = pg_ws.spawn("start", "--every", "1", "--lease", "3", "--workers", "1")
    time.sleep(4)                                        # b is up and following
    assert holder()["owner"].endswith(f":{a.pid}")
    a.kill()
    a.wait()
    killed = time.monotonic()
    while not holder()["owner"].endswith(f":{b.pid}"):
        assert time.monotonic() - killed < 10, "no take-over"
        time.sleep(0.05)
    takeover = time.monotonic() - killed
    b.send_signal(signal.SIGTERM)
    b.communicate(timeout=60)
    assert b.returncode == 0
    assert takeover <= 3 + 1.5                           # the lease, plus one renewal beat
    record_figure("leader_takeover_s", {"lease_s": 3, "takeover_s": round(takeover, 2)})


def test_restart_after_downtime_runs_one_catch_up(pg_ws) -> None:  # noqa: ANN001
    prepare(pg_ws, accounts=20)
    for name in PLAYBOOKS:                                # daily schedules; last evaluated 3 days ago
        path = pg_ws.root / "playbooks" / f"{name}.yaml"
        path.write_text(path.read_text().replace("name:", 'schedule: "0 3 * * *"\nname:', 1))

    def backdate(tx):  # noqa: ANN001, ANN202
        for name in PLAYBOOKS:
            tx.runs.record_playbook(name, evaluated_at=wall_clock() - timedelta(days=3),
                                    now=wall_clock() - timedelta(days=3), status="ok", detail=None, source_hash=None)

    query(pg_ws, backdate)
    p = pg_ws.spawn("start", "--lease", "3", "--workers", "1")
    time.sleep(6)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    runs = scheduled_runs(pg_ws)
    assert runs == len(PLAYBOOKS), err                   # exactly one catch-up each, not zero, not three
    ticks = query(pg_ws, lambda tx: tx.conn.execute(select(tx.schema.runs.c.id)
                                                    .where(tx.schema.runs.c.kind == "scheduled")).all())
    assert len(ticks) == 1                               # ... all in one tick (one scan for all of them)
    assert err.count("catch-up evaluation") == len(PLAYBOOKS)
    record_figure("catch_up_after_3_days_down", {"playbooks": len(PLAYBOOKS), "evaluations": runs})


def test_first_start_runs_no_catch_up(pg_ws) -> None:  # noqa: ANN001
    """On a database where the playbooks never ran, `start` evaluates nothing until their next scheduled time:
    switching the engine on does not flood (§12)."""
    prepare(pg_ws, accounts=20)
    for name in PLAYBOOKS:
        path = pg_ws.root / "playbooks" / f"{name}.yaml"
        path.write_text(path.read_text().replace("name:", 'schedule: "0 3 1 1 *"\nname:', 1))
    p = pg_ws.spawn("start", "--lease", "3", "--workers", "1")
    time.sleep(6)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "leader" in err and "catch-up evaluation" not in err
    assert scheduled_runs(pg_ws) == 0 and planned_keys(pg_ws) == []


def test_sighup_keeps_last_good_version(pg_ws) -> None:  # noqa: ANN001
    prepare(pg_ws, accounts=20)
    p = pg_ws.spawn("start", "--every", "0.5", "--lease", "3", "--workers", "1")
    wait_for(lambda: scheduled_runs(pg_ws) > 0)          # the service is up and evaluating
    (pg_ws.root / "playbooks" / "small.yaml").write_text(
        "id: small\nname: Broken\nactivation: fire\ntrigger: {when: account.arr <}\n")
    p.send_signal(signal.SIGHUP)
    time.sleep(2)
    before = scheduled_runs(pg_ws)
    wait_for(lambda: scheduled_runs(pg_ws) >= before + 2)   # both playbooks still evaluate
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0
    assert "kept the last good version of small" in err
    assert "playbooks/small.yaml:4" in err
