"""`playbook start`: the long-running service — scheduled syncs and evaluations, continuous dispatch.

APScheduler is only a clock here: its jobs carry playbook ids, never business state. What ran when
lives in the database (playbook_state), which is how a restart after downtime runs exactly one
catch-up evaluation. Several `start` processes may run for high availability: they compete for a
leader lease in the database and only the holder evaluates and syncs; every process dispatches."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from engine.app import App
from engine.clock import cron_trigger, wall_clock
from engine.dispatch import Dispatcher, worker_id
from engine.spec.compiled import PlaybookSet
from engine.spec.loader import load_playbooks, playbook_files
from engine.tick import record_presence, run_tick

log = logging.getLogger("playbook.service")
LEADER = "scheduler"


class Service:
    """One `playbook start` process."""

    def __init__(self, app: App, *, workers: int = 1, every: float | None = None, lease_s: float = 15.0,
                 metrics_port: int | None = None, unsubscribe_port: int | None = None, poll_s: float = 2.0,
                 unsubscribe_host: str = "127.0.0.1"):
        self.app, self.workers, self.every, self.lease_s = app, workers, every, lease_s
        self.metrics_port, self.unsubscribe_port, self.poll_s = metrics_port, unsubscribe_port, poll_s
        self.unsubscribe_host = unsubscribe_host
        self.owner = worker_id()
        self.stop = threading.Event()
        self.reload_wanted = threading.Event()
        self.token: int | None = None
        self.playbooks: PlaybookSet = app.playbooks
        self.good = {p.id: p for p in self.playbooks.valid}
        self.mtimes = self._mtimes()
        tz = ZoneInfo(app.settings.timezone)
        self.scheduler = BackgroundScheduler(timezone=tz, job_defaults={
            "coalesce": True,            # many missed fire times -> one run
            "misfire_grace_time": 3600,  # a fire time up to an hour late (busy process) still runs
            "max_instances": 1})
        self.eval_lock = threading.Lock()

    # ---- lifecycle -------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_wanted.set())
        self._report_invalid(self.playbooks)
        self._mark_presence(self.playbooks)
        self._schedule()
        self.scheduler.start()
        threads = [threading.Thread(target=self._dispatch_loop, name=f"dispatch-{i}", daemon=True)
                   for i in range(self.workers)]
        for t in threads:
            t.start()
        servers = self._servers()
        log.info("started", extra={"owner": self.owner, "playbooks": len(self.good), "workers": self.workers})
        try:
            while not self.stop.wait(min(self.poll_s, self.lease_s / 3)):
                self._lead()
                try:
                    if self.reload_wanted.is_set() or self._mtimes() != self.mtimes:
                        self.reload_wanted.clear()
                        self.reload()
                except Exception:  # noqa: BLE001 - no playbook edit stops the service: it keeps what it runs
                    log.exception("reloading the playbooks failed; the service keeps the playbooks it had")
        finally:
            log.info("stopping: finishing in-flight work")
            self.scheduler.shutdown(wait=True)
            for t in threads:
                t.join(timeout=60)
            for s in servers:
                s.shutdown()
            with self.app.store.write() as tx:
                tx.leases.release(LEADER, self.owner)
            log.info("stopped")
        return 0

    def _servers(self) -> list:
        out = []
        if self.metrics_port is not None:
            from engine.metrics import start_metrics

            out.append(start_metrics(self.app, self.metrics_port))
        if self.unsubscribe_port is not None:
            from engine.consent import secret
            from engine.unsubscribe_http import serve

            key = secret(self.app.settings)
            if key is None:
                log.error("unsubscribe endpoint not started: no unsubscribe_secret configured")
            else:
                endpoint = serve(self.app.store, key, self.unsubscribe_host, self.unsubscribe_port)
                log.info("unsubscribe endpoint listening", extra={"host": endpoint.host, "port": endpoint.port})
                out.append(endpoint)
        return out

    # ---- leadership --------------------------------------------------------------------------------
    def _lead(self) -> None:
        """Take or renew the leader lease; a new leader catches up on missed evaluations."""
        try:
            with self.app.store.write() as tx:
                token = tx.leases.acquire(LEADER, self.owner, wall_clock(), self.lease_s)
        except Exception:  # noqa: BLE001 - the database may be restarting; try again next beat
            log.exception("leader lease: database unavailable")
            token = None
        became = token is not None and token != self.token
        if token is None and self.token is not None:
            log.warning("lost the leader lease", extra={"owner": self.owner})
        self.token = token
        if became:
            log.info("leader", extra={"owner": self.owner, "token": token})
            try:
                self.catch_up()
            except Exception:  # noqa: BLE001 - retried at the next leadership change or schedule
                log.exception("catch-up failed")

    @property
    def is_leader(self) -> bool:
        return self.token is not None

    # ---- scheduling --------------------------------------------------------------------------------
    def _trigger(self, cron: str):  # noqa: ANN202
        if self.every is not None:
            return IntervalTrigger(seconds=self.every)
        return cron_trigger(cron, ZoneInfo(self.app.settings.timezone))

    def _schedule(self) -> None:
        """One job per distinct schedule: playbooks due at the same moment are evaluated in one tick (one
        scan per subject type for all of them, one metric-window refresh, shared write batches)."""
        self.scheduler.remove_all_jobs()
        default = self.app.settings.defaults.schedule
        by_schedule: dict[str, list[str]] = {}
        for pb in self.good.values():
            if pb.spec.enabled:
                by_schedule.setdefault(pb.schedule(default), []).append(pb.id)
        for cron, ids in by_schedule.items():
            self.scheduler.add_job(self.evaluate, self._trigger(cron), args=[ids, cron], id=f"schedule:{cron}",
                                   replace_existing=True)
        sync_cron = self.app.settings.defaults.sync_schedule
        if sync_cron or any(s.schedule for s in self.app.settings.sources):
            self.scheduler.add_job(self.sync, self._trigger(sync_cron or "0 * * * *"), id="sync",
                                   replace_existing=True)

    def next_runs(self) -> dict[str, datetime | None]:
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs()}

    def evaluate(self, playbook_ids: list[str], cron: str | None = None) -> None:
        """A scheduled evaluation of these playbooks, in one tick (only the leader evaluates), at the time it was
        scheduled for (`cron`'s latest time), however late it starts: repeats count from scheduled instants."""
        if not self.is_leader or self.stop.is_set():
            return
        pbs = tuple(self.good[pid] for pid in playbook_ids if pid in self.good)
        if not pbs:
            return
        with self.eval_lock:
            started = time.perf_counter()
            try:
                result = run_tick(self.app.store, self.app.settings, PlaybookSet(pbs, ()),
                                  self.app.clock(self._scheduled_at(cron)), kind="scheduled", keep_events=False)
                seconds = round(time.perf_counter() - started, 3)
                for o in result.playbooks:
                    if o.error is not None:
                        log.error("evaluation failed; nothing of this playbook changed", exc_info=o.error,
                                  extra={"playbook": o.playbook, "run_id": result.run_id})
                        continue
                    log.info("evaluated", extra={"playbook": o.playbook, "run_id": result.run_id,
                                                 "events": dict(o.counts), "planned": o.planned, "skipped": o.skipped,
                                                 "seconds": seconds})
            except Exception:  # noqa: BLE001 - one failing evaluation must not stop the service
                log.exception("evaluation failed", extra={"playbooks": [p.id for p in pbs]})
                if len(pbs) > 1:          # one playbook's failure must not hold back the others: one by one
                    for pb in pbs:
                        self.evaluate([pb.id], cron)

    def _scheduled_at(self, cron: str | None) -> datetime | None:
        """The latest time `cron` fired at or before now (a job starts late when the process is busy; it is not
        run more than an hour late), or None for the wall clock (`--every`, or no schedule)."""
        if cron is None or self.every is not None:
            return None
        now = datetime.now(timezone.utc)
        trigger = self._trigger(cron)
        fired, probe = None, now - timedelta(hours=1, minutes=1)
        while (nxt := trigger.get_next_fire_time(None, probe)) is not None and nxt <= now:
            fired, probe = nxt, nxt + timedelta(seconds=1)
        return fired

    def catch_up(self) -> list[str]:
        """Evaluate, once, every playbook whose last scheduled time passed since its last evaluation. A playbook
        never evaluated is not caught up: its first evaluation is its next scheduled time (§12)."""
        with self.app.store.read() as tx:
            states = tx.runs.playbook_states()
        now = datetime.now(timezone.utc)
        due = []
        default = self.app.settings.defaults.schedule
        for pb in self.good.values():
            if not pb.spec.enabled:
                continue
            last = states.get(pb.id, {}).get("last_evaluated_at")
            if last is None:
                continue
            trigger = self._trigger(pb.schedule(default))
            nxt = trigger.get_next_fire_time(None, last.replace(tzinfo=timezone.utc) + timedelta(microseconds=1))
            if nxt is not None and nxt <= now:
                due.append(pb.id)
        for pid in due:
            log.info("catch-up evaluation", extra={"playbook": pid})
        if due:
            self.evaluate(due)
        return due

    def sync(self) -> None:
        """A scheduled sync of every source (leader only)."""
        if not self.is_leader:
            return
        from engine.sync.runner import SyncFailed, run_sync

        try:
            report = run_sync(self.app.settings, self.app.store)
            log.info("synced", extra={"entities": {k: v.read for k, v in report.entities.items()}})
        except SyncFailed as exc:
            # the service goes on with the data it had; a refused mass removal waits for an operator's
            # `playbook sync --allow-removal` (or a complete export at the next scheduled sync)
            refused = [name for name in exc.report.failed if exc.report.entities[name].refused]
            log.error("%ssync failed; nothing of %s changed: %s", "ALERT " if refused else "",
                      ", ".join(exc.report.failed), exc, extra={"alert": "mass_removal"} if refused else {})
        except Exception:  # noqa: BLE001
            log.exception("sync failed")

    # ---- reload ------------------------------------------------------------------------------------
    def _mtimes(self) -> dict[str, float]:
        s = self.app.settings
        files = playbook_files(s.playbooks) if s.playbooks.is_dir() else []
        if s.templates.is_dir():
            files += sorted(s.templates.glob("*.j2"))
        out = {}
        for p in files:
            try:
                out[str(p)] = p.stat().st_mtime
            except OSError:             # removed since it was listed
                continue
        return out

    def reload(self) -> None:
        """Reload playbooks; a playbook whose new version is invalid, whatever the error (its YAML, its id, its
        expressions or templates), keeps its last good version: found by its id, else by its file."""
        self.mtimes = self._mtimes()
        new = load_playbooks(self.app.settings)
        self._report_invalid(new)
        good = {p.id: p for p in new.valid}
        by_file = {p.file: p for p in self.good.values()}
        for inv in new.invalid:
            last = self.good.get(inv.id) if inv.id else None
            last = last if last is not None and last.file == inv.file else by_file.get(inv.file, last)
            if last is not None and last.id not in good:
                good[last.id] = last
                log.error("kept the last good version of %s: its new version is invalid", last.id,
                          extra={"playbook": last.id, "file": inv.file})
        self.good = good
        self._mark_presence(new)
        self._schedule()
        log.info("reloaded playbooks", extra={"playbooks": len(good)})

    def _mark_presence(self, loaded: PlaybookSet) -> None:
        """Playbooks disabled or removed since their last evaluation are activated again when they come back."""
        try:
            record_presence(self.app.store, loaded)
        except Exception:  # noqa: BLE001 - the database may be restarting; the next reload marks them
            log.exception("could not record which playbooks are switched off")

    def _report_invalid(self, pset: PlaybookSet) -> None:
        for d in pset.warnings:
            log.warning("%s", d)
        for inv in pset.invalid:
            for d in inv.diagnostics:
                log.error("invalid playbook: %s", d, extra={"file": inv.file})

    # ---- dispatch ----------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        from engine.plugins import build_connectors

        connectors = build_connectors(self.app.settings, self.app.store, wall_clock)
        d = Dispatcher(self.app.store, self.app.settings, connectors, owner=f"{self.owner}:{threading.get_ident()}")
        try:
            run_worker_loop(d, self.stop)
        finally:
            for c in connectors.values():
                c.close()


def run_worker_loop(d: Dispatcher, stop: threading.Event, *, idle_s: float = 1.0,
                    max_idle: float | None = None) -> None:
    """Claim and deliver until `stop` is set; survive database outages; release leases on the way out."""
    idle_since, backoff = time.monotonic(), 1.0
    while not stop.is_set():
        try:
            d.settle()               # what a database error cut short (no query when nothing was)
            d.assemble()             # digests due now become actions to claim
            items = d.claim()
            d.process(items, stop)   # on stop, the rest of the batch stays claimed and is released below
            backoff = 1.0
        except Exception:  # noqa: BLE001 - e.g. the database restarted: reconnect with backoff
            log.exception("dispatch: database error; retrying in %.0fs", backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)
            continue
        if items:
            idle_since = time.monotonic()
            continue
        if max_idle is not None and time.monotonic() - idle_since >= max_idle:
            break
        stop.wait(idle_s)
    try:
        d.settle()
    except Exception:  # noqa: BLE001
        log.exception("could not record outcomes or release leases; the leases expire on their own")




def status_report(app: App) -> dict[str, Any]:
    """`playbook status`: each playbook's last evaluation and next scheduled time, the outbox by state, recent
    failures, the leader and the last syncs (times in the config time zone, ISO with offset)."""
    tz = ZoneInfo(app.settings.timezone)
    with app.store.read() as tx:
        states = tx.runs.playbook_states()
        counts = tx.outbox.counts()
        failed = tx.outbox.list(status="failed", limit=10)
        leader = tx.leases.holder(LEADER)
        synced = tx.runs.last_synced()
    now = datetime.now(tz)
    rows = []
    for pb in app.playbooks.valid:
        cron = pb.schedule(app.settings.defaults.schedule)
        nxt = cron_trigger(cron, tz).get_next_fire_time(None, now) if pb.spec.enabled else None
        st = states.get(pb.id, {})
        last = st.get("last_evaluated_at")
        rows.append({"playbook": pb.id, "enabled": pb.spec.enabled, "schedule": cron,
                     "last_run": last.replace(tzinfo=timezone.utc).astimezone(tz).isoformat() if last else None,
                     "status": st.get("status"), "detail": st.get("detail"),
                     "next_run": nxt.isoformat() if nxt else None})
    return {"playbooks": rows, "invalid": [i.file for i in app.playbooks.invalid], "queue": counts,
            "recent_failures": [{"id": f["id"], "dedup_key": f["dedup_key"], "error": f["last_error"]}
                                for f in failed],
            "leader": ({"owner": leader["owner"], "until": leader["until"].isoformat()}
                       if leader and leader["until"] > wall_clock() else None),
            "synced": {k: v.isoformat() for k, v in synced.items()}}


def run_worker(app: App, *, interval: float = 1.0, max_idle: float | None = None) -> None:
    """`playbook worker`: deliver due actions until SIGTERM or Ctrl-C (or `max_idle` seconds with nothing due)."""
    from engine.plugins import build_connectors

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    connectors = build_connectors(app.settings, app.store, wall_clock)
    try:
        run_worker_loop(Dispatcher(app.store, app.settings, connectors), stop, idle_s=interval, max_idle=max_idle)
    finally:
        for c in connectors.values():
            c.close()
