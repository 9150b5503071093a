"""Bad input everywhere gets a clear error and nothing is lost: the daemon and `transferd scan` as real processes.

- A malformed config: `transferd run` refuses to start with exit 2 and names the key (and starts nothing).
- A manifest with every kind of bad row: each is reported with its line number.
- Unreadable files: as root, chmod 000 stops nothing (CAP_DAC_OVERRIDE), so those checks run the command with
  CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH dropped from the bounding set (setpriv): uid 0, but mode bits count.
- Symlink loops, names with spaces and non-ASCII characters, zero-byte FASTQs.
The soak (bench/soak.py) exercises the same inputs under faults; these pin each behaviour down on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from soak_env import no_dac_prefix  # bench/ is on sys.path (conftest.py)
from soak_helpers import REPO

from transferd.synthetic import mark_complete, write_fastq_gz

pytestmark = pytest.mark.soak


def transferd(*args: str, prefix: list[str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "transferd", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


GOOD = """
[gencove]
host = "http://127.0.0.1:9"
api_key_file = "api-key"

[state]
path = "state/journal.sqlite3"

[[watch]]
path = "seq"
destination = "gncv://x"

[metrics]
listen = "127.0.0.1:0"
"""

# (what is wrong, the TOML, the key the error must name)
BAD_CONFIGS = [
    ("unknown key", GOOD + "[upload]\nconcurency = 4\n", "upload.concurency"),
    ("bad duration", GOOD.replace('destination = "gncv://x"', 'destination = "gncv://x"\nsettle_seconds = "soon"'),
     "watch[1].settle_seconds"),
    ("part too small", GOOD + '[upload]\npart_size = "1MiB"\n', "upload.part_size"),
    ("not a gncv destination", GOOD.replace("gncv://x", "s3://bucket/x"), "watch[1].destination"),
    ("missing [state]", GOOD.replace('[state]\npath = "state/journal.sqlite3"\n', ""), "state"),
    ("missing watch path", GOOD.replace('path = "seq"\n', ""), "watch[1].path"),
    ("projects without destination", GOOD + '[download]\nprojects = ["p1"]\n', "download.destination"),
    ("bad listen", GOOD.replace('listen = "127.0.0.1:0"', 'listen = "nowhere"'), "metrics.listen"),
    ("bad log level", GOOD + '[log]\nlevel = "loud"\n', "log.level"),
    ("bad choice", GOOD.replace('destination = "gncv://x"', 'destination = "gncv://x"\ncompletion = "soon"'),
     "watch[1].completion"),
    ("missing api key file", GOOD.replace('"api-key"', '"no-such-key"'), "gencove.api_key_file"),
    ("empty webhook secret", GOOD + '[download]\nwebhook_secret_file = "empty-secret"\n',
     "download.webhook_secret_file"),
    ("same path twice", GOOD + '[[watch]]\npath = "seq"\ndestination = "gncv://y"\n', "watch"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "toml", "key"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_malformed_config_refuses_to_start_naming_the_key(tmp_path: Path, what: str, toml: str, key: str) -> None:
    (tmp_path / "api-key").write_text("k" * 32 + "\n")
    (tmp_path / "empty-secret").write_text("\n")
    (tmp_path / "seq").mkdir()
    cfg = tmp_path / "transferd.toml"
    cfg.write_text(toml)
    r = transferd("run", "-c", str(cfg))
    assert r.returncode == 2, f"{what}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert f": {key}: " in r.stderr, f"{what}: the error does not name {key!r}: {r.stderr!r}"
    assert "Traceback" not in r.stderr
    assert "k" * 32 not in r.stdout + r.stderr


def test_invalid_toml_refuses_to_start(tmp_path: Path) -> None:
    cfg = tmp_path / "transferd.toml"
    cfg.write_text('[state]\npath = "x\n')
    r = transferd("run", "-c", str(cfg))
    assert r.returncode == 2
    assert str(cfg) in r.stderr and "not valid TOML" in r.stderr
    assert not (tmp_path / "x").exists()


def test_manifest_with_every_kind_of_bad_row_is_reported_by_line(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    write_fastq_gz(drop / "a.r1.fq.gz", 20, seed=1)
    write_fastq_gz(drop / "a.r2.fq.gz", 20, seed=2)
    rows = [
        "client_id,r_notation,path",  # 1
        "A,R1,a.r1.fq.gz",  # 2 fine
        "A,R2,a.r2.fq.gz",  # 3 fine
        "Bad_Id,R1,a.r1.fq.gz",  # 4 '_' in client_id (and a duplicate path)
        "C,R3,c.fq.gz",  # 5 bad r_notation, missing file
        "D,R1,https://example.org/d.fq.gz",  # 6 URL
        "E,R1,notes.txt",  # 7 bad ending
        ",R1,",  # 8 empty client_id and path
        "F,R1",  # 9 two columns
        "G,R2,a.r2.fq.gz",  # 10 duplicate path, R2 without R1
    ]
    manifest = drop / "samples.fastq-map.csv"
    manifest.write_text("\n".join(rows) + "\n")
    r = transferd("scan", "--settle", "0s", "--quiet-period", "0s", str(drop))
    out = r.stdout + r.stderr
    for line in (4, 5, 6, 7, 8, 9, 10):
        assert f"{manifest}:{line}:" in out, f"line {line} not reported:\n{out}"
    assert "nothing in it is uploaded" in out
    j = transferd("scan", "--json", "--settle", "0s", "--quiet-period", "0s", str(drop))
    assert not any(s.get("ready") for s in json.loads(j.stdout)), "a sample of a broken manifest is ready"


def test_unreadable_fastq_is_not_ready_until_it_can_be_read(tmp_path: Path) -> None:
    prefix, how, meaningful = no_dac_prefix()
    if not meaningful:
        pytest.skip(f"cannot make a file unreadable here: {how}")
    run = tmp_path / "RUN_LOCKED"
    write_fastq_gz(run / "Locked_S1_L001_R1_001.fastq.gz", 50, seed=1)
    r2 = write_fastq_gz(run / "Locked_S1_L001_R2_001.fastq.gz", 50, seed=2)
    (run / "Logs").mkdir()
    mark_complete(run)
    os.utime(run / "Logs" / "FastqComplete.txt", (1, 1))
    r2.chmod(0o000)
    try:
        locked = transferd("scan", "--json", "--settle", "0s", str(run), prefix=prefix)
        sample = json.loads(locked.stdout)[0]
        assert not sample["ready"], f"an unreadable sample is ready ({how}): {sample}"
        assert "Permission denied" in json.dumps(sample), sample
    finally:
        r2.chmod(0o644)
    unlocked = transferd("scan", "--json", "--settle", "0s", str(run), prefix=prefix)
    assert json.loads(unlocked.stdout)[0]["ready"]


def test_symlink_loops_zero_byte_and_awkward_names(tmp_path: Path) -> None:
    run = tmp_path / "Run ü 7 (rerun) 東京"
    write_fastq_gz(run / "Tumor_R1_x_S1_L001_R1_001.fastq.gz", 20, seed=1)
    write_fastq_gz(run / "Tumor_R1_x_S1_L001_R2_001.fastq.gz", 20, seed=2)
    write_fastq_gz(run / "Empty_S2_L001_R1_001.fastq.gz", 20, seed=3)
    (run / "Empty_S2_L001_R2_001.fastq.gz").write_bytes(b"")
    os.symlink(".", run / "loop")  # a folder loop
    os.symlink("b_S3_L001_R1_001.fastq.gz", run / "a_S3_L001_R1_001.fastq.gz")  # a file loop
    os.symlink("a_S3_L001_R1_001.fastq.gz", run / "b_S3_L001_R1_001.fastq.gz")
    os.symlink("/nonexistent/x.fastq.gz", run / "ghost_S4_L001_R1_001.fastq.gz")  # dangling
    (run / "Logs").mkdir()
    mark_complete(run)
    r = transferd("scan", "--json", "--settle", "0s", str(run), timeout=30)
    assert r.returncode == 0, r.stderr
    samples = {s["client_id"]: s for s in json.loads(r.stdout)}
    assert samples["Tumor-R1-x"]["ready"], samples["Tumor-R1-x"]
    assert not samples["Empty"]["ready"]
    assert "empty" in json.dumps(samples["Empty"]).lower()
    assert not {"a", "b", "ghost"} & set(samples), "a looping or dangling link became a sample"
