"""The journal: transferd's durable state (SQLite, WAL). See store.py for the transaction model."""

from transferd.journal.store import Journal, JournalLocked, log_event

__all__ = ["Journal", "JournalLocked", "log_event"]
