"""Never ready: a growing file, a run without its marker, a truncated or empty gzip, a client_id collision."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from transferd.discovery.models import Run, Sample
from transferd.discovery.rules import DiscoveryRules
from transferd.discovery.scanner import scan_root
from transferd.discovery.stability import StabilityTracker

SETTLE = 60.0
RULES = DiscoveryRules(settle_seconds=SETTLE)


def sample(runs: list[Run], client_id: str) -> Sample:
    return next(s for r in runs for s in r.samples if s.client_id == client_id)


def test_growing_file_is_not_ready_until_it_settles(layouts, files) -> None:
    run = layouts.bclconvert()
    growing = run / "S1_S1_L001_R1_001.fastq.gz"
    tracker = StabilityTracker()
    t0 = time.time()
    # Scan 1: files just written -> not settled (single-scan and daemon mode alike).
    assert not sample(scan_root(layouts.root, RULES, t0), "S1").ready
    assert not sample(scan_root(layouts.root, RULES, t0, tracker), "S1").ready
    # Unchanged since the tracker first saw it, settle_seconds ago: settled.
    assert sample(scan_root(layouts.root, RULES, t0 + 2 * SETTLE, tracker), "S1").ready
    # The file grows between scans: observation restarts from the change.
    with open(growing, "ab") as fh:
        fh.write(b"\x1f\x8b")
    changed_at = t0 + 3 * SETTLE
    s1 = sample(scan_root(layouts.root, RULES, changed_at, tracker), "S1")
    assert not s1.ready and any("not settled" in p for p in s1.problems)
    assert s1.settling  # a reason to wait, not a failure to report
    s1 = sample(scan_root(layouts.root, RULES, changed_at + SETTLE - 1, tracker), "S1")
    assert not s1.ready
    # Settled now, but it is no longer a whole gzip stream (two stray bytes at the end).
    s1 = sample(scan_root(layouts.root, RULES, changed_at + SETTLE, tracker), "S1")
    assert not s1.ready and any("trailing garbage" in p or "truncated" in p for p in s1.problems), s1.problems
    assert not s1.settling  # waiting will not cure this one: it is reported
    # Rewritten whole: a new version, observed anew, then ready.
    files.write_fastq(growing, seed=5)
    later = changed_at + 10 * SETTLE
    assert not sample(scan_root(layouts.root, RULES, later, tracker), "S1").ready
    assert sample(scan_root(layouts.root, RULES, later + SETTLE, tracker), "S1").ready


def test_tracker_sees_unchanged_files_as_settled(layouts) -> None:
    layouts.plain()
    tracker = StabilityTracker()
    t = time.time() + 3600  # mtimes are an hour old
    first = scan_root(layouts.root, RULES, t, tracker)
    assert not any(s.ready for s in first[0].samples)  # seen once: not yet observed for settle_seconds
    second = scan_root(layouts.root, RULES, t + SETTLE, tracker)
    assert all(s.ready for s in second[0].samples)


@pytest.mark.parametrize(
    ("build", "remove", "waiting_for"),
    [
        ("bclconvert", "Logs/FastqComplete.txt", "Logs/FastqComplete.txt"),
        ("novaseqx", "Analysis/1/Data/Secondary_Analysis_Complete.txt", "Secondary_Analysis_Complete.txt"),
        ("novaseqx", "Analysis/1/CopyComplete.txt", "Analysis/1/CopyComplete.txt"),
        ("miseq", "RTAComplete.txt", "RTAComplete.txt"),
    ],
)
def test_run_without_its_marker_is_never_ready(layouts, later: float, build: str, remove: str, waiting_for: str):
    run_dir = getattr(layouts, build)()
    (run_dir / remove).unlink()
    runs = scan_root(layouts.root, RULES, later + 10**6)
    [run] = runs
    assert not run.complete and any(waiting_for in r for r in run.reasons), run.reasons
    assert run.samples and not any(s.ready for s in run.samples)


def test_custom_markers_and_quiet_mode(layouts, files, later: float) -> None:
    run_dir = layouts.bclconvert()
    custom = DiscoveryRules(markers=("DONE",))
    [run] = scan_root(layouts.root, custom, later)
    assert not run.complete and run.reasons == ("waiting for DONE",)
    files.touch(run_dir / "DONE")
    assert scan_root(layouts.root, custom, later)[0].complete
    (run_dir / "Logs" / "FastqComplete.txt").unlink()
    assert scan_root(layouts.root, DiscoveryRules(completion="quiet"), later)[0].complete


@pytest.mark.parametrize(
    ("kind", "expect"),
    [
        ("truncated", "truncated"),
        ("bgzf-truncated", "BGZF EOF block"),
        ("empty", "empty file"),
        ("plain", "not gzip-compressed"),
    ],
)
@pytest.mark.parametrize("tracked", [False, True])
def test_bad_gzip_is_never_ready(layouts, files, later: float, kind: str, expect: str, tracked: bool) -> None:
    run_dir = layouts.bclconvert()
    files.write_fastq(run_dir / "S1_S1_L002_R2_002.fastq.gz", kind)
    tracker = StabilityTracker() if tracked else None
    for now in (later, later + SETTLE) if tracked else (later,):
        runs = scan_root(layouts.root, RULES, now, tracker)
    s1 = sample(runs, "S1")
    assert not s1.ready
    assert any(p.startswith("S1_S1_L002_R2_002.fastq.gz:") and expect in p for p in s1.problems), s1.problems
    assert sample(runs, "my-sample-R1-x").ready  # other samples are not held back


def test_gzip_check_is_memoised_per_version(layouts, later: float) -> None:
    layouts.bclconvert()
    tracker = StabilityTracker()
    scan_root(layouts.root, RULES, later, tracker)
    scan_root(layouts.root, RULES, later + SETTLE, tracker)
    checked = tracker.gzip_checks_run
    assert checked == 8 + 2  # S1: 2 lanes x 2 chunks x R1/R2; my_sample: R1 + R2
    scan_root(layouts.root, RULES, later + 2 * SETTLE, tracker)
    assert tracker.gzip_checks_run == checked


def test_client_id_collision_fails_both(tmp_path: Path, files, later: float) -> None:
    root = tmp_path / "root"
    files.illumina_files(root / "run" / "P1", "A_B", 1)
    files.illumina_files(root / "run" / "P2", "A-B", 2)
    files.illumina_files(root / "run" / "P2", "C", 3)
    [run] = scan_root(root, RULES, later)
    collided = [s for s in run.samples if s.client_id == "A-B"]
    assert len(collided) == 2 and not any(s.ready for s in collided)
    assert all(any("neither is uploaded" in p for p in s.problems) for s in collided)
    assert sample([run], "C").ready
    [run] = scan_root(root, DiscoveryRules(client_id_policy="reject"), later)
    a_b = next(s for s in run.samples if s.sample_name == "A_B")
    assert not a_b.ready and any("client_id_policy = reject" in p for p in a_b.problems)


def test_ora_and_uncompressed_are_never_uploaded(tmp_path: Path, files, later: float) -> None:
    root = tmp_path / "root"
    files.illumina_files(root / "run", "ora", 1, ext="fastq.ora", kind="ora")
    files.illumina_files(root / "run", "raw", 2, ext="fastq", kind="plain")
    [run] = scan_root(root, RULES, later)
    for s in run.samples:
        assert not s.ready and any("not gzip" in p for p in s.problems)


def test_tracker_is_bounded(layouts, later: float) -> None:
    layouts.bclconvert("a")  # 23 FASTQ files
    layouts.plain("b")  # 8 FASTQ files
    tracker = StabilityTracker(max_files=40)
    scan_root(layouts.root, RULES, later, tracker)
    assert (tracker.unit_count, len(tracker)) == (2, 31)
    tracker = StabilityTracker(max_files=30)
    scan_root(layouts.root, RULES, later, tracker)
    assert (tracker.unit_count, len(tracker)) == (1, 8)  # the least recently scanned run was evicted
    tracker = StabilityTracker()
    scan_root(layouts.root, RULES, later, tracker)
    os.rename(layouts.root / "b", layouts.root / ".gone")  # a run folder that disappears is dropped
    scan_root(layouts.root, RULES, later, tracker)
    assert (tracker.unit_count, len(tracker)) == (1, 23)


def test_forget_drops_a_handed_off_run_until_it_changes(layouts, files, later: float) -> None:
    run_a = layouts.bclconvert("a")
    layouts.plain("b")
    tracker = StabilityTracker()
    assert [r.name for r in scan_root(layouts.root, RULES, later, tracker)] == ["a", "b"]
    tracker.forget(run_a)
    assert (tracker.unit_count, len(tracker), tracker.forgotten_count) == (1, 8, 1)
    for _ in range(2):  # left out while unchanged, and nothing about it is remembered again
        assert [r.name for r in scan_root(layouts.root, RULES, later, tracker)] == ["b"]
        assert len(tracker) == 8
    files.write_fastq(run_a / "S1_S1_L001_R1_001.fastq.gz", seed=9)  # changed after the hand-off
    assert [r.name for r in scan_root(layouts.root, RULES, later, tracker)] == ["a", "b"]
    assert tracker.forgotten_count == 0


def test_forget_one_analysis_keeps_the_others_and_new_ones(layouts, later: float) -> None:
    run_dir = layouts.novaseqx(analyses={1: True, 2: True})
    tracker = StabilityTracker()
    scan_root(layouts.root, RULES, later, tracker)
    tracker.forget(run_dir, "1")
    assert [r.analysis for r in scan_root(layouts.root, RULES, later, tracker)] == ["2"]
    layouts.novaseqx(analyses={3: False})  # a requeue after the hand-off is a new delivery
    assert [r.analysis for r in scan_root(layouts.root, RULES, later, tracker)] == ["2", "3"]


def test_unchanged_run_reuses_its_grouping_but_not_its_verdicts(layouts, files, later: float) -> None:
    run_dir = layouts.bclconvert(complete=False)
    rules = DiscoveryRules(settle_seconds=SETTLE, markers=("DONE",))  # a marker the listing does not notice
    tracker = StabilityTracker()
    first = scan_root(layouts.root, rules, later, tracker)[0]
    second = scan_root(layouts.root, rules, later + SETTLE, tracker)[0]
    assert first.samples[0].r1[0] is second.samples[0].r1[0]  # the remembered grouping was reused
    assert not second.complete and not any(s.ready for s in second.samples)
    files.touch(run_dir / "DONE")
    third = scan_root(layouts.root, rules, later + SETTLE, tracker)[0]
    assert third.samples[0].r1[0] is first.samples[0].r1[0]
    assert third.complete and all(s.ready for s in third.samples)  # completion and readiness are re-judged


def test_unreadable_file_is_not_ready_and_checked_again_next_scan(layouts, later: float, monkeypatch) -> None:
    """An I/O error (EACCES) says nothing about the content: never memoised, by the tracker or the run memo."""
    from transferd.discovery import readiness
    from transferd.discovery.gzipcheck import check_gzip_file

    layouts.bclconvert()
    tracker = StabilityTracker()
    locked = True

    def check(path: Path) -> str | None:
        if locked and path.name.startswith("S1_") and "_R2_" in path.name:
            return "cannot read: Permission denied"
        return check_gzip_file(path)

    monkeypatch.setattr(readiness, "check_gzip_file", check)
    scan_root(layouts.root, RULES, later, tracker)
    runs = scan_root(layouts.root, RULES, later + SETTLE, tracker)
    s = sample(runs, "S1")
    assert not s.ready and not s.settling and any("Permission denied" in p for p in s.problems)
    runs = scan_root(layouts.root, RULES, later + 2 * SETTLE, tracker)
    assert not sample(runs, "S1").ready
    locked = False  # the permissions are fixed: no file version changed
    runs = scan_root(layouts.root, RULES, later + 3 * SETTLE, tracker)
    assert sample(runs, "S1").ready
