"""Pure grouping and completion rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferd.discovery import completion
from transferd.discovery.grouping import NamedFile, group_named_files, mark_collisions
from transferd.discovery.models import SourceFile
from transferd.discovery.naming import parse_fastq_name
from transferd.discovery.rules import DiscoveryRules

RULES = DiscoveryRules()


def named(*names: str, folder: str = "") -> list[NamedFile]:
    out = []
    for i, name in enumerate(names):
        parsed = parse_fastq_name(name)
        assert parsed is not None, name
        out.append(NamedFile(SourceFile(Path("/r") / folder / name, 10, 0, i), parsed, folder))
    return out


def one(files: list[NamedFile], rules: DiscoveryRules = RULES):
    drafts, ignored = group_named_files(files, rules)
    assert len(drafts) == 1, drafts
    return drafts[0], ignored


def test_order_is_lane_then_chunk() -> None:
    files = named(
        *(f"S_S1_L00{lane}_{read}_00{chunk}.fastq.gz" for lane in (2, 1) for chunk in (2, 1) for read in ("R2", "R1"))
    )
    d, _ = one(files)
    assert [f.path.name for f in d.r1] == [
        "S_S1_L001_R1_001.fastq.gz",
        "S_S1_L001_R1_002.fastq.gz",
        "S_S1_L002_R1_001.fastq.gz",
        "S_S1_L002_R1_002.fastq.gz",
    ]
    assert [f.path.name.replace("R2", "R1") for f in d.r2] == [f.path.name for f in d.r1]
    assert d.problems == ()


@pytest.mark.parametrize(
    ("names", "rules", "expect"),
    [
        (["S_S1_L001_R1_001.fastq.gz"], RULES, "missing mate"),
        (["S_S1_L001_R2_001.fastq.gz"], RULES, "R2 only"),
        (["S_S1_L001_R1_001.fastq.gz", "S_S1_L002_R1_001.fastq.gz", "S_S1_L001_R2_001.fastq.gz"], RULES,
         "only in R1: L002"),
        (["S_S1_L001_R1_001.fastq.gz", "S_S1_L001_R1_003.fastq.gz", "S_S1_L001_R2_001.fastq.gz",
          "S_S1_L001_R2_003.fastq.gz"], RULES, "missing chunk(s) 002 of lane 1"),
        (["S_S1_L001_R1_001.fastq.gz", "S_S1_L001_R1_001.fq.gz", "S_S1_L001_R2_001.fastq.gz"], RULES, "are both"),
        (["S_S1_R1_001.fastq.gz", "S_S1_L001_R1_001.fastq.gz", "S_S1_R2_001.fastq.gz", "S_S1_L001_R2_001.fastq.gz"],
         RULES, "with and without a lane"),
        (["S_S1_L001_R1_001.fastq.ora", "S_S1_L001_R2_001.fastq.ora"], RULES, ".ora is not gzip"),
        (["S_S1_L001_R1_001.fastq", "S_S1_L001_R2_001.fastq"], RULES, "uncompressed is not gzip"),
        (["my_s_S1_L001_R1_001.fastq.gz", "my_s_S1_L001_R2_001.fastq.gz"], DiscoveryRules(client_id_policy="reject"),
         "contains '_'"),
    ],
)  # fmt: skip
def test_sample_problems(names: list[str], rules: DiscoveryRules, expect: str) -> None:
    d, _ = one(named(*names), rules)
    assert any(expect in p for p in d.problems), d.problems


def test_single_end_allowed() -> None:
    d, _ = one(named("S_S1_L001_R1_001.fastq.gz"), DiscoveryRules(single_end=True))
    assert d.problems == () and d.r2 == ()


def test_index_reads_and_undetermined() -> None:
    files = named(
        "S_S1_L001_R1_001.fastq.gz",
        "S_S1_L001_R2_001.fastq.gz",
        "S_S1_L001_I1_001.fastq.gz",
        "Undetermined_S0_L001_R1_001.fastq.gz",
        "Undetermined_S0_L001_R2_001.fastq.gz",
    )
    drafts, ignored = group_named_files(files, RULES)
    assert [d.sample_name for d in drafts] == ["S"] and len(ignored) == 3
    drafts, ignored = group_named_files(files, DiscoveryRules(include_index_reads=True, include_undetermined=True))
    assert sorted(d.sample_name for d in drafts) == ["S", "Undetermined"] and ignored == []
    s = next(d for d in drafts if d.sample_name == "S")
    assert len(s.i1) == 1


def test_same_name_other_s_number_or_folder_is_another_sample_and_collides() -> None:
    files = named("A_S1_L001_R1_001.fastq.gz", "A_S1_L001_R2_001.fastq.gz", "A_S2_L001_R1_001.fastq.gz",
                  "A_S2_L001_R2_001.fastq.gz")  # fmt: skip
    files += named("A_B_S3_R1_001.fastq.gz", "A_B_S3_R2_001.fastq.gz", folder="p1")
    files += named("A-B_S4_R1_001.fastq.gz", "A-B_S4_R2_001.fastq.gz", folder="p2")
    drafts, _ = group_named_files(files, RULES)
    drafts = mark_collisions(drafts)
    assert len(drafts) == 4
    for d in drafts:
        assert any("neither is uploaded" in p for p in d.problems), d
    a1 = next(d for d in drafts if d.s_number == 1)
    assert any("A (S2)" in p for p in a1.problems)


def test_completion_rules() -> None:
    judge = completion.judge
    rules = DiscoveryRules(settle_seconds=60)
    reqs, also_quiet = completion.required_markers("bclconvert", None, rules, ["out"])
    assert reqs == [("out/Logs/FastqComplete.txt",)] and not also_quiet
    waiting = judge("bclconvert", reqs, set(), also_quiet=False, has_files=True, last_change=0, now=1e9, rules=rules)
    assert not waiting.complete and waiting.reasons == ("waiting for out/Logs/FastqComplete.txt",)
    done = judge("bclconvert", reqs, {"out/Logs/FastqComplete.txt"}, also_quiet=False, has_files=True,
                 last_change=1e9, now=1e9, rules=rules)  # fmt: skip
    assert done.complete  # markers: no quiet period needed

    reqs, also_quiet = completion.required_markers("instrument", None, rules)
    assert also_quiet  # RTAComplete can come before the instrument's FASTQs are written
    early = judge("instrument", reqs, {"RTAComplete.txt"}, also_quiet=True, has_files=True, last_change=100,
                  now=130, rules=rules)  # fmt: skip
    assert not early.complete and "RTAComplete.txt present" in early.reasons

    nx, _ = completion.required_markers("novaseqx", "2", rules)
    assert nx == [("Analysis/2/CopyComplete.txt",), ("Analysis/2/Data/Secondary_Analysis_Complete.txt",)]
    custom = DiscoveryRules(markers=("Analysis/{analysis}/Done.txt",))
    assert completion.required_markers("novaseqx", "3", custom)[0] == [("Analysis/3/Done.txt",)]

    quiet_only = DiscoveryRules(completion="quiet", quiet_seconds=10)
    assert judge("bclconvert", reqs, set(), also_quiet=False, has_files=True, last_change=0, now=11,
                 rules=quiet_only).complete  # fmt: skip
    markers_only = DiscoveryRules(completion="markers")
    plain = judge("plain", [], set(), also_quiet=False, has_files=True, last_change=0, now=1e9, rules=markers_only)
    assert not plain.complete and "no markers" in plain.reasons[0]
    empty = judge("plain", [], set(), also_quiet=False, has_files=False, last_change=None, now=1e9, rules=rules)
    assert not empty.complete


def test_rules_validation() -> None:
    with pytest.raises(ValueError, match="completion"):
        DiscoveryRules(completion="sometimes")
    with pytest.raises(ValueError, match="client_id_policy"):
        DiscoveryRules(client_id_policy="drop")
    with pytest.raises(ValueError, match="relative"):
        DiscoveryRules(markers=("/abs/marker",))
    assert DiscoveryRules(settle_seconds=30).effective_quiet_seconds == 30
