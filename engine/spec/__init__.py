"""The playbook format: YAML loading with line marks, models, validation, JSON Schema."""
