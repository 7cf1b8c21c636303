"""Installed from a wheel into a fresh virtual environment, outside the repository, the engine works: the scaffold
and the example playbooks come from the package (`init`, `demo`), the plugins from its entry points."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "results", "*.db",
                                ".pytest_cache", ".hypothesis")


def run(*args: str | Path, cwd: Path) -> str:
    """Run a command (without PYTHONPATH, which would put the source tree before the installed wheel); its
    stdout, or the test fails with everything it printed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_a_wheel_install_inits_syncs_runs_and_demos_outside_the_repository(tmp_path: Path) -> None:
    source = tmp_path / "source"          # a copy: building writes into the tree it builds from
    shutil.copytree(ROOT, source, ignore=IGNORE)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", source, cwd=tmp_path)
    playbook = venv / "bin" / "playbook"
    home = tmp_path / "home"
    home.mkdir()
    assert "Next: cd x" in run(playbook, "init", "x", "--accounts", "40", cwd=home)
    work = home / "x"
    assert sorted(p.name for p in (work / "playbooks").glob("*.yaml"))
    assert not (work / "playbooks" / "__init__.py").exists()
    run(playbook, "validate", cwd=work)
    run(playbook, "sync", cwd=work)
    out = json.loads(run(playbook, "run", "--format", "json", cwd=work))
    assert out["events"], "the example playbooks fire on the sample data"
    demo = run(playbook, "demo", "--keep", home / "demo", "--accounts", "40", cwd=home)
    assert "Demo summary" in demo and "goal-achieved" in demo
