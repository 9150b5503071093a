"""The one-line STATUS= summary systemd shows in `systemctl status transferd`."""

from __future__ import annotations

from transferd.config import Config
from transferd.service.health import Health
from transferd.stats import STATS
from transferd.units import format_size


def summary(cfg: Config, health: Health) -> str:
    """e.g. "uploading 3 objects (48.0 MiB in flight), 12 samples assigned, mirror ok: 40 files, ready"."""
    snap = STATS.snapshot()
    in_flight: dict[str, int] = snap["in_flight_objects"]  # type: ignore[assignment]
    in_bytes: dict[str, int] = snap["in_flight_bytes"]  # type: ignore[assignment]
    samples: dict[str, int] = snap["samples"]  # type: ignore[assignment]
    files: dict[str, int] = snap["files"]  # type: ignore[assignment]
    errors: dict[str, int] = snap["errors"]  # type: ignore[assignment]
    parts = []
    n = in_flight.get("upload", 0)
    if n:
        parts.append(f"uploading {n} object{'s' * (n != 1)} ({format_size(in_bytes.get('upload', 0))} in flight)")
    else:
        parts.append("idle")
    parts.append(f"{samples.get('assigned', 0)} samples assigned")
    if cfg.download.projects:
        bad = sum(v for k, v in errors.items() if k.startswith(("mirror", "download")))
        state = f"{bad} errors" if bad else "ok"
        parts.append(f"mirror {state}: {files.get('download', 0)} files")
    else:
        parts.append("mirror off")
    failed = [name for name, ok in health.verdicts().items() if not ok]
    parts.append("ready" if not failed else "not ready: " + ", ".join(failed))
    return ", ".join(parts)
