"""The store: SQLAlchemy tables, migrations and repositories — the only place that writes SQL."""
