"""Legacy projects and apps mirrored through the mirror's own loop and transfer engine, against the sandbox."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import sha256_file
from legacy_support import LEGACY_TYPES, Legacy, assert_mirrored

from transferd.journal import Journal
from transferd.mirror.loop import MirrorLoop
from transferd.mirror.platforms.legacy_platform import LegacyPlatform
from transferd.sandbox.legacy import TRAIT_DESCRIPTIONS, legacy_id
from transferd.stats import STATS

ALL = tuple(LEGACY_TYPES)
APP_TYPES = ("impute-vcf", "impute-vcf-tbi")


def _full_downloads(legacy: Legacy, since: int) -> list[dict[str, Any]]:
    """Download requests that are not the one-byte size probes."""
    return [e for e in legacy.sandbox.control.log(target="download", since=since) if e["range"] != "bytes=0-0"]


def _calls(legacy: Legacy, since: int) -> list[tuple[str, str, int]]:
    return [(e["method"], e["path"], e["status"]) for e in legacy.api_log(since)]


async def test_a_legacy_project_mirrors_and_a_second_cycle_costs_one_listing(
    legacy: Legacy, journal: Journal, tmp_path: Path
) -> None:
    vid, samples = legacy.view("projects"), legacy.finished(2)
    source = legacy.source(vid, "legacy-projects", "login")
    root, control = tmp_path / "mirror", legacy.sandbox.control
    seq = control.last_log_seq()
    async with MirrorLoop(legacy.config(source), journal, "unused") as loop:
        first = await loop.cycle(source)
        assert first.ok and first.count("done") == 2 and first.listed == 2
        assert assert_mirrored(root, samples, ALL) == first.downloaded == 8  # url_s3 aliases the VCF: not twice
        assert len(_full_downloads(legacy, seq)) == 8
        for s in samples:
            lid = legacy_id(s["id"])
            traits = json.loads((root / s["client_id"] / str(lid) / f"{lid}_traits.json").read_text())
            assert (
                traits["sample_id"] == lid
                and traits["trait_values"]
                and traits["trait_descriptions"] == (TRAIT_DESCRIPTIONS)
            )
        calls = _calls(legacy, seq)
        assert calls[:4] == [("POST", "/login", 200), ("POST", "/auth", 200), ("GET", f"/projects/{vid}/samples", 200),
                             ("POST", f"/projects/{vid}/samples/orders", 200)]  # fmt: skip
        authed = [e for e in legacy.api_log(seq) if e["path"] not in ("/login", "/auth")]
        assert {e["extra"].get("auth") for e in authed} == {"JWT"}
        raw = sorted(e["extra"]["ids"] for e in authed if e["path"].endswith("/raw-data"))
        assert raw == sorted(str(legacy_id(s["id"])) for s in samples)  # one raw-data call per sample, for it only
        assert journal.call(lambda c: {r[0] for r in c.execute("SELECT verified FROM downloads")}) == {"size"}
        assert STATS.files["download"] == 8 and STATS.samples["mirrored"] == 2

        seq = control.last_log_seq()
        again = await loop.cycle(source)
        assert again.ok and again.samples == () and again.listed == 2
        assert [(e["target"], e["path"]) for e in control.log(since=seq)] == [("api", f"/projects/{vid}/samples")]

    seq = control.last_log_seq()  # a restart asks each status once more; still no raw-data, no downloads
    async with MirrorLoop(legacy.config(source), journal, "unused") as loop:
        assert (await loop.cycle(source)).samples == ()
    assert [p for _, p, _ in _calls(legacy, seq)] == ["/login", "/auth", f"/projects/{vid}/samples",
                                                      f"/projects/{vid}/samples/orders"]  # fmt: skip
    assert control.log(target="download", since=seq) == []


async def test_a_legacy_app_mirrors_its_members_with_an_api_key(
    legacy: Legacy, journal: Journal, tmp_path: Path
) -> None:
    aid, samples = legacy.view("apps"), legacy.finished(2)
    source = legacy.source(aid, "legacy-apps", "key")
    root, control = tmp_path / "mirror", legacy.sandbox.control
    seq = control.last_log_seq()
    async with MirrorLoop(legacy.config(source), journal, "unused") as loop:
        first = await loop.cycle(source)
        assert first.ok and first.count("done") == 2
        assert assert_mirrored(root, samples, APP_TYPES) == first.downloaded == 4  # no FASTQ, no traits for apps
        assert not list(root.rglob("*fastq*")) and not list(root.rglob("*_traits.json"))
        calls = _calls(legacy, seq)
        assert calls[:2] == [("GET", "/welcome-api-key", 200), ("GET", f"/apps/{aid}/members", 200)]
        orders = sorted(p for _, p, _ in calls if p.endswith("/order"))  # no bulk status call for apps
        assert orders == sorted(f"/apps/{aid}/members/{legacy_id(s['id'])}/order" for s in samples)
        assert {e["extra"].get("auth") for e in legacy.api_log(seq)} == {"GENCOVE-API-KEY"}

        seq = control.last_log_seq()
        again = await loop.cycle(source)
        assert again.ok and again.samples == ()
        assert [(e["target"], e["path"]) for e in control.log(since=seq)] == [("api", f"/apps/{aid}/members")]


async def test_colliding_external_ids_land_in_distinct_paths(legacy: Legacy, journal: Journal, tmp_path: Path) -> None:
    vid, samples = legacy.view("projects"), legacy.finished(2)
    legacy.same_external_id(samples, "TWIN")
    source = legacy.source(vid)
    async with MirrorLoop(legacy.config(source), journal, "unused") as loop:
        report = await loop.cycle(source)
    assert report.ok and report.count("done") == 2
    assert assert_mirrored(tmp_path / "mirror", samples, ALL) == 8
    assert sorted(p.name for p in (tmp_path / "mirror" / "TWIN").iterdir()) == sorted(
        str(legacy_id(s["id"])) for s in samples
    )


@pytest.mark.parametrize("file_types", [(), ("fastq-r1", "vcf")], ids=["with-traits", "files-only"])
async def test_a_template_without_gencove_id_reports_the_collision_and_overwrites_nothing(
    legacy: Legacy, journal: Journal, tmp_path: Path, file_types: tuple[str, ...]
) -> None:
    vid, samples = legacy.view("projects"), legacy.finished(2)
    legacy.same_external_id(samples, "TWIN")
    source = legacy.source(vid)
    config = legacy.config(source, template="{client_id}/{file_type}.{file_extension}", file_types=file_types)
    twin = tmp_path / "mirror" / "TWIN"
    async with MirrorLoop(config, journal, "unused") as loop:
        report = await loop.cycle(source)
        assert not report.ok and report.failures
        assert all("collides" in (r.error or "") for r in report.failures), [r.error for r in report.failures]
        placed = {p: p.stat().st_mtime_ns for p in twin.iterdir()}
        assert (await loop.cycle(source)).failures  # still reported, still nothing overwritten
    assert {p: p.stat().st_mtime_ns for p in twin.iterdir()} == placed

    owners = journal.call(lambda c: {r[0]: (r[1], r[2]) for r in c.execute(
        "SELECT dest_path, sample_id, file_type FROM downloads WHERE state = 'done'")})  # fmt: skip
    by_lid = {str(legacy_id(s["id"])): s for s in samples}
    v2_type = {v: k for k, v in LEGACY_TYPES.items()}
    for path, (sample_id, file_type) in owners.items():  # each placed file is whole, and its owner's
        f = next(f for f in by_lid[sample_id]["files"] if f["file_type"] == v2_type[file_type])
        assert sha256_file(path) == f["checksum_sha256"], path
    deliverables = {p for p in placed if not p.name.endswith(".json")}
    assert {Path(p) for p in owners} == deliverables and len(deliverables) == (len(file_types) or 4)
    for traits in (p for p in placed if p.name.endswith(".json")):
        assert json.loads(traits.read_text())["gencove_id"] in by_lid


async def test_an_expired_url_is_refreshed_by_a_raw_data_call_for_that_sample_only(
    legacy: Legacy, journal: Journal, tmp_path: Path
) -> None:
    vid, samples = legacy.view("projects"), legacy.finished(2)
    source, control = legacy.source(vid), legacy.sandbox.control
    control.add_fault(url_ttl=-60, times=1)  # the next raw-data call hands out expired URLs
    seq = control.last_log_seq()
    async with MirrorLoop(legacy.config(source), journal, "unused") as loop:
        report = await loop.cycle(source)
    assert report.ok and report.downloaded == 8, [r.error for r in report.failures]
    assert_mirrored(tmp_path / "mirror", samples, ALL)
    raw = [e["extra"]["ids"] for e in legacy.api_log(seq) if e["path"].endswith("/raw-data")]
    assert len(raw) == 3 and all(ids.isdigit() for ids in raw)  # every call names one sample
    (refreshed,) = [ids for ids in set(raw) if raw.count(ids) == 2]
    sample = next(s for s in samples if str(legacy_id(s["id"])) == refreshed)
    refused = [e for e in control.log(target="download", since=seq) if e["status"] == 403]
    assert refused and {e["file_id"] for e in refused} <= {f["id"] for f in sample["files"]}


async def test_a_url_expiring_before_its_download_is_refreshed_through_the_loop(
    legacy: Legacy, journal: Journal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vid, (sample,) = legacy.view("projects"), legacy.finished(1, r2_size=0)
    source, control = legacy.source(vid), legacy.sandbox.control
    real, fetched = LegacyPlatform.sample, []

    async def slow_first(self: LegacyPlatform, sample_id: str) -> Any:
        detail = await real(self, sample_id)
        fetched.append(sample_id)
        if len(fetched) == 1:
            await asyncio.sleep(2.5)  # time passes: the 2 s URLs expire after their probe, before their download
        return detail

    monkeypatch.setattr(LegacyPlatform, "sample", slow_first)
    control.add_fault(url_ttl=2, times=1)
    seq = control.last_log_seq()
    async with MirrorLoop(legacy.config(source), journal, "unused") as loop:
        report = await loop.cycle(source)
    assert report.ok and report.downloaded == 3
    assert_mirrored(tmp_path / "mirror", [sample], ALL)
    lid = str(legacy_id(sample["id"]))
    assert fetched == [lid, lid]  # one refresh for all three files
    assert [e["extra"]["ids"] for e in legacy.api_log(seq) if e["path"].endswith("/raw-data")] == [lid, lid]
    assert {e["status"] for e in _full_downloads(legacy, seq)} == {200, 403}


async def test_a_refused_jwt_is_renewed_once_and_a_lost_refresh_token_means_a_new_login(
    legacy: Legacy, journal: Journal
) -> None:
    vid = legacy.view("projects")
    legacy.finished(1)
    source, control = legacy.source(vid), legacy.sandbox.control
    listing = f"/projects/{vid}/samples"
    async with MirrorLoop(legacy.config(source), journal, "unused") as loop:
        assert (await loop.cycle(source)).ok
        control.api("POST", "/_sandbox/legacy", {"rotate": True})
        seq = control.last_log_seq()
        assert (await loop.cycle(source)).ok
        assert _calls(legacy, seq) == [("GET", listing, 401), ("POST", "/auth", 200), ("GET", listing, 200)]
        control.api("POST", "/_sandbox/legacy", {"rotate": True, "logout": True})
        seq = control.last_log_seq()
        assert (await loop.cycle(source)).ok
        assert _calls(legacy, seq) == [("GET", listing, 401), ("POST", "/auth", 401), ("POST", "/login", 200),
                                       ("POST", "/auth", 200), ("GET", listing, 200)]  # fmt: skip


async def test_an_interrupted_download_resumes_with_range_and_is_verified_by_size(
    legacy: Legacy, journal: Journal, tmp_path: Path
) -> None:
    vid, (sample,) = legacy.view("projects"), legacy.finished(1, r1_size=3_000_000, r2_size=0)
    source, control = legacy.source(vid), legacy.sandbox.control
    r1 = next(f for f in sample["files"] if f["file_type"] == "fastq-r1")
    # times=2: the one-byte size probe uses one (and is not cut), the download the other. The cut comes late:
    # aiohttp drops what it buffered but had not handed over when the connection breaks, so an early cut can
    # leave the client nothing to resume from.
    control.add_fault(target="download", file_id=r1["id"], reset_after_bytes=2_000_000, times=2)
    seq = control.last_log_seq()
    async with MirrorLoop(legacy.config(source), journal, "unused") as loop:
        report = await loop.cycle(source)
    assert report.ok and report.downloaded == 3
    assert_mirrored(tmp_path / "mirror", [sample], ALL)
    ranges = [e["range"] for e in control.log(target="download", since=seq) if e["file_id"] == r1["id"]]
    assert ranges[0] == "bytes=0-0" and ranges[1] is None and ranges[2].startswith("bytes=")
    assert int(ranges[2].removeprefix("bytes=").rstrip("-")) > 0  # continued after the bytes it had
    rows = journal.call(lambda c: [tuple(r) for r in c.execute("SELECT verified, size FROM downloads")])
    assert {v for v, _ in rows} == {"size"} and 3_000_000 in {s for _, s in rows}
