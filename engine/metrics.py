"""Optional Prometheus metrics for `playbook start --metrics-port` (prometheus-client)."""

from __future__ import annotations

from typing import Any

from engine.app import App


def start_metrics(app: App, port: int) -> Any:
    """Serve /metrics; gauges are read from the database at each scrape, so every process agrees."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

    from engine.clock import wall_clock

    class Collector:
        def collect(self):  # noqa: ANN202
            with app.store.read() as tx:
                s = tx.stats.snapshot(wall_clock())
            g = GaugeMetricFamily("playbook_outbox_actions", "Outbox actions by state", labels=["state"])
            for state, n in s["outbox"].items():
                g.add_metric([state], n)
            yield g
            q = GaugeMetricFamily("playbook_queue_depth", "Actions due or in flight")
            q.add_metric([], s["queue_depth"])
            yield q
            r = GaugeMetricFamily("playbook_runs", "Evaluation runs recorded, by kind and status",
                                  labels=["kind", "status"])
            for (kind, status), n in s["runs"].items():
                r.add_metric([kind, status], n)
            yield r
            m = GaugeMetricFamily("playbook_open_episodes", "Subjects currently matching, by playbook",
                                  labels=["playbook"])
            for pb, n in s["open_episodes"].items():
                m.add_metric([pb], n)
            yield m
            h = HistogramMetricFamily("playbook_delivery_latency_seconds",
                                      "Time from planning to delivery of sent actions (last 24 h)")
            h.add_metric([], buckets=s["latency_buckets"], sum_value=s["latency_sum"])
            yield h

    registry = CollectorRegistry()
    registry.register(Collector())
    server, thread = start_http_server(port, registry=registry)
    return server


