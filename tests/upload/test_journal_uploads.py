"""The upload side's journal queries (transferd/journal/uploads.py) and the plans they record."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferd.discovery.models import Run, Sample, SourceFile
from transferd.journal import Journal
from transferd.journal import uploads as jq
from transferd.upload.plan import RunPlan, plan_run


def sf(name: str, size: int = 100) -> SourceFile:
    return SourceFile(Path("/data/run1") / name, size, 1_000, hash(name) & 0xFFFF)


def sample(client_id: str, *, ready: bool = True, problems: tuple[str, ...] = (), r2: bool = True) -> Sample:
    return Sample(
        run_path=Path("/data/run1"),
        run_name="run1",
        analysis=None,
        client_id=client_id,
        sample_name=client_id,
        r1=(sf(f"{client_id}_L001_R1.fastq.gz"), sf(f"{client_id}_L002_R1.fastq.gz", 50)),
        r2=(sf(f"{client_id}_L001_R2.fastq.gz"),) if r2 else (),
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
    result = journal.call(jq.record_run, plan(run(sample("S1"), path="/other/run1")))
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
