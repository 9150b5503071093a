"""``transferd scan``: JSON shape, human tables, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from transferd.discovery.rules import DiscoveryRules
from transferd.discovery.scan_cmd import run_scan

OLD = time.time() - 3600


def age(tree: Path) -> None:
    """Make every file an hour old, so the real clock of `scan` sees them settled."""
    for dirpath, _, names in os.walk(tree):
        for name in names:
            os.utime(Path(dirpath) / name, (OLD, OLD))


def test_json_shape(layouts) -> None:
    layouts.bclconvert()
    run_dir = layouts.novaseqx(analyses={1: True, 2: False})
    age(layouts.root)
    out = io.StringIO()
    assert run_scan([str(layouts.root)], True, DiscoveryRules(), out) == 0
    doc = json.loads(out.getvalue())
    assert isinstance(doc, list) and doc
    for obj in doc:
        assert set(obj) == {"run", "client_id", "sample_name", "r1", "r2", "ready", "problems"}
        assert all(Path(p).is_absolute() and Path(p).exists() for p in obj["r1"] + obj["r2"])
    s1 = next(o for o in doc if o["client_id"] == "S1")
    assert s1["run"] == str(layouts.root / "bclconvert_out") and s1["ready"] and s1["problems"] == []
    assert [Path(p).name for p in s1["r1"]] == [
        "S1_S1_L001_R1_001.fastq.gz",
        "S1_S1_L001_R1_002.fastq.gz",
        "S1_S1_L002_R1_001.fastq.gz",
        "S1_S1_L002_R1_002.fastq.gz",
    ]
    pending = [o for o in doc if o["run"] == str(run_dir) and "/Analysis/2/" in o["r1"][0]]
    assert pending and not any(o["ready"] for o in pending)
    assert pending[0]["problems"][0].startswith("run not complete: waiting for Analysis/2/CopyComplete.txt")


def test_human_table(layouts) -> None:
    layouts.miseq()
    age(layouts.root)
    out = io.StringIO()
    assert run_scan([str(layouts.root)], False, DiscoveryRules(), out) == 0
    text = out.getvalue()
    assert "[instrument]  complete: RTAComplete.txt present" in text
    assert "CLIENT_ID" in text and "Amplicon-1" in text and "missing mate" in text
    assert text.rstrip().endswith("1 run(s), 3 sample(s), 2 ready")


def test_manifest_path_and_errors_in_json(tmp_path: Path, files, capsys) -> None:
    files.write_fastq(tmp_path / "a_R1.fastq.gz")
    files.write_fastq(tmp_path / "a_R2.fastq.gz")
    manifest = files.touch(
        tmp_path / "m.fastq-map.csv", "client_id,r_notation,path\na,R1,a_R1.fastq.gz\na,R2,a_R2.fastq.gz\nb_x,R1,a\n"
    )
    age(tmp_path)
    out = io.StringIO()
    assert run_scan([str(manifest)], True, DiscoveryRules(), out) == 0
    [obj] = json.loads(out.getvalue())
    assert obj["client_id"] == "a" and not obj["ready"]
    assert any(p.startswith(f"{manifest}:4:") and "'_'" in p for p in obj["problems"])


def test_missing_path_exits_2(tmp_path: Path, capsys) -> None:
    out = io.StringIO()
    assert run_scan([str(tmp_path / "nope")], True, DiscoveryRules(), out) == 2
    assert json.loads(out.getvalue()) == []
    assert "no such file or folder" in capsys.readouterr().err
    assert run_scan([str(tmp_path)], False, DiscoveryRules(), out) == 0


def test_cli_entry(layouts) -> None:
    layouts.plain()
    age(layouts.root)
    proc = subprocess.run(
        [sys.executable, "-m", "transferd", "scan", str(layouts.root), "--json", "--settle", "30s"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    assert {o["client_id"] for o in json.loads(proc.stdout)} == {"NA10931", "NA12878", "SAMPLE3"}


def test_a_non_utf8_name_is_a_problem_of_its_sample_with_its_bytes_escaped(tmp_path: Path, files) -> None:
    run = tmp_path / "runs" / "RUNU"
    files.write_fastq(run / "ok_S1_L001_R1_001.fastq.gz")
    files.write_fastq(run / os.fsdecode(b"caf\xe9_S2_L001_R1_001.fastq.gz"))
    age(run)
    out = io.StringIO()
    assert run_scan([str(run)], True, DiscoveryRules(single_end=True), out) == 0
    doc = {o["client_id"]: o for o in json.loads(out.getvalue())}  # strict JSON: no lone surrogates
    assert doc["ok"]["ready"] and doc["ok"]["problems"] == []
    bad = doc["caf\\xe9"]
    assert not bad["ready"] and bad["r1"] == [f"{run}/caf\\xe9_S2_L001_R1_001.fastq.gz"]
    assert bad["problems"] == [f"{run}/caf\\xe9_S2_L001_R1_001.fastq.gz: file name is not valid UTF-8; rename the file"]
    table = io.StringIO()
    run_scan([str(run)], False, DiscoveryRules(single_end=True), table)
    assert "caf\\xe9" in table.getvalue() and "\udce9" not in table.getvalue()
