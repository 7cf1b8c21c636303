"""Delivery channels: one module per connector, all behind the Connector protocol in base.py."""
