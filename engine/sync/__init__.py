"""Sync: read the configured sources (§4), validate their rows and load them into the store."""

from __future__ import annotations

from engine.sync.progress import ProgressCallback, rich_progress
from engine.sync.runner import EntityReport, SyncFailed, SyncReport, run_sync

__all__ = ["EntityReport", "ProgressCallback", "SyncFailed", "SyncReport", "rich_progress", "run_sync"]
