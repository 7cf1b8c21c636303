"""No traceback for a user's mistake, anywhere (issue 23, item 4): every `playbook` command, fed the broken-input
corpus of tests/corpus/, exits 1 or 2 (0 only where the input is not the command's business) with a message that
names the file and line of the problem, and never prints a traceback or reports an internal error.

The commands run in-process (CliRunner, in the broken working directory); `start` is also run as a real process
on a broken configuration and a broken database, where it must fail before it starts."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corpus import Case, Run, all_cases
from corpus.base import build, copy
from engine.cli import main
from reliability.figures import record_figure

CASES = all_cases()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("corpus") / "base")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No configuration from the environment; internal-error logs (there should be none) under tmp_path; and
    `start` may not start the service: a case that gets that far failed to stop it."""
    import tempfile

    from engine.service import Service

    def started(self: Any) -> int:
        raise AssertionError("`playbook start` started the service on a broken input")

    monkeypatch.delenv("PLAYBOOK_CONFIG", raising=False)
    monkeypatch.delenv("PLAYBOOK_FIXTURE_UNSET_TOKEN", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(Service, "run", started)
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_broken_input(case: Case, base: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy(base, isolated / "ws")
    case.breaks(root)
    monkeypatch.chdir(root)
    runner = CliRunner()
    for run in case.runs:
        check(run, runner.invoke(main, list(run.args)))


def check(run: Run, result: Any) -> None:
    """The run's exit code, what its output says and does not say, and no traceback."""
    shown = f"playbook {' '.join(run.args)} -> {result.exit_code}\n--- stdout\n{result.stdout}--- stderr\n" \
            f"{result.stderr}"
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    assert escaped is None, f"{shown}\nan exception escaped the command: {escaped!r}"
    output = result.stdout + result.stderr
    assert "Traceback" not in output, shown
    assert "internal error" not in result.stderr, shown
    assert result.exit_code in run.codes, shown
    for text in run.says:
        assert text in output, f"{shown}\nexpected to read: {text}"
    if run.absent:
        assert run.absent not in output, shown


def test_every_command_is_in_the_corpus() -> None:
    """Each command and subcommand of `playbook --help` is fed broken inputs."""
    import click

    def paths(group: click.Group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
        out = set()
        for name, command in group.commands.items():
            out.add(prefix + (name,))
            if isinstance(command, click.Group):
                out |= paths(command, prefix + (name,))
        return out

    fed = {run.args[:n] for case in CASES for run in case.runs for n in (1, 2)}
    missing = sorted(" ".join(p) for p in paths(main) if p not in fed)
    assert not missing, f"commands no broken input reaches: {missing}"


def test_corpus_size() -> None:
    """How many broken inputs (per category) and command runs the corpus holds: printed as figures."""
    per_category = Counter(c.category for c in CASES)
    runs = sum(len(c.runs) for c in CASES)
    for category, count in sorted(per_category.items()):
        record_figure(f"broken inputs: {category}", count, "corpus")
    record_figure("broken inputs", len(CASES), "corpus")
    record_figure("broken-input command runs", runs, "corpus")
    durations = [c for c in CASES if c.category == "duration"]
    assert {c.name.split("=")[0] for c in durations} >= {"config:delivery.expire_after", "config:defaults.max_data_age",
                                                         "config:contact_policy.caps.0.within", "playbook:repeat",
                                                         "playbook:cooldown", "playbook:actions.0.task.due_in"}
    assert len(CASES) >= 200 and runs >= 1000         # the generators still generate


@pytest.mark.parametrize("broken", ["config", "database"])
def test_start_fails_before_it_starts(broken: str, base: Path, tmp_path: Path) -> None:
    """The real service process, on a broken configuration or database: exit 1 with the message, at once."""
    root = copy(base, tmp_path / "ws")
    if broken == "config":
        path = root / "config.yaml"
        path.write_text(path.read_text().replace("expire_after: 3d", "expire_after: 30 seconds"))
        says = "config.yaml:28:17: delivery.expire_after: `30 seconds` is not a duration"
    else:
        for p in root.glob("playbook.db*"):
            p.unlink()
        (root / "playbook.db").write_bytes(b"not a database\n" * 100)
        says = "playbook.db: file is not a database"
    proc = subprocess.run([sys.executable, "-m", "engine", "start"], cwd=root, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr + proc.stdout, proc.stderr

