"""`playbook test` (§18): the shipped tests of every example playbook pass (as `playbook init` scaffolds them),
a broken expectation fails at its line with a diff, and bad test files are reported at their line."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from engine.cli import main
from engine.workspace import scaffold

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scaffolded working directory: the example playbooks, their tests, the scaffold config."""
    path = tmp_path_factory.mktemp("tests") / "cs"
    scaffold(path, accounts=0)
    return path


def invoke(work: Path, *args: str) -> object:
    return CliRunner().invoke(main, ["--config", str(work / "config.yaml"), "test", *args])


def test_every_example_playbook_has_a_test_file_and_they_all_pass(work: Path) -> None:
    tested = set()
    for path in (ROOT / "playbooks" / "tests").glob("*.test.yaml"):
        tested |= set(yaml.safe_load(path.read_text(encoding="utf-8"))["playbooks"])
    examples = {yaml.safe_load(p.read_text(encoding="utf-8"))["id"] for p in (ROOT / "playbooks").glob("*.yaml")}
    assert examples <= tested, f"no test file for {sorted(examples - tested)}"
    r = invoke(work)
    assert r.exit_code == 0, r.output
    assert re.search(r"^(\d+) case\(s\): \1 passed, 0 failed$", r.stdout, re.M), r.stdout
    assert "FAIL" not in r.stdout and r.stdout.count("PASS  ") >= len(examples)


def test_a_broken_expectation_fails_at_its_line_with_a_diff(work: Path, tmp_path: Path) -> None:
    text = (work / "playbook-tests" / "renewal-risk.test.yaml").read_text(encoding="utf-8")
    broken = text.replace('title: "Renewal risk: Acme"', 'title: "Renewal at risk: Acme"', 1)
    assert broken != text
    path = tmp_path / "broken.test.yaml"
    path.write_text(broken, encoding="utf-8")
    line = next(n for n, s in enumerate(broken.splitlines(), 1) if "Renewal at risk: Acme" in s)
    r = invoke(work, str(path))
    assert r.exit_code == 1
    assert f"broken.test.yaml:{line}: expected enter of renewal-risk for account:A1; actions[1].title differs" \
        in r.stdout, r.stdout
    assert "-   title: 'Renewal at risk: Acme'" in r.stdout
    assert "+   title: 'Renewal risk: Acme'" in r.stdout
    assert "  - kind: slack" in r.stdout             # what matched is shown as written, not as a difference
    assert re.search(r"^4 case\(s\): 3 passed, 1 failed$", r.stdout, re.M)


