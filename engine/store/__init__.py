"""The store: the one place that opens connections, transactions and statements (see store.py).

    store = open_store(url)
    with store.write() as tx:
        tx.outbox.enqueue(rows)
"""

from __future__ import annotations

from engine.store.store import DatabaseError, Session, Store, Tx, open_store

__all__ = ["DatabaseError", "Session", "Store", "Tx", "open_store"]
