"""Human units for durations ("90s", "5m", "1h30m") and sizes ("64MiB", "1.5GB"). Pure functions."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4, "p": 1000**5, "pb": 1000**5,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4, "pi": 1024**5, "pib": 1024**5,
}  # fmt: skip


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number (taken as seconds) or a string such as "90s", "5m", "1h30m", "250ms"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 5m or 1h, got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a non-negative duration, got {value}")
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if text[pos : m.start()].strip():
            break
        total += float(m.group(1)) * _DURATION_FACTORS[m.group(2).lower()]
        pos = m.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(f"expected a duration such as 90s, 5m or 1h, got {value!r}")
    return total


def parse_size(value: str | int) -> int:
    """Bytes from an integer or a string such as "64MiB", "8 MB", "1.5GiB"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64MiB, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a non-negative size, got {value}")
        return value
    m = _SIZE.match(value) if isinstance(value, str) else None
    unit = (m.group(2) or "").lower() if m else ""
    if not m or unit not in _SIZE_FACTORS:
        raise ValueError(f"expected a size such as 64MiB or 1GB, got {value!r}")
    return int(float(m.group(1)) * _SIZE_FACTORS[unit])


def format_size(n: float) -> str:
    """Binary units, for humans: 1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
