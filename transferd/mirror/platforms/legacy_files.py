"""Legacy raw-data rows -> deliverables (pure: no I/O).

A raw-data row names each deliverable by a `<name>_url_s3` field holding a signed S3 URL, or null when it is not
available. The file type is the name with `-` for `_` (`fastq_r1_url_s3` -> `fastq-r1`, `bam_url_s3` -> `bam`).
`url_s3` is an alias of one of the others (the sample's main deliverable) and so is placed last and dropped when
its object (scheme, host and path: the signature in the query differs) is already listed; only if it points at
an object nothing else names is it kept, as `raw-data`. The same rule drops any other duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from transferd.mirror.template import default_filename

URL_SUFFIX = "_url_s3"
ALIAS_FIELD = "url_s3"
ALIAS_TYPE = "raw-data"
TRAITS_TYPE = "traits-json"  # the trait JSON written beside the files (not a download)
# In the order the legacy docs list them; unknown `*_url_s3` fields follow, sorted, then the alias.
PROJECT_FIELDS = (
    "fastq_r1_url_s3", "fastq_r2_url_s3", "bam_url_s3", "bai_url_s3", "fastq_nongrch37_url_s3", "ancestry_url_s3",
    "microbiome_url_s3", "vcf_url_s3", "tbi_url_s3", "csi_url_s3", "snp_url_s3", "traits_url_s3",
)  # fmt: skip
APP_FIELDS = tuple(f for f in PROJECT_FIELDS if not f.startswith(("fastq_", "traits_")))


@dataclass(frozen=True, slots=True)
class LegacyFile:
    file_id: str  # stable across raw-data calls: "<gencove_id>:<file_type>"
    file_type: str
    url: str
    default_filename: str
    field: str


def file_type_of(field: str) -> str:
    """`bam_url_s3` -> `bam`, `fastq_r1_url_s3` -> `fastq-r1`, `url_s3` -> `raw-data`."""
    if field == ALIAS_FIELD:
        return ALIAS_TYPE
    if not field.endswith(URL_SUFFIX):
        raise ValueError(f"{field!r} is not a *_url_s3 field")
    return field[: -len(URL_SUFFIX)].replace("_", "-")


def known_file_types(fields: Iterable[str]) -> list[str]:
    return [file_type_of(f) for f in fields] + [ALIAS_TYPE]


def object_key(url: str) -> str:
    """What identifies the object behind a signed URL: everything but the query and fragment."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc.lower()}{p.path}"


def _url_fields(row: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    known = list(known)
    extra = sorted(k for k in row if k.endswith(URL_SUFFIX) and k != ALIAS_FIELD and k not in known)
    return [*known, *extra, ALIAS_FIELD]


def deliverables(row: Mapping[str, Any], gencove_id: str, known: Iterable[str] = PROJECT_FIELDS) -> list[LegacyFile]:
    """The row's available files, each object once; null, empty and non-string URLs are skipped."""
    out: list[LegacyFile] = []
    seen: set[str] = set()
    for field in _url_fields(row, known):
        url = row.get(field)
        if not isinstance(url, str) or not url:
            continue
        key = object_key(url)
        if key in seen:
            continue  # `url_s3` aliasing another field, or two fields naming one object
        seen.add(key)
        file_type = file_type_of(field)
        out.append(LegacyFile(f"{gencove_id}:{file_type}", file_type, url, default_filename(url), field))
    return out


def traits_document(
    row: Mapping[str, Any], gencove_id: str, member_id_key: str, trait_descriptions: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The JSON kept beside a sample's files, or None when the row has no trait values."""
    values = row.get("trait_values")
    if values is None:
        return None
    group = {k: row[k] for k in ("project_id", "app_id") if k in row}
    return {
        "gencove_id": gencove_id,
        member_id_key: row.get(member_id_key),
        "external_id": row.get("external_id"),
        **group,
        "trait_values": values,
        "trait_descriptions": dict(trait_descriptions),
    }


def traits_filename(gencove_id: str) -> str:
    return f"{gencove_id}_traits.json"


def dumps(doc: Mapping[str, Any]) -> bytes:
    """Stable bytes, so an unchanged document is recognised and never rewritten."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
