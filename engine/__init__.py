"""playbook-engine: rules-driven playbook automation for customer success."""

__version__ = "0.1.0"
