"""Sync: read the configured sources (§4), validate their rows and load them into the store.

runner.py runs a sync (`run_sync`); reader.py is what a source plugin gives it; files.py and sql_source.py are
the built-in sources; validate.py and coerce.py check and type each row; progress.py shows how far it got."""
