"""Run one client command and measure it as its user experiences it.

* wall: from just before the fork to the moment `wait4` returns (process start-up included);
* CPU: user + system seconds of the child and every descendant it reaped, from `os.wait4`'s rusage;
* peak RSS: the larger of `ru_maxrss` (largest single process of the tree) and the peak, over 50 ms samples, of
  the summed VmRSS of the live process tree (`/proc/<pid>/task/*/children`), so multi-process clients count whole.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import die_with_parent

SAMPLE_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class Measurement:
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int
    exit_code: int
    timed_out: bool = False

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss_bytes(pid: int) -> int:
    return sum(_status_kib(p, "VmRSS:") for p in process_tree(pid)) * 1024


class _Sampler(threading.Thread):
    def __init__(self, pid: int, deadline: float) -> None:
        super().__init__(name=f"rss-sampler-{pid}", daemon=True)
        self.pid = pid
        self.deadline = deadline
        self.peak_bytes = 0
        self.timed_out = False
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(self.pid))
            if time.monotonic() > self.deadline:
                self.timed_out = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                return
            self.stop_event.wait(SAMPLE_INTERVAL)


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    timeout: float,
) -> Measurement:
    """Run `argv` to completion (in its own process group), measuring it; output goes to `log_path`."""
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        sampler = _Sampler(proc.pid, time.monotonic() + timeout)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            sampler.stop_event.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Stragglers left in the group (daemonised helpers) must not survive the measurement.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return Measurement(
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        peak_rss_bytes=max(usage.ru_maxrss * 1024, sampler.peak_bytes),
        exit_code=proc.returncode,
        timed_out=sampler.timed_out,
    )


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds consumed so far by the live process tree of `pid` (a server's cost)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICKS
