"""The soak's verdict: what the sandbox, S3 and the download disk hold, judged against what was written.

Every judgement names the sample (run, client_id, gncv path) so a failure can be looked up in the daemon log.
Categories (each must be 0 for a pass):

- lost: a complete sample ("go") that is not uploaded, not assigned, not analysed or not mirrored by the end.
- duplicated: an upload named in more than one assignment request (sandbox `attempts` > 1), a sample created
  twice for one upload, or one S3 object completed from two different multipart uploads (sent twice).
- corrupted: an object whose sha256 differs from the concatenation of its sources, a mirrored file that differs
  from the sandbox's checksum, a final-named local file that does not verify, a sample paired with the wrong R2.
- forbidden: any upload (even a started one) for a sample or run that must never go, or for a path nobody
  expected (Undetermined, index reads, ...).
- leaks: a secret found verbatim in a log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak_data import RunPlan, SampleExpect


@dataclass(slots=True)
class Observed:
    """Accumulated from the sandbox's request log while the soak runs (the log itself is bounded)."""

    last_seq: int = 0
    missed: int = 0  # log entries dropped before we read them (sequence gaps)
    completes: dict[str, set[str]] = field(default_factory=dict)  # S3 key -> multipart upload ids completed (200)
    puts: Counter[str] = field(default_factory=Counter)  # S3 key -> successful PutObject
    parts_seen: set[str] = field(default_factory=set)  # S3 keys with at least one UploadPart request
    fired: Counter[str] = field(default_factory=Counter)  # "<target>: <fault description>" -> requests affected
    s3_bytes_in: int = 0
    download_bytes: int = 0
    download_sigs: set[str] = field(default_factory=set)
    requests: Counter[str] = field(default_factory=Counter)

    def feed(self, entries: Iterable[dict[str, Any]]) -> None:
        for e in entries:
            seq = int(e["seq"])
            if self.last_seq and seq > self.last_seq + 1:
                self.missed += seq - self.last_seq - 1
            self.last_seq = max(self.last_seq, seq)
            target = e.get("target") or "?"
            self.requests[target] += 1
            if e.get("fault"):
                self.fired[f"{target}: {_fault_kind(str(e['fault']))}"] += 1
            if target == "s3":
                self.s3_bytes_in += int(e.get("bytes_in") or 0)
                op, key, status = e.get("operation"), e.get("key"), int(e.get("status") or 0)
                if op == "UploadPart" and key:
                    self.parts_seen.add(key)
                if status == 200 and key and op == "CompleteMultipartUpload":
                    self.completes.setdefault(key, set()).add(str(e.get("upload_id")))
                elif status == 200 and key and op == "PutObject":
                    self.puts[key] += 1
            elif target == "download":
                self.download_bytes += int(e.get("bytes_out") or 0)
                sig = (e.get("query") or {}).get("sig")
                if sig:
                    self.download_sigs.add(sig)


def _fault_kind(description: str) -> str:
    # "latency 0.5s, status 503 SlowDown" -> "latency, status 503 SlowDown"; keeps the kinds countable
    parts = []
    for p in description.split(", "):
        parts.append("latency" if p.startswith("latency") else "reset after bytes" if p.startswith("reset after")
                     else p)  # fmt: skip
    return ", ".join(parts)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(slots=True)
class Verdict:
    lost: list[str] = field(default_factory=list)
    lost_items: list[tuple[RunPlan, SampleExpect, str]] = field(default_factory=list)
    known_bug_losses: list[str] = field(default_factory=list)  # lost, and attributed to a documented bug
    known_bug_duplicates: list[str] = field(default_factory=list)
    assign_repeats: dict[str, int] = field(default_factory=dict)  # gncv path -> assignment requests (> 1)
    not_mirrored: list[str] = field(default_factory=list)  # included in lost
    duplicated: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    part_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verified_samples: int = 0
    verified_bytes: int = 0
    mirrored_files: int = 0
    mirrored_bytes: int = 0
    maybe_outcomes: Counter[str] = field(default_factory=Counter)
    never_outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.corrupted or self.forbidden or self.leaks or self.part_files)


def _status(obj: dict[str, Any]) -> str:
    return str((obj.get("last_status") or {}).get("status") or "")


