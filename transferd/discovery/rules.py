"""Per-watch discovery rules: how run folders are judged complete and how files become samples."""

from __future__ import annotations

from dataclasses import dataclass

COMPLETION_MODES = ("auto", "markers", "quiet")
CLIENT_ID_POLICIES = ("replace", "reject")


@dataclass(frozen=True, slots=True)
class DiscoveryRules:
    """One watch's rules. Built by the config loader per ``[[watch]]``; defaults suit Illumina output.

    ``completion``: "auto" waits for the producer's markers when the layout has them and otherwise for a
    quiet period; "markers" always requires markers; "quiet" ignores markers. ``markers`` (paths relative to
    the run folder, ``{analysis}`` expands to the NovaSeq X analysis number) replaces the per-layout defaults
    when non-empty.
    """

    settle_seconds: float = 60
    completion: str = "auto"
    quiet_seconds: float | None = None
    markers: tuple[str, ...] = ()
    single_end: bool = False
    include_index_reads: bool = False
    include_undetermined: bool = False
    client_id_policy: str = "replace"
    verify_gzip: bool = True

    def __post_init__(self) -> None:
        if self.completion not in COMPLETION_MODES:
            raise ValueError(f"completion must be one of {', '.join(COMPLETION_MODES)}, not {self.completion!r}")
        if self.client_id_policy not in CLIENT_ID_POLICIES:
            raise ValueError(
                f"client_id_policy must be one of {', '.join(CLIENT_ID_POLICIES)}, not {self.client_id_policy!r}"
            )
        if self.settle_seconds < 0:
            raise ValueError(f"settle_seconds must be >= 0, not {self.settle_seconds}")
        if self.quiet_seconds is not None and self.quiet_seconds < 0:
            raise ValueError(f"quiet_seconds must be >= 0, not {self.quiet_seconds}")
        for marker in self.markers:
            if not marker or marker.startswith("/") or ".." in marker.split("/"):
                raise ValueError(f"marker {marker!r} must be a path relative to the run folder")

    @property
    def effective_quiet_seconds(self) -> float:
        return self.settle_seconds if self.quiet_seconds is None else self.quiet_seconds
