"""The upload side's journal queries (transferd/journal/uploads.py) and the plans they record."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from transferd.discovery.identity import content_key
from transferd.discovery.models import Run, Sample, SourceFile
from transferd.journal import Journal
from transferd.journal import holds as jh
from transferd.journal import uploads as jq
from transferd.journal.schema import MIGRATIONS
from transferd.upload import plan as plan_mod
from transferd.upload.plan import RunPlan, as_new_delivery, plan_run


def sf(name: str, size: int = 100) -> SourceFile:
    return SourceFile(Path("/data/run1") / name, size, 1_000, hash(name) & 0xFFFF)


def sample(
    client_id: str, *, ready: bool = True, problems: tuple[str, ...] = (), r2: bool = True, size: int = 100
) -> Sample:
    return Sample(
        run_path=Path("/data/run1"),
        run_name="run1",
        analysis=None,
        client_id=client_id,
        sample_name=client_id,
        r1=(sf(f"{client_id}_L001_R1.fastq.gz", size), sf(f"{client_id}_L002_R1.fastq.gz", 50)),
        r2=(sf(f"{client_id}_L001_R2.fastq.gz", size),) if r2 else (),
        ready=ready,
        problems=problems,
    )


def run(*samples: Sample, complete: bool = True, analysis: str | None = None, path: str = "/data/run1") -> Run:
    return Run(Path(path), "run1", analysis, "bcl2fastq", complete, (), tuple(samples), ())


def plan(r: Run, project: str | None = "P1", destination: str = "gncv://nova") -> RunPlan:
    p = plan_run(r, watch="/data", destination=destination, project_id=project, metadata={"lab": "x"}, now=1.0)
    assert p is not None
    return p


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    with Journal.open(tmp_path / "j.sqlite3") as j:
        yield j


def test_plan_names_objects_under_run_and_analysis() -> None:
    p = plan(run(sample("S1"), sample("S2", r2=False), analysis="2"))
    paths = [o.destination_path for s in p.samples for o in s.objects]
    assert paths == [
        "gncv://nova/run1/2/S1_R1.fastq.gz",
        "gncv://nova/run1/2/S1_R2.fastq.gz",
        "gncv://nova/run1/2/S2_R1.fastq.gz",
    ]
    assert p.samples[0].objects[0].size == 150 and p.samples[0].metadata == '{"lab": "x"}'
    assert plan_run(run(sample("S1"), complete=False), watch="w", destination="gncv://x", project_id=None,
                    metadata=None, now=0) is None  # fmt: skip


def test_plan_skips_unready_samples_and_fails_those_with_problems() -> None:
    p = plan(run(sample("S1"), sample("S2", ready=False), sample("S3", ready=False, problems=("truncated",)),
                 sample("S_4")))  # fmt: skip
    by_id = {s.client_id: s for s in p.samples}
    assert set(by_id) == {"S1", "S3", "S_4"}
    assert by_id["S3"].problems == ("truncated",) and not by_id["S3"].objects
    assert "contains '_'" in by_id["S_4"].problems[0]


def test_record_run_is_idempotent(journal: Journal) -> None:
    p = plan(run(sample("S1"), sample("S2"), sample("S3", ready=False, problems=("bad gzip",))))
    first = journal.call(jq.record_run, p)
    assert (first.new_run, first.new_samples, first.failed_samples) == (True, 3, 1)
    again = journal.call(jq.record_run, p)
    assert (again.run_id, again.new_run, again.new_samples) == (first.run_id, False, 0)
    objs = journal.call(jq.next_objects, [], 10)
    assert [o.destination_path.rsplit("/", 1)[1] for o in objs] == [
        "S1_R1.fastq.gz", "S1_R2.fastq.gz", "S2_R1.fastq.gz", "S2_R2.fastq.gz",
    ]  # fmt: skip
    assert objs[0].sources[1].size == 50 and objs[0].size == 150
    out = {s.client_id: s for s in journal.call(jq.outcomes, [first.run_id])}
    assert out["S3"].state == "failed" and out["S3"].error == "bad gzip"
    events = journal.call(lambda c: [r["message"] for r in c.execute("SELECT message FROM events")])
    assert "bad gzip" in events


def test_a_sample_failed_in_discovery_comes_back_when_ready(journal: Journal) -> None:
    journal.call(jq.record_run, plan(run(sample("S1", ready=False, problems=("still changing",)))))
    assert journal.call(jq.next_objects, [], 10) == []
    journal.call(jq.record_run, plan(run(sample("S1"))))
    assert len(journal.call(jq.next_objects, [], 10)) == 2


def test_same_destination_from_another_run_fails_that_sample(journal: Journal) -> None:
    journal.call(jq.record_run, plan(run(sample("S1"))))
    result = journal.call(jq.record_run, plan(run(sample("S1", size=101), path="/other/run1")))  # other files
    assert result.failed_samples == 1
    out = journal.call(jq.outcomes, [result.run_id])
    assert "already the destination" in (out[0].error or "")


def test_object_lifecycle_parts_and_sample_state(journal: Journal) -> None:
    rid = journal.call(jq.record_run, plan(run(sample("S1")))).run_id
    r1, r2 = journal.call(jq.next_objects, [], 10)
    assert journal.call(jq.next_objects, [r1.id], 10) == [r2]
    journal.call(jq.set_slot, r1.id, "U1", "bucket", "key1")
    journal.call(jq.start_multipart, r1.id, "MPU1", 5 * 1024**2)
    journal.call(jq.record_part, r1.id, jq.PartRow(1, 0, 100, "etag1", "crc"))
    journal.call(jq.record_part, r1.id, jq.PartRow(2, 100, 50, "etag2"))
    obj = journal.call(jq.get_object, r1.id)
    assert (obj.state, obj.s3_upload_id, obj.upload_id) == ("uploading", "MPU1", "U1")
    assert list(journal.call(jq.parts_of, r1.id)) == [1, 2]
    # resumed objects come before fresh ones
    assert journal.call(jq.next_objects, [], 1)[0].id == r1.id
    journal.call(jq.replace_parts, r1.id, [jq.PartRow(1, 0, 100, "etag1", "crc")])
    assert list(journal.call(jq.parts_of, r1.id)) == [1]
    journal.call(jq.reset_object, r1.id, "source changed")
    obj = journal.call(jq.get_object, r1.id)
    assert (obj.state, obj.s3_upload_id, obj.attempts) == ("pending", None, 1)
    assert journal.call(jq.parts_of, r1.id) == {}

    assert journal.call(jq.finish_object, r1.id, "sha", "etag-2").state == "uploading"
    progress = journal.call(jq.finish_object, r2.id, "sha2", "etag-1")
    assert (progress.state, progress.project_id, progress.final_ok) == ("uploaded", "P1", False)
    assert journal.call(jq.count_pending_objects) == 0
    assert journal.call(lambda c: c.execute("SELECT state FROM runs").fetchone()[0]) == "uploaded"
    assert journal.call(jq.unfinished_samples, [rid]) == 1


def test_failed_object_fails_its_sample_only(journal: Journal) -> None:
    rid = journal.call(jq.record_run, plan(run(sample("S1"), sample("S2")))).run_id
    s1r1 = journal.call(jq.next_objects, [], 1)[0]
    journal.call(jq.fail_object, s1r1.id, "S3 UploadPart: AccessDenied")
    left = journal.call(jq.next_objects, [], 10)
    assert [o.destination_path.rsplit("/", 1)[1] for o in left] == ["S2_R1.fastq.gz", "S2_R2.fastq.gz"]
    out = {s.client_id: s for s in journal.call(jq.outcomes, [rid])}
    assert out["S1"].state == "failed" and "S1_R1.fastq.gz: S3 UploadPart: AccessDenied" in (out["S1"].error or "")
    for o in left:
        journal.call(jq.finish_object, o.id, None, None)
    assert journal.call(lambda c: c.execute("SELECT state, error FROM runs").fetchone()[:]) == (
        "uploaded", None,
    )  # fmt: skip


def test_assignment_rows_requested_then_done(journal: Journal) -> None:
    rid = journal.call(jq.record_run, plan(run(sample("S1"), sample("S2")))).run_id
    for o in journal.call(jq.next_objects, [], 10):
        journal.call(jq.set_slot, o.id, f"U-{o.destination_path[-14:]}", "b", o.destination_path)
        journal.call(jq.finish_object, o.id, None, None)
    cands = journal.call(jq.assign_candidates)
    assert [c.client_id for c in cands] == ["S1", "S2"]
    assert cands[0].uploads == {"R1": "U-S1_R1.fastq.gz", "R2": "U-S1_R2.fastq.gz"} and cands[0].assignment is None
    journal.call(jq.mark_requested, [c.sample_id for c in cands], "P1")
    cands = journal.call(jq.assign_candidates)
    assert {(c.state, c.assignment) for c in cands} == {("assigning", "requested")}
    journal.call(jq.clear_requested, [cands[1].sample_id])
    assert journal.call(jq.assign_candidates)[1].assignment is None
    done = journal.call(jq.mark_assigned_many, [(cands[0].sample_id, "G1"), (cands[1].sample_id, None)])
    assert [p.final_ok for p in done] == [True, True]
    assert journal.call(jq.assign_candidates) == []
    out = journal.call(jq.outcomes, [rid])
    assert [(s.state, s.gencove_sample_id, s.ok) for s in out] == [("assigned", "G1", True), ("assigned", None, True)]
    assert journal.call(lambda c: c.execute("SELECT state FROM runs").fetchone()[0]) == "done"
    assert journal.call(jq.unfinished_samples, [rid]) == 0


def test_upload_only_samples_are_final_when_uploaded(journal: Journal) -> None:
    rid = journal.call(jq.record_run, plan(run(sample("S1", r2=False)), project=None)).run_id
    (o,) = journal.call(jq.next_objects, [], 10)
    assert journal.call(jq.finish_object, o.id, None, None).final_ok
    assert journal.call(jq.assign_candidates) == []
    assert journal.call(jq.unfinished_samples, [rid]) == 0
    assert journal.call(jq.remaining_bytes, [rid]) == 0


def test_a_sample_failed_for_unavailable_sources_comes_back_when_seen_ready(journal: Journal) -> None:
    rid = journal.call(jq.record_run, plan(run(sample("S1"), sample("S2")))).run_id
    r1, r2 = journal.call(jq.next_objects, [], 2)
    journal.call(jq.set_slot, r1.id, "U1", "bucket", "key1")
    journal.call(jq.start_multipart, r1.id, "MPU1", 5 * 1024**2)
    journal.call(jq.record_part, r1.id, jq.PartRow(1, 0, 100, "etag1"))
    journal.call(jq.fail_object, r1.id, f"{jq.SOURCE_UNAVAILABLE}/data/run1/S1_L001_R1.fastq.gz: No such file")
    s2 = [o for o in journal.call(jq.next_objects, [], 10) if "/S2_" in o.destination_path]
    journal.call(jq.fail_object, s2[0].id, "S3 UploadPart: AccessDenied")  # another reason: stays failed
    assert journal.call(jq.next_objects, [], 10) == []

    journal.call(jq.record_run, plan(run(sample("S1"), sample("S2", ready=False, problems=("gone",)))))
    obj = journal.call(jq.get_object, r1.id)
    assert (obj.state, obj.s3_upload_id, obj.error, obj.attempts) == ("uploading", "MPU1", None, 0)
    assert list(journal.call(jq.parts_of, r1.id)) == [1]  # resumed, not restarted
    assert journal.call(jq.get_object, r2.id).state == "pending"
    out = {s.client_id: s for s in journal.call(jq.outcomes, [rid])}
    assert (out["S1"].state, out["S1"].error) == ("uploading", None)
    assert out["S2"].state == "failed"
    assert {o.id for o in journal.call(jq.next_objects, [], 10)} == {r1.id, r2.id}
    assert journal.call(lambda c: c.execute("SELECT state FROM runs").fetchone()[0]) == "uploading"


def test_a_sample_failed_for_unavailable_sources_stays_failed_until_seen_ready(journal: Journal) -> None:
    journal.call(jq.record_run, plan(run(sample("S1"))))
    r1 = journal.call(jq.next_objects, [], 1)[0]
    journal.call(jq.fail_object, r1.id, f"{jq.SOURCE_UNAVAILABLE}/data/run1/S1_L001_R1.fastq.gz: No such file")
    journal.call(jq.record_run, plan(run(sample("S1", ready=False, problems=("S1_L001_R1.fastq.gz: cut",)))))
    journal.call(jq.record_run, plan(run(sample("S1", r2=False))))  # other reads than recorded
    assert journal.call(jq.get_object, r1.id).state == "failed"
    assert journal.call(jq.next_objects, [], 10) == []


# -- identity: a delivery is its content (docs/IDENTITY.md) ------------------------------------------------------
def deliver(journal: Journal, run_id: int) -> None:
    """Every object of the run done and every sample assigned, as the engine and assigner would leave them."""
    for o in journal.call(jq.next_objects, [], 100):
        journal.call(jq.finish_object, o.id, "0" * 64, '"etag"')
    ids = journal.call(lambda c: [int(r[0]) for r in c.execute("SELECT id FROM samples WHERE run_id = ?", (run_id,))])
    for s in ids:
        journal.call(jq.mark_assigned, s, f"g-{s}")


def rewritten(s: Sample) -> Sample:
    """The same names written again: every file is another version."""
    def again(files: tuple[SourceFile, ...]) -> tuple[SourceFile, ...]:
        return tuple(dataclasses.replace(f, mtime_ns=f.mtime_ns + 7_000, inode=f.inode + 1) for f in files)

    return dataclasses.replace(s, r1=again(s.r1), r2=again(s.r2))


def grown(s: Sample, read: str = "r1", extra: int = 10) -> Sample:
    files = getattr(s, read)
    bigger = dataclasses.replace(files[0], size=files[0].size + extra)
    return dataclasses.replace(s, **{read: (bigger, *files[1:])})


def holds(journal: Journal) -> list[tuple[str, str, str]]:
    return [(h.client_id, h.reason, h.problem) for h in journal.call(jh.open_holds)]


def record(journal: Journal, r: Run, **kw: object) -> jq.RecordResult:
    return journal.call(jq.record_run, plan(r, **kw), False, as_new_delivery)  # type: ignore[arg-type]


def test_same_files_under_a_new_path_are_held_naming_the_earlier_delivery(journal: Journal) -> None:
    first = record(journal, run(sample("S1")))
    deliver(journal, first.run_id)
    moved = record(journal, run(sample("S1"), path="/data/run1-renamed"))
    assert moved.new_samples == 0 and [h.reason for h in moved.held] == ["duplicate"]
    assert journal.call(jq.next_objects, [], 10) == []
    (hold,) = holds(journal)
    assert hold[1] == "duplicate" and "the same files as gncv://nova/run1/S1 (run /data/run1)" in hold[2]
    again = record(journal, run(sample("S1"), path="/data/run1-renamed"))
    assert again.held == () and len(holds(journal)) == 1  # a rescan neither repeats nor duplicates the hold


def test_a_delivered_sample_whose_file_grew_or_changed_is_held(journal: Journal) -> None:
    first = record(journal, run(sample("S1"), sample("S2")))
    deliver(journal, first.run_id)
    s1, s2 = sample("S1"), sample("S2")
    replaced = dataclasses.replace(s2, r2=(dataclasses.replace(s2.r2[0], inode=4242, size=70),))
    result = record(journal, run(grown(s1), replaced))
    assert result.new_samples == 0
    by_id = {h[0]: h for h in holds(journal)}
    assert by_id["S1"][1] == "grown" and "S1_L001_R1.fastq.gz grew from 100 bytes to 110 bytes" in by_id["S1"][2]
    assert by_id["S2"][1] == "changed" and "S2_L001_R2.fastq.gz was replaced or rewritten" in by_id["S2"][2]
    more = dataclasses.replace(s1, r1=(*s1.r1, sf("S1_L003_R1.fastq.gz", 30)))  # a manifest gained a row
    record(journal, run(more, replaced))
    assert "R1: 1 more file(s): /data/run1/S1_L003_R1.fastq.gz" in {h[0]: h for h in holds(journal)}["S1"][2]
    out = {o.client_id: o.state for o in journal.call(jq.outcomes, [first.run_id])}
    assert out == {"S1": "assigned", "S2": "assigned"} and journal.call(jq.next_objects, [], 10) == []


def test_a_reused_path_with_new_files_is_a_new_delivery_under_another_folder(journal: Journal) -> None:
    first = record(journal, run(sample("S1")))
    deliver(journal, first.run_id)
    result = record(journal, run(rewritten(sample("S1"))))  # the folder was emptied and written again
    assert result.new_run and result.replaced == first.run_id and result.new_samples == 1
    paths = [o.destination_path for o in journal.call(jq.next_objects, [], 10)]
    assert len(paths) == 2 and all(p.startswith("gncv://nova/run1@") and p.endswith(".fastq.gz") for p in paths)
    runs = journal.call(lambda c: [tuple(r) for r in c.execute("SELECT id, path, replaced_by FROM runs ORDER BY id")])
    assert runs == [(first.run_id, f"/data/run1#{first.run_id}", result.run_id), (result.run_id, "/data/run1", None)]
    again = record(journal, run(rewritten(sample("S1"))))
    assert (again.new_run, again.new_samples, again.held) == (False, 0, ())  # idempotent


def test_requeue_dismisses_a_hold_or_uploads_it_as_new(journal: Journal) -> None:
    first = record(journal, run(sample("S1"), sample("S2")))
    deliver(journal, first.run_id)
    record(journal, run(grown(sample("S1")), grown(sample("S2"))))
    dest = plan_mod.destination_path
    dismissed = journal.call(jh.release, "/data/run1", "S1", False, False, dest)
    assert [r.outcome for r in dismissed] == ["dismissed"]
    assert record(journal, run(grown(sample("S1")), grown(sample("S2")))).held == ()  # those versions: decided
    (new,) = journal.call(jq.release_holds, None, "S2", True, False, dest)
    assert new.outcome.startswith("as gncv://nova/run1@")
    objs = journal.call(jq.next_objects, [], 10)
    assert {o.destination_path.rsplit("/", 1)[0] for o in objs} == {new.outcome[3:]} and len(objs) == 2
    assert objs[0].size == 110 + 50 or objs[1].size == 110 + 50
    assert holds(journal) == [] and record(journal, run(grown(sample("S1")), grown(sample("S2")))).held == ()


def test_migration_2_gives_recorded_samples_their_content_key(tmp_path: Path) -> None:
    db = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(MIGRATIONS[0])  # a journal written by the previous transferd
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO runs (id, watch, path, name, completed_at) VALUES (1, '/w', '/w/r', 'r', 5.0)")
    conn.execute("INSERT INTO samples (id, run_id, client_id, sample_name, folder, state, created, updated)"
                 " VALUES (1, 1, 'S1', 'S1', 'gncv://x/r', 'assigned', 0, 0)")  # fmt: skip
    s = sample("S1")
    for read, files in (("R1", s.r1), ("R2", s.r2)):
        conn.execute(
            "INSERT INTO objects (sample_id, read, destination_path, sources, size, state, updated)"
            " VALUES (1, ?, ?, ?, 1, 'done', 0)",
            (read, f"gncv://x/r/S1_{read}.fastq.gz", jq.encode_sources(files)),
        )
    conn.commit()
    conn.close()
    with Journal.open(db) as j:
        row = j.call(lambda c: c.execute("SELECT content FROM samples").fetchone()[0])
        assert row == content_key(s.files)
        assert j.call(lambda c: c.execute("SELECT first_seen FROM runs").fetchone()[0]) == 5.0


def test_an_object_started_again_with_new_sources_keeps_its_sample_content_key(journal: Journal) -> None:
    record(journal, run(sample("S1")))
    obj = journal.call(jq.next_objects, [], 10)[0]
    newer = tuple(dataclasses.replace(f, mtime_ns=f.mtime_ns + 1) for f in obj.sources)
    journal.call(jq.reset_object, obj.id, "a source changed", newer)
    content = journal.call(lambda c: c.execute("SELECT content FROM samples").fetchone()[0])
    others = [f for o in journal.call(jq.next_objects, [], 10) if o.id != obj.id for f in o.sources]
    assert content == content_key([*newer, *others])



def test_samples_of_a_new_delivery_seen_ready_later_join_its_folder(journal: Journal) -> None:
    first = record(journal, run(sample("S1"), sample("S2")))
    deliver(journal, first.run_id)
    s1, s2, s3 = rewritten(sample("S1")), rewritten(sample("S2")), rewritten(sample("S3"))
    early = record(journal, run(s1))  # the folder is written again; S1 settles first
    assert early.replaced == first.run_id
    later = record(journal, run(s1, s2, s3))  # then the others (S3 a name the first delivery did not have)
    assert (later.run_id, later.new_samples) == (early.run_id, 2)
    folders = journal.call(lambda c: {r[0]: r[1] for r in c.execute("SELECT client_id, folder FROM samples"
                                                                    " WHERE run_id = ?", (early.run_id,))})
    assert len(set(folders.values())) == 1 and next(iter(folders.values())).startswith("gncv://nova/run1@")
    assert set(folders) == {"S1", "S2", "S3"}