RESULTS_MARKER = ".transferd-destination"  # the [download] marker the soak puts in the results share


def judge(
    plans: list[RunPlan],
    uploads: list[dict[str, Any]],
    assignments: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    observed: Observed,
    results: Path,
    fetch_object: Callable[[str, str], str | None],
) -> Verdict:
    """`fetch_object(bucket, key)` -> sha256 hex of an S3 object (None if absent), read from the real S3 server."""
    v = Verdict()
    by_path = {u["destination_path"]: u for u in uploads}
    sample_by_id = {s["id"]: s for s in samples}
    samples_of_upload: dict[str, list[str]] = {}
    for s in samples:
        for uid in (s.get("r1_upload"), s.get("r2_upload")):
            if uid:
                samples_of_upload.setdefault(uid, []).append(s["id"])

    expected: dict[str, SampleExpect] = {}
    for plan in plans:
        for s in plan.samples:
            for p in s.paths():
                expected[p] = s

    # -- exactly once ---------------------------------------------------------------------------------------------
    for a in assignments:
        if int(a.get("attempts") or 0) > 1:
            v.duplicated.append(f"{a.get('destination_path')}: named in {a['attempts']} assignment requests")
            v.assign_repeats[str(a.get("destination_path"))] = int(a["attempts"])
    for uid, sids in samples_of_upload.items():
        if len(sids) > 1:
            v.duplicated.append(f"upload {uid}: assigned to {len(sids)} samples {sids}")
    for u in uploads:
        key = (u.get("s3") or {}).get("object_name")
        n = len(observed.completes.get(key, ())) + observed.puts.get(key, 0)
        if n > 1:
            v.duplicated.append(f"{u['destination_path']}: the object was uploaded {n} times (s3 key {key})")

    # -- nothing that must not go ---------------------------------------------------------------------------------
    never_prefixes = [(p.gncv_folder.rsplit("/" + p.analysis, 1)[0] if p.analysis else p.gncv_folder) + "/"
                      for p in plans if p.never_folder]  # fmt: skip
    for path, u in by_path.items():
        exp = expected.get(path)
        prefix = next((x for x in never_prefixes if path.startswith(x)), None)
        if exp is not None and exp.expect == "never":
            v.forbidden.append(f"{path}: must never be uploaded ({exp.reason}); upload {_status(u)}")
        elif prefix is not None:
            v.forbidden.append(f"{path}: belongs to a run that must never go ({prefix}); upload {_status(u)}")
        elif exp is None:
            v.forbidden.append(f"{path}: uploaded, but no sample of that name was ever written ({_status(u)})")

    # -- every sample that must go ----------------------------------------------------------------------------------
    def lose(plan: RunPlan, s: SampleExpect, msg: str) -> None:
        v.lost.append(msg)
        v.lost_items.append((plan, s, msg))

    for plan in plans:
        for s in plan.samples:
            label = f"{s.dest_r1} [{plan.kind}]"
            if s.expect == "never":
                v.never_outcomes["not uploaded" if s.dest_r1 not in by_path else "UPLOADED"] += 1
                continue
            u1 = by_path.get(s.dest_r1)
            u2 = by_path.get(s.dest_r2) if s.dest_r2 else None
            assigned = u1 is not None and u1.get("sample_id")
            if s.expect == "maybe":
                if not assigned:
                    v.maybe_outcomes["not assigned (failed cleanly)"] += 1
                    for u, sha, read in ((u1, s.sha_r1, "R1"), (u2, s.sha_r2, "R2")):
                        if u is not None and _status(u) == "succeeded":
                            got = fetch_object(u["s3"]["bucket"], u["s3"]["object_name"])
                            if got is not None and got != sha and not (read == "R1" and s.r1_ok(got)):
                                v.notes.append(f"{label}: an unassigned {read} upload holds other bytes than the "
                                               "sources (left unassigned: harmless)")  # fmt: skip
                    continue
                v.maybe_outcomes["assigned before the deletion"] += 1
            if u1 is None or _status(u1) != "succeeded":
                lose(plan, s, f"{label}: R1 not uploaded ({_status(u1) if u1 else 'no upload'})")
                continue
            if s.dest_r2 and (u2 is None or _status(u2) != "succeeded"):
                lose(plan, s, f"{label}: R2 not uploaded ({_status(u2) if u2 else 'no upload'})")
                continue
            if not assigned:
                lose(plan, s, f"{label}: uploaded but never assigned")
                continue
            sample = sample_by_id.get(u1["sample_id"])
            if sample is None:
                lose(plan, s, f"{label}: assigned to sample {u1['sample_id']}, which the project does not list")
                continue
            if s.dest_r2 and sample.get("r2_upload") != (u2 or {}).get("id"):
                v.corrupted.append(f"{label}: paired with upload {sample.get('r2_upload')}, not {(u2 or {}).get('id')}")
                continue
            files = {f["file_type"]: f for f in sample.get("files") or []}
            status = _status(sample)
            if not status.startswith("succeeded") or "fastq-r1" not in files:
                # The analysis did not finish: judge the objects in S3 directly.
                for u, sha, read in ((u1, s.sha_r1, "R1"), (u2, s.sha_r2, "R2")):
                    if u is None:
                        continue
                    got = fetch_object(u["s3"]["bucket"], u["s3"]["object_name"])
                    if got != sha and not (read == "R1" and s.r1_ok(got)):
                        v.corrupted.append(f"{label}: {read} object in S3 differs from the sources")
                lose(plan, s, f"{label}: sample {sample['id']} is {status!r}, never analysed/mirrored")
                continue
            bad = False
            for ftype, sha in (("fastq-r1", s.sha_r1), ("fastq-r2", s.sha_r2)):
                if sha is None:
                    continue
                f = files.get(ftype)
                got = f.get("checksum_sha256") if f else None
                if got != sha and not (ftype == "fastq-r1" and s.r1_ok(got)):
                    v.corrupted.append(f"{label}: {ftype} on Gencove differs from the concatenated sources")
                    bad = True
            # deliverables mirrored byte-identical
            folder = results / str(sample["client_id"]) / str(sample["id"])
            for f in sample.get("files") or []:
                local = folder / f["filename"]
                if not local.is_file():
                    v.not_mirrored.append(f"{label}: {local} missing")
                    v.lost_items.append((plan, s, f"{label}: {local} missing"))
                    bad = True
                    continue
                digest = sha256_file(local)
                if digest != f["checksum_sha256"]:
                    v.corrupted.append(f"{label}: mirrored {local} differs from the sandbox's checksum")
                    bad = True
                else:
                    v.mirrored_files += 1
                    v.mirrored_bytes += local.stat().st_size
            if not bad:
                v.verified_samples += 1
                v.verified_bytes += s.size
    v.lost += v.not_mirrored

    # -- the download disk: no partial file under a final name ---------------------------------------------------
    known: dict[Path, str] = {}
    for sample in samples:
        for f in sample.get("files") or []:
            known[results / str(sample["client_id"]) / str(sample["id"]) / f["filename"]] = f["checksum_sha256"]
    if results.is_dir():
        for dirpath, _dirs, names in os.walk(results):
            for name in names:
                p = Path(dirpath) / name
                if name.endswith(".part"):
                    v.part_files.append(f"{p}: a .part left with no download in progress")
                    continue
                want = known.get(p)
                if want is None and p == results / RESULTS_MARKER:
                    continue  # the share's marker ([download] marker), put there by the soak
                if want is None:
                    v.corrupted.append(f"{p}: a final-named file that is no deliverable of any sample")
                elif p.stat().st_size and sha256_file(p) != want:
                    v.corrupted.append(f"{p}: final-named file does not verify")  # also counted above if expected
    v.corrupted = list(dict.fromkeys(v.corrupted))
    if observed.missed:
        v.notes.append(f"{observed.missed} sandbox log entries were dropped before the soak read them; "
                       "duplicate-upload detection may have missed some")  # fmt: skip
    return v


