"""The built-in connector plugins (email, slack, webhook, the task list, HubSpot, Salesforce), registered through
the `playbook_engine.connectors` entry points exactly as a third party's (engine/plugins.py)."""
