"""Benchmark harness for playbook-engine (`python -m bench`, `make bench`).

Modules: data (deterministic CSV generator), suite (config + 50 playbooks), phases (each measured step,
run in its own process), measure (timing, peak RSS, subprocess runner), baselines (single-scan SQL and
per-row Python references), report (table + JSON), smtp_throughput (SmtpEmail alone against aiosmtpd).
"""