def find_leaks(secrets: dict[str, list[str]], files: Iterable[Path]) -> list[str]:
    """`secrets`: category -> values. Returns '<file>: <category> (<first 4 chars>...)' per value found."""
    out = []
    texts = {}
    for f in files:
        try:
            texts[f] = f.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue
    for category, values in secrets.items():
        for value in values:
            if not value or len(value) < 8:
                continue
            for f, text in texts.items():
                if value in text:
                    out.append(f"{f.name}: {category} ({value[:4]}..., {text.count(value)} times)")
    return out


# -- losses caused by bugs that are documented (and reproduced by an xfail test) --------------------------------
KNOWN_BUGS = {
    "unreadable-fixed": "discovery/stability.py memoises 'cannot read: Permission denied' per file version; the "
    "file fixed later is never uploaded (tests/soak/test_soak_regressions.py::"
    "test_unreadable_fastq_fixed_later_is_uploaded)",
    "root-away": "upload/engine.py fails an object for good (SourceGone) when its watch root is away during the "
    "upload (tests/soak/test_soak_regressions.py::test_watch_root_away_during_upload_does_not_lose_the_sample)",
    "assign-in-flight": "upload/assign.py re-POSTs a `requested` assignment right after a restart while the first "
    "POST is still being processed (tests/soak/test_soak_regressions.py::"
    "test_crash_while_assignment_post_in_flight_does_not_post_twice)",
    "assign-400-other": "upload/assign.py _after_400 fails the last sample of a refused batch with the error about "
    "another sample of the batch (tests/soak/test_soak_regressions.py::"
    "test_batch_refused_for_one_already_assigned_sample_does_not_fail_the_other)",
    "root-manifests-share-a-run": "root-level manifests of one watch root share one journal run (path = the root): "
    "a client_id an earlier one used is never uploaded (tests/soak/test_soak_regressions.py::"
    "test_two_root_level_manifests_with_the_same_client_id_both_upload)",
    "sigterm-waits-for-scan": "service/daemon.py: a graceful stop waits (asyncio.run's executor shutdown) for a "
    "discovery scan running in a worker thread, unbounded by shutdown_grace (tests/soak/test_soak_regressions.py::"
    "test_a_fifo_named_like_a_fastq_does_not_hang_discovery_or_shutdown shows the unbounded case)",
}
_SAMPLE = re.compile(r'\bsample=("(?:[^"\\]|\\.)*"|\S+)')


