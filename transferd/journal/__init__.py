"""The journal: transferd's durable state (SQLite, WAL). See store.py for the transaction model."""

from transferd.journal.integrity import JournalDamaged
from transferd.journal.store import Journal, JournalLocked, log_event

__all__ = ["Journal", "JournalDamaged", "JournalLocked", "log_event"]
