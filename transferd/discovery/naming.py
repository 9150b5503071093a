"""FASTQ file names -> (sample, S number, lane, read, chunk). Pure.

Names are parsed from the right: the fixed Illumina suffix ``_S<n>[_L<lane>]_<read>_<chunk>.<ext>`` is matched
against the end of the name and the sample is whatever remains, so sample names may themselves contain
``_``, ``_R1_``, ``_L001``, ``_S1``, dots or dashes. Never split on the first ``_R1_``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ".fastq"/".fq" plus an optional compression suffix; only the extension is case-insensitive.
_EXT = r"\.(?i:fastq|fq)(?:\.(?P<comp>(?i:gz|bgz|ora|bz2|xz|zst)))?"

# bcl2fastq / BCL Convert / DRAGEN: Sample_S1_L001_R1_001.fastq.gz, lane optional (no lane splitting).
_ILLUMINA_RE = re.compile(
    r"^(?P<sample>.+)_S(?P<snum>\d+)(?:_L(?P<lane>\d{3}))?_(?P<read>[RI][12])_(?P<chunk>\d{3})" + _EXT + r"$"
)
# CASAVA 1.8 / bcl2fastq 1.8: Sample_ACGTAC_L001_R1_001.fastq.gz (barcode, or NoIndex, instead of S number).
_CASAVA_RE = re.compile(
    r"^(?P<sample>.+)_(?P<barcode>[ACGTN]{6,}(?:[-+][ACGTN]{6,})?|NoIndex)_L(?P<lane>\d{3})"
    r"_(?P<read>[RI][12])_(?P<chunk>\d{3})" + _EXT + r"$"
)
# Gencove's simple convention: SAMPLE_R1.fastq.gz, SAMPLE_R1_L001.fastq.gz; also SAMPLE_L001_R1_001.fastq.gz.
_SIMPLE_RE = re.compile(
    r"^(?P<sample>.+?)(?:_L(?P<lane>\d{3}))?_(?P<read>[RI][12])(?:_L(?P<lane2>\d{3}))?(?:_(?P<chunk>\d{3}))?"
    + _EXT
    + r"$"
)
# A simple-convention sample that ends like a malformed Illumina name ("X_S1_L1_R1_001", "_S1_L001_R1_001"):
# reject it rather than inventing the sample "X_S1_L1". "X_S1_R1.fastq.gz" stays a valid simple name.
_S_LANE_TAIL = re.compile(r"(?:^|_)S\d+_L\d+$")
_S_TAIL = re.compile(r"(?:^|_)S\d+$")
_FASTQ_LIKE = re.compile(r"\.(?:fastq|fq)(?:\.[a-z0-9]{1,4})?$", re.IGNORECASE)

GZIP_COMPRESSIONS = frozenset({"gz", "bgz"})


@dataclass(frozen=True, slots=True)
class FastqName:
    sample: str
    read: str  # "R1", "R2", "I1" or "I2"
    s_number: int | None
    lane: int | None
    chunk: int  # 1 when the name has no chunk number
    compression: str | None  # "gz", "bgz", "ora", ... (lower case); None = uncompressed
    convention: str  # "illumina", "casava" or "simple"
    barcode: str | None = None

    @property
    def is_index(self) -> bool:
        return self.read.startswith("I")

    @property
    def is_gzip(self) -> bool:
        return self.compression in GZIP_COMPRESSIONS

    @property
    def is_undetermined(self) -> bool:
        return self.sample.lower() == "undetermined" or (self.convention == "illumina" and self.s_number == 0)

    @property
    def group_id(self) -> tuple[str, str]:
        """What tells apart two samples with the same name in one folder (S number or barcode)."""
        if self.s_number is not None:
            return (self.sample, f"S{self.s_number}")
        return (self.sample, self.barcode or "")


def _comp(match: re.Match[str]) -> str | None:
    comp = match.group("comp")
    return comp.lower() if comp else None


def parse_fastq_name(name: str) -> FastqName | None:
    """Parse a basename; None if it is not a FASTQ name we understand."""
    m = _ILLUMINA_RE.match(name)
    if m:
        lane = m.group("lane")
        return FastqName(
            sample=m.group("sample"),
            read=m.group("read"),
            s_number=int(m.group("snum")),
            lane=int(lane) if lane else None,
            chunk=int(m.group("chunk")),
            compression=_comp(m),
            convention="illumina",
        )
    m = _CASAVA_RE.match(name)
    if m:
        return FastqName(
            sample=m.group("sample"),
            read=m.group("read"),
            s_number=None,
            lane=int(m.group("lane")),
            chunk=int(m.group("chunk")),
            compression=_comp(m),
            convention="casava",
            barcode=m.group("barcode"),
        )
    m = _SIMPLE_RE.match(name)
    if m:
        sample = m.group("sample")
        lane, lane2, chunk = m.group("lane"), m.group("lane2"), m.group("chunk")
        lane_text = lane or lane2
        if (lane and lane2) or _S_LANE_TAIL.search(sample) or (_S_TAIL.search(sample) and (chunk or lane_text)):
            return None
        return FastqName(
            sample=sample,
            read=m.group("read"),
            s_number=None,
            lane=int(lane_text) if lane_text else None,
            chunk=int(chunk) if chunk else 1,
            compression=_comp(m),
            convention="simple",
        )
    return None


def looks_like_fastq(name: str) -> bool:
    """True for names that end like a FASTQ (``.fastq``, ``.fq.gz``, ``.fastq.ora``, ...), parsed or not."""
    return _FASTQ_LIKE.search(name) is not None


def client_id_for(sample_name: str, policy: str) -> tuple[str, str | None]:
    """(client_id, problem). Gencove splits names on ``_``, so a client_id must not contain one."""
    if "_" not in sample_name:
        return sample_name, None
    if policy == "replace":
        return sample_name.replace("_", "-"), None
    return sample_name, (
        f"sample name {sample_name!r} contains '_', which Gencove does not allow in a client_id "
        "(client_id_policy = reject)"
    )