def assigned_at(log_text: str) -> dict[str, list[tuple[float, bool]]]:
    """"<gncv folder>/<client_id>" -> [(unix time, recovered)] of every `assign.sample_assigned` event."""
    from datetime import UTC, datetime

    out: dict[str, list[tuple[float, bool]]] = {}
    for line in log_text.splitlines():
        if "event=assign.sample_assigned" not in line:
            continue
        ts, sample = _TS.search(line), _SAMPLE.search(line)
        if ts and sample:
            when = datetime.strptime(ts.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
            out.setdefault(_kv(sample.group(1)), []).append((when, "recovered=true" in line))
    return out
_TS = re.compile(r"^ts=(\S+) ")
_OBJ = re.compile(r'\bobject=("(?:[^"\\]|\\.)*"|\S+)')
_ERR = re.compile(r'\berror=("(?:[^"\\]|\\.)*"|\S+)')


def _kv(value: str) -> str:
    return json.loads(value) if value.startswith('"') else value


def failed_objects(log_text: str) -> dict[str, list[tuple[float, str]]]:
    """gncv path -> [(unix time, error)] of every `upload.object_failed` event in a kv-format daemon log."""
    from datetime import UTC, datetime

    out: dict[str, list[tuple[float, str]]] = {}
    for line in log_text.splitlines():
        if "event=upload.object_failed" not in line:
            continue
        ts, obj, err = _TS.search(line), _OBJ.search(line), _ERR.search(line)
        if not (ts and obj):
            continue
        when = datetime.strptime(ts.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        out.setdefault(_kv(obj.group(1)), []).append((when, _kv(err.group(1)) if err else ""))
    return out


def journal_samples(journal: Path, with_updated: bool = False) -> dict[tuple[str, str], Any]:
    """(gncv folder, client_id) -> (state, error[, updated]) from the daemon's journal (read-only)."""
    out: dict[tuple[str, str], Any] = {}
    try:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT folder, client_id, state, error, updated FROM samples")
            for folder, client_id, state, error, updated in rows:
                out[(folder, client_id)] = (state, error or "", updated) if with_updated else (state, error or "")
        finally:
            conn.close()
    except sqlite3.Error:
        pass
    return out


def attribute_known_bugs(
    v: Verdict,
    log_text: str,
    journal: dict[tuple[str, str], tuple[str, str]],
    away: list[tuple[int, float, float]],
    inflight_kills: list[float] = (),  # type: ignore[assignment]
    upload_ids: dict[str, str] | None = None,  # gncv path -> Gencove upload id
    plans: list[RunPlan] = (),  # type: ignore[assignment]
) -> None:
    """Move losses that carry the fingerprint of a documented bug from `lost` to `known_bug_losses`.

    `away`: (root index, from, to) unix times of the watch roots renamed away. A loss is attributed only on
    evidence: the journal's error for the unreadable case, an `upload.object_failed ... SourceGone` logged while
    (or just after) the sample's root was away for the other."""
    failures = failed_objects(log_text)
    keep: list[tuple[RunPlan, SampleExpect, str]] = []
    for plan, s, msg in v.lost_items:
        state, error = journal.get((plan.gncv_folder, s.client_id), ("", ""))
        bug = None
        own = {(upload_ids or {}).get(p) for p in s.paths()} - {None}
        named = set(re.findall(r"Upload ([0-9a-f-]{36}) is already assigned", error))
        if plan.kind == "unreadable" and state == "failed" and "Permission denied" in error:
            bug = "unreadable-fixed"
        elif state == "failed" and named and own and not named & own:
            bug = "assign-400-other"
        elif plan.kind == "root_manifest" and not state and any(
            p is not plan and p.kind == "root_manifest" and p.root == plan.root
            and any(o.client_id == s.client_id for o in p.samples) for p in plans
        ):  # fmt: skip
            bug = "root-manifests-share-a-run"
        else:
            for path in s.paths():
                for when, err in failures.get(path, []):
                    if "SourceGone" in err and any(r == plan.root and a - 1 <= when <= b + 5 for r, a, b in away):
                        bug = "root-away"
        if bug:
            v.known_bug_losses.append(f"{msg} -- known bug {bug}: {KNOWN_BUGS[bug]}")
        else:
            keep.append((plan, s, msg))
    v.lost_items = keep
    v.lost = [m for _, _, m in keep]
    # Two assignment requests for one upload, the second sent (not recovered) by the daemon that was started
    # right after a SIGKILL that hit while the first POST was in flight.
    assigned = assigned_at(log_text)
    for path, attempts in v.assign_repeats.items():
        sample = path.rsplit("_R", 1)[0]  # "<folder>/<client_id>" (client ids hold no "_")
        times = [t for t, _recovered in assigned.get(sample, [])]
        if attempts == 2 and any(k <= t <= k + 20 for t in times for k in inflight_kills):
            line = f"{path}: named in {attempts} assignment requests"
            if line in v.duplicated:
                v.duplicated.remove(line)
                v.known_bug_duplicates.append(f"{line} -- known bug assign-in-flight: {KNOWN_BUGS['assign-in-flight']}")


def judge_holds(plans: list[RunPlan], status_json: Path, metric: dict[str, int]) -> dict[str, Any]:
    """Every sample the driver made the daemon hold (a renamed folder, a FASTQ grown after delivery) must be
    reported: listed with its reason in `transferd status --json`, and counted by transferd_samples_held (the
    last scrape). Holds nobody expected are listed (a source rewritten just after its upload finished is one)."""
    try:
        doc = json.loads(status_json.read_text())
    except (OSError, ValueError) as e:
        return {"ok": False, "error": f"no status --json: {e}"}
    reported = {(h["sample"], h["reason"]) for h in doc.get("held", [])}
    expected = {item for p in plans for item in p.held_expect}
    by_reason = dict(doc.get("overview", {}).get("held", {}))
    missing = sorted(expected - reported)
    # The metric was last scraped before the daemon stopped: it must count at least the expected holds.
    want = Counter(r for _, r in expected)
    metric_agrees = all(metric.get(r, 0) >= n and by_reason.get(r, 0) >= n for r, n in want.items())
    return {
        "ok": not missing and metric_agrees,
        "expected": len(expected),
        "reported": len(reported),
        "missing": [f"{s} ({r})" for s, r in missing],
        "unexpected": [f"{s} ({r})" for s, r in sorted(reported - expected)],
        "status_by_reason": by_reason,
        "metric_by_reason": metric,
    }
