"""`python -m engine …` is the same as the `playbook` command."""

from engine.cli import main

main()