def test_an_event_nobody_expected_and_one_that_did_not_happen(work: Path, tmp_path: Path) -> None:
    path = tmp_path / "t.test.yaml"
    path.write_text(textwrap.dedent("""\
        playbooks: [renewal-risk]
        data:
          accounts:
            - {id: A1, name: Acme, arr: 150000, renewal_date: 2027-01-15, health_score: 50}
        runs:
          - at: 2026-12-01T09:00:00+09:00
            expect: []
          - at: 2026-12-02T09:00:00+09:00
            expect:
              - {playbook: renewal-risk, subject: A1, event: resolve}
    """), encoding="utf-8")
    r = invoke(work, str(path), "--format", "json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    runs = doc["files"][0]["cases"][0]["runs"]
    assert [p["line"] for p in runs[0]["problems"]] == [6]
    assert runs[0]["problems"][0]["message"] == "unexpected enter of renewal-risk for account:A1"
    assert runs[0]["problems"][0]["diff"][0] == "+ playbook: renewal-risk"
    assert runs[0]["events"][0]["actions"][1]["title"] == "Renewal risk: Acme"
    assert runs[1]["problems"] == [{"line": 10, "message": "expected resolve of renewal-risk for account:A1, which "
                                    "did not happen", "diff": ["- playbook: renewal-risk", "- subject: account:A1",
                                                               "- event: resolve"]}]
    assert (doc["passed"], doc["failed"]) == (0, 1)


def test_rows_are_checked_as_a_sync_checks_them_at_the_test_file_line(work: Path, tmp_path: Path) -> None:
    path = tmp_path / "t.test.yaml"
    path.write_text(textwrap.dedent("""\
        data:
          accounts:
            - {id: A1, name: Acme}
          contacts:
            - {id: C1, account_id: A1, role: champoin}
        runs:
          - at: 2026-12-01T09:00:00+09:00
    """), encoding="utf-8")
    r = invoke(work, str(path))
    assert r.exit_code == 1
    assert "t.test.yaml:5: role: \"champoin\" is not one of champion" in r.stdout, r.stdout


def test_a_malformed_test_file_is_reported_at_its_lines(work: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.test.yaml"
    path.write_text(textwrap.dedent("""\
        playbooks: [renewal-risk]
        data:
          usage:
            - {account_id: A1, metric: logins, end: 2026-11-30, values: "5x30 ax2"}
        runs:
          - at: 2026-12-01T09:00:00+09:00
            expct: []
          - at: 2026-11-01T09:00:00+09:00
    """), encoding="utf-8")
    r = invoke(work, str(path))
    assert r.exit_code == 1
    assert "bad.test.yaml:4:" in r.stdout and "bad series: `ax2` is not" in r.stdout
    assert "bad.test.yaml:7:5: unknown key `expct` (did you mean `expect`?)" in r.stdout
    assert "bad.test.yaml:8:9: runs must be in time order" in r.stdout
    assert "Traceback" not in r.output


def test_unknown_playbook_and_no_test_files(work: Path, tmp_path: Path) -> None:
    path = tmp_path / "t.test.yaml"
    path.write_text("playbooks: [renewal-rsk]\nruns:\n  - at: 2026-12-01T09:00:00+09:00\n", encoding="utf-8")
    r = invoke(work, str(path))
    assert r.exit_code == 1
    assert "t.test.yaml:1: unknown playbook `renewal-rsk` (did you mean `renewal-risk`?)" in r.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke(work, str(empty))
    assert r.exit_code == 1 and "no test files" in r.stderr


def test_nothing_is_written_or_delivered(work: Path) -> None:
    r = invoke(work)
    assert r.exit_code == 0
    assert not (work / "playbook.db").exists() and not (work / "outbox").exists()


def test_remove_takes_a_subject_out_and_its_episode_resolves(work: Path, tmp_path: Path) -> None:
    path = tmp_path / "t.test.yaml"
    path.write_text(textwrap.dedent("""\
        playbooks: [renewal-risk]
        data:
          accounts:
            - {id: A1, name: Acme, arr: 150000, renewal_date: 2027-01-15, health_score: 50}
            - {id: A2, name: Bolt, arr: 150000, renewal_date: 2027-01-15, health_score: 90}
        runs:
          - at: 2026-12-01T09:00:00+09:00
            expect: [{playbook: renewal-risk, subject: A1, event: enter}]
          - at: 2026-12-02T09:00:00+09:00
            remove: {accounts: [A1]}
            expect: [{playbook: renewal-risk, subject: A1, event: resolve}]
    """), encoding="utf-8")
    r = invoke(work, str(path))
    assert r.exit_code == 0, r.stdout


def test_every_playbook_by_default_over_several_runs(work: Path, tmp_path: Path) -> None:
    path = tmp_path / "all.test.yaml"
    path.write_text(textwrap.dedent("""\
        data:
          accounts:
            - {id: A1, name: Acme, arr: 150000, seats: 10, lifecycle_stage: adoption, renewal_date: 2027-01-15,
               health_score: 50, csm_email: csm@example.com}
        runs:
          - at: 2026-12-01T10:00:00+09:00
          - at: 2026-12-02T10:00:00+09:00
            expect: []
          - at: 2026-12-03T10:00:00+09:00
            set: {accounts: [{id: A1, health_score: 90}]}
            expect: [{playbook: renewal-risk, subject: A1, event: resolve}]
    """), encoding="utf-8")
    r = invoke(work, str(path), "--format", "json")
    assert r.exit_code == 0, r.stdout
    first = json.loads(r.stdout)["files"][0]["cases"][0]["runs"][0]["events"]
    assert {(e["playbook"], e["event"]) for e in first} >= {("renewal-risk", "enter"), ("low-usage-alert", "enter")}
