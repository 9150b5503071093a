"""The chaos soak in its short form (about 3 minutes): `bench/soak.py` as a real process, judged by its report.

The soak starts its own sandbox, proxy, download disk and daemon; this test only runs it and reads the JSON
report, so a failure here prints the soak's own summary (seed, what was lost or duplicated, where the work dir
and daemon log were kept). Replay a failure with `python bench/soak.py --seed <seed> --minutes <minutes>`.

Environment: SOAK_SEED (default: the fixed CI_SEED, so CI replays one schedule; `random` draws a new one, printed),
SOAK_MINUTES (chaos phase, default 1.5). Timing still varies from run to run; the seed fixes the draws.
Nothing is tolerated: every bug the soak found is fixed and pinned by a test in test_soak_regressions.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CI_SEED = 20261204  # passed a 10-minute soak; the short soak replays its first 1.5 minutes of draws
TIMEOUT = 720  # hard bound: chaos + writers + drain deadline + verdict, with room to spare on a slow machine

pytestmark = [pytest.mark.soak, pytest.mark.slow]


def test_short_soak_loses_duplicates_and_corrupts_nothing(tmp_path: Path) -> None:
    wanted = os.environ.get("SOAK_SEED") or str(CI_SEED)
    seed = int.from_bytes(os.urandom(4), "big") % 1_000_000 if wanted == "random" else int(wanted)
    minutes = float(os.environ.get("SOAK_MINUTES") or 1.5)
    report = tmp_path / "soak-report.json"
    cmd = [sys.executable, str(REPO / "bench" / "soak.py"), "--seed", str(seed), "--minutes", str(minutes),
           "--report", str(report), "--drain-timeout", "180"]  # fmt: skip
    print(f"soak seed {seed}: {' '.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the soak tears down (daemon, sandbox, mounts) on SIGTERM
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"the soak (seed {seed}) did not finish within {TIMEOUT}s:\n{out.decode(errors='replace')[-6000:]}")
    text = out.decode(errors="replace")
    print(text[-12000:])
    assert report.exists(), f"no report (seed {seed}); soak output:\n{text[-6000:]}"
    r = json.loads(report.read_text())
    figures = {k: r[k] for k in ("lost", "duplicated", "corrupted", "forbidden_uploads", "secret_leaks",
                                 "part_files_left", "lost_to_known_bugs", "duplicated_by_known_bugs")}  # fmt: skip
    assert figures == dict.fromkeys(figures, 0), f"seed {seed}: {figures}\n{json.dumps(r['details'], indent=1)}"
    assert r["daemon_final_exit"] == 0, f"seed {seed}: SIGTERM exit code {r['daemon_final_exit']}"
    assert not r["daemon_crashes"], f"seed {seed}: {r['daemon_crashes']}"
    assert r["drained"], f"seed {seed}: the backlog did not drain"
    assert not r["webhook_mismatches"], f"seed {seed}: {r['webhook_mismatches']}"
    assert r["bad_input_reports"]["ok"], f"seed {seed}: broken manifests not reported: {r['bad_input_reports']}"
    assert r["held_samples"]["ok"], f"seed {seed}: held samples not reported: {r['held_samples']}"
    # The soak must really have been a soak: every fault kind, kills, work of every kind.
    assert r["daemon_kills"] >= 1
    assert r["retries"] > 0, "faults were injected but the daemon never retried"
    assert r["second_daemon_on_the_journal"].startswith("refused"), r["second_daemon_on_the_journal"]
    assert not r["reload_problems"], r["reload_problems"]
    assert r["samples_verified"] >= 10
    assert r["faults_injected_total"] >= 20
    kinds = set(r["faults_injected"])
    for kind in ("daemon_kill", "root_away", "sandbox_outage", "credentials_expiry", "url_expiry"):
        assert kind in kinds, f"seed {seed}: fault {kind} never injected: {sorted(kinds)}"
    assert r["ok"], f"seed {seed}: the soak failed; see its summary above"
    assert proc.returncode == 0
