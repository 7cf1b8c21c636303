"""The example playbooks and their templates, shipped inside the package as `engine.examples` (see
engine/workspace.py): `playbook init` and `playbook demo` copy them into a working directory."""
