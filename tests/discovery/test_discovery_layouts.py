"""Generated run folders for each producer layout, scanned end to end."""

from __future__ import annotations

from pathlib import Path

from transferd.discovery.models import Run
from transferd.discovery.rules import DiscoveryRules
from transferd.discovery.scanner import scan_paths, scan_root

RULES = DiscoveryRules()


def by_client(run: Run) -> dict[str, object]:
    return {s.client_id: s for s in run.samples}


def names(files) -> list[str]:
    return [f.path.name for f in files]


def assert_no_trap(runs: list[Run]) -> None:
    for run in runs:
        for path in [f.path for s in run.samples for f in s.files] + list(run.ignored):
            assert "trap" not in path.name, f"the BCL tree was walked: {path}"


def test_novaseq6000_bcl2fastq(layouts, later: float) -> None:
    run_dir = layouts.novaseq6000_bcl2fastq()
    [run] = scan_root(layouts.root, RULES, later)
    assert_no_trap([run])
    assert (run.name, run.analysis, run.layout) == (run_dir.name, None, "bcl2fastq")
    assert run.complete and "quiet" in run.reasons[0]  # bcl2fastq writes no marker
    samples = by_client(run)
    assert set(samples) == {"SampleA", "SampleB", "tumor-L001"}
    a = samples["SampleA"]
    assert a.project_folder == "Data/Intensities/BaseCalls/ProjA/SampleA" and a.s_number == 1
    assert names(a.r1) == ["SampleA_S1_L001_R1_001.fastq.gz", "SampleA_S1_L002_R1_001.fastq.gz"]
    assert samples["tumor-L001"].sample_name == "tumor_L001"
    assert all(s.ready for s in run.samples), [s.problems for s in run.samples]
    assert sorted(p.name for p in run.ignored) == [
        "Undetermined_S0_L001_R1_001.fastq.gz",
        "Undetermined_S0_L001_R2_001.fastq.gz",
        "Undetermined_S0_L002_R1_001.fastq.gz",
        "Undetermined_S0_L002_R2_001.fastq.gz",
    ]
    with_und = scan_root(layouts.root, DiscoveryRules(include_undetermined=True), later)[0]
    assert "Undetermined" in by_client(with_und)


def test_bclconvert_chunks_and_index_reads(layouts, later: float) -> None:
    layouts.bclconvert()
    [run] = scan_root(layouts.root, RULES, later)
    assert run.layout == "bclconvert" and run.complete
    assert run.reasons == ("Logs/FastqComplete.txt present",)
    s1 = by_client(run)["S1"]
    assert names(s1.r1) == [
        "S1_S1_L001_R1_001.fastq.gz",
        "S1_S1_L001_R1_002.fastq.gz",
        "S1_S1_L002_R1_001.fastq.gz",
        "S1_S1_L002_R1_002.fastq.gz",
    ]
    assert s1.i1 == () and s1.ready
    odd = by_client(run)["my-sample-R1-x"]
    assert odd.sample_name == "my_sample_R1_x" and odd.project_folder == "ProjX" and odd.ready
    assert sum("_I1_" in p.name or "_I2_" in p.name for p in run.ignored) == 9
    [with_index] = scan_root(layouts.root, DiscoveryRules(include_index_reads=True), later)
    s1 = by_client(with_index)["S1"]
    assert len(s1.i1) == 4 and len(s1.i2) == 4 and s1.ready


def test_novaseqx_each_analysis_is_a_delivery(layouts, later: float) -> None:
    run_dir = layouts.novaseqx(analyses={1: True, 2: False})
    runs = scan_root(layouts.root, RULES, later)
    assert_no_trap(runs)
    assert [(r.name, r.analysis, r.layout) for r in runs] == [
        (run_dir.name, "1", "novaseqx"),
        (run_dir.name, "2", "novaseqx"),
    ]
    first, second = runs
    assert first.complete and all(s.ready for s in first.samples)
    assert first.reasons == (
        "Analysis/1/CopyComplete.txt present",
        "Analysis/1/Data/Secondary_Analysis_Complete.txt present",
    )
    pt = by_client(first)["PT-001-A"]
    assert pt.project_folder == "Data/BCLConvert/fastq" and pt.key == (run_dir.name, "1", "PT-001-A")
    assert all("/Analysis/1/" in str(f.path) for f in pt.files)
    assert not second.complete and not any(s.ready for s in second.samples)
    assert "waiting for Analysis/2/CopyComplete.txt" in second.reasons
    assert second.unit_path == run_dir / "Analysis" / "2"


def test_miseq_single_lane_and_single_end(layouts, later: float) -> None:
    layouts.miseq()
    [run] = scan_root(layouts.root, RULES, later)
    assert run.layout == "instrument" and run.complete
    assert run.reasons[0] == "RTAComplete.txt present" and "quiet" in run.reasons[1]
    samples = by_client(run)
    assert samples["Amplicon-1"].ready and samples["Amplicon-2"].ready
    single = samples["SingleEnd"]
    assert not single.ready and any("missing mate" in p for p in single.problems)
    [run] = scan_root(layouts.root, DiscoveryRules(single_end=True), later)
    single = by_client(run)["SingleEnd"]
    assert single.ready and single.r2 == () and len(single.r1) == 1


def test_plain_folder_without_lane_splitting(layouts, later: float) -> None:
    layouts.plain()
    [run] = scan_root(layouts.root, RULES, later)
    assert run.layout == "plain" and run.complete
    samples = by_client(run)
    assert set(samples) == {"NA10931", "NA12878", "SAMPLE3"}
    assert names(samples["NA12878"].r1) == ["NA12878_S13_R1_001.fastq.gz", "NA12878_S13_R1_002.fastq.gz"]
    assert samples["SAMPLE3"].origin == "simple"
    assert all(s.ready for s in run.samples), [s.problems for s in run.samples]


def test_manifest_drop(layouts, later: float) -> None:
    run_dir = layouts.manifest_drop()
    [run] = scan_root(layouts.root, RULES, later)
    assert run.layout == "manifest" and run.complete
    [sample] = run.samples  # the unlisted extra_S9 files are not uploaded on their own
    assert sample.client_id == "patient-7" and sample.origin == "manifest" and sample.ready
    assert names(sample.r1) == ["lib_7_L002_R1.fq.gz", "lib_7_L001_R1.fq.gz"]  # row order, not name order
    assert {p.name for p in run.ignored} == {"extra_S9_L001_R1_001.fastq.gz", "extra_S9_L001_R2_001.fastq.gz"}
    # The same drop given to `scan` as the CSV itself, or as the folder.
    [by_csv] = scan_paths([run_dir / "batch.fastq-map.csv"], RULES, later)
    [by_dir] = scan_paths([run_dir], RULES, later)
    for other in (by_csv, by_dir):
        assert [(s.client_id, names(s.r1), names(s.r2)) for s in other.samples] == [
            (sample.client_id, names(sample.r1), names(sample.r2))
        ]


def test_manifest_in_the_watch_root_is_its_own_delivery(tmp_path: Path, files, later: float) -> None:
    root = tmp_path / "root"
    files.write_fastq(root / "loose" / "a_R1.fastq.gz")
    files.write_fastq(root / "loose" / "a_R2.fastq.gz")
    files.touch(
        root / "batch7.fastq-map.csv", "client_id,r_notation,path\na,R1,loose/a_R1.fastq.gz\na,R2,loose/a_R2.fastq.gz\n"
    )
    runs = {r.name: r for r in scan_root(root, RULES, later)}
    assert runs["batch7"].layout == "manifest" and runs["batch7"].samples[0].ready


def test_all_layouts_under_one_root(layouts, later: float) -> None:
    layouts.novaseq6000_bcl2fastq()
    layouts.bclconvert()
    layouts.novaseqx()
    layouts.miseq()
    layouts.plain()
    layouts.manifest_drop()
    runs = scan_root(layouts.root, RULES, later)
    assert sorted(r.layout for r in runs) == sorted(
        ["bcl2fastq", "bclconvert", "novaseqx", "instrument", "plain", "manifest"]
    )
    keys = [s.key for r in runs for s in r.samples]
    assert len(keys) == len(set(keys))  # run name + analysis + client_id is unique per watch


def test_files_a_manifest_lists_are_not_also_grouped_by_name(tmp_path: Path, files, later: float) -> None:
    root = tmp_path / "root"
    files.illumina_files(root / "run" / "ProjA", "A", 1)
    files.illumina_files(root / "run" / "ProjA", "B", 2)
    rows = [
        "client_id,r_notation,path",
        "a,R1,../ProjA/A_S1_L001_R1_001.fastq.gz",
        "a,R2,../ProjA/A_S1_L001_R2_001.fastq.gz",
    ]
    files.touch(root / "run" / "sub" / "m.fastq-map.csv", "\n".join(rows) + "\n")
    [run] = scan_root(root, RULES, later)
    assert sorted((s.client_id, s.origin) for s in run.samples) == [("B", "illumina"), ("a", "manifest")]
    assert all(s.ready for s in run.samples)


def test_bclconvert_output_inside_an_instrument_run_folder(layouts, files, later: float) -> None:
    """RTA's Logs/ beside RunInfo.xml is not BCL Convert's; the output folder's Logs/ is."""
    run_dir = layouts.novaseq6000_bcl2fastq("230202_A00123_0002_BHXXXXXXX")
    files.illumina_files(run_dir / "bclconvert" / "P", "Z", 1)
    files.touch(run_dir / "bclconvert" / "Logs" / "Info.log")
    for p in (run_dir / "Data" / "Intensities" / "BaseCalls").rglob("*.fastq.gz"):
        p.unlink()
    [run] = scan_root(layouts.root, RULES, later)
    assert run.layout == "bclconvert" and not run.complete
    assert run.reasons == ("waiting for bclconvert/Logs/FastqComplete.txt",)
    files.touch(run_dir / "bclconvert" / "Logs" / "FastqComplete.txt")
    [run] = scan_root(layouts.root, RULES, later)
    assert run.complete and [s.client_id for s in run.samples] == ["Z"] and run.samples[0].ready


def test_each_manifest_in_the_watch_root_is_a_run_of_its_own(tmp_path: Path, files, later: float) -> None:
    """Several root-level manifests never share a run identity (the journal keys runs by path + analysis)."""
    root = tmp_path / "root"
    for stem in ("batch-1", "batch-2"):
        files.write_fastq(root / f".staging-{stem}" / "p1.r1.fq.gz")
        files.write_fastq(root / f".staging-{stem}" / "p1.r2.fq.gz")
        files.touch(
            root / f"{stem}.fastq-map.csv",
            f"client_id,r_notation,path\nP1,R1,.staging-{stem}/p1.r1.fq.gz\nP1,R2,.staging-{stem}/p1.r2.fq.gz\n",
        )
    runs = {r.name: r for r in scan_root(root, RULES, later)}
    assert set(runs) == {"batch-1", "batch-2"}
    assert runs["batch-1"].path == root / "batch-1.fastq-map.csv"
    assert runs["batch-2"].path == root / "batch-2.fastq-map.csv"
    assert all(r.complete and r.samples[0].ready for r in runs.values())
