"""The soak's environment: child processes that never outlive it, the daemon under test, the download disk
that can be filled, the proxy's control client, /metrics parsing and webhook sending."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import hmac
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with_parent() -> None:
    # Runs between fork and exec. Children are only ever started from the main thread (PDEATHSIG follows the
    # thread that forked), so they die when the soak dies, however it dies.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None, timeout: float = 10.0,
         raw: bytes | None = None) -> tuple[int, bytes]:  # fmt: skip
    """(status, body) without raising on HTTP errors; OSError when nothing answers."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except urllib.error.URLError as e:
        raise OSError(str(e.reason)) from None


def spawn(command: Sequence[str], *, log: Path | None = None, env: Mapping[str, str] | None = None,
          stdout_pipe: bool = False) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start a child in its own process group that dies with us; output (and stderr) appended to `log`."""
    fh = open(log, "ab") if log else None  # noqa: SIM115 - the child holds its own copy
    try:
        return subprocess.Popen(
            list(command),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else (fh or subprocess.DEVNULL),
            stderr=fh or subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only ever called from the main thread
        )
    finally:
        if fh is not None:
            fh.close()


def read_json_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.args}: no ready line after {timeout}s")
            if not sel.select(0.2):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"{proc.args}: exited with {proc.wait(5)} before it was ready")
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> int | None:
    """SIGTERM, wait, then SIGKILL the whole process group."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    code = proc.wait(timeout)
    if proc.stdout is not None:
        proc.stdout.close()
    return code


# -- the proxy -------------------------------------------------------------------------------------------------
class Proxy:
    def __init__(self, api_upstream: str, s3_upstream: str, log: Path) -> None:
        self.proc = spawn([sys.executable, str(REPO / "bench" / "soak_proxy.py"), "--api", api_upstream,
                           "--s3", s3_upstream], log=log, stdout_pipe=True)  # fmt: skip
        info = read_json_line(self.proc, 30)
        self.api_url: str = info["api_url"]
        self.s3_url: str = info["s3_url"]
        self.control_url: str = info["control_url"]

    def outage(self, seconds: float, targets: Sequence[str] = ("api", "s3")) -> None:
        http("POST", self.control_url + "/outage", {"seconds": seconds, "targets": list(targets)})

    def secrets(self) -> list[str]:
        return json.loads(http("GET", self.control_url + "/secrets")[1])["secrets"]

    def stats(self) -> dict[str, Any]:
        return json.loads(http("GET", self.control_url + "/stats")[1])

    def stop(self) -> None:
        stop_process(self.proc)


# -- the daemon ------------------------------------------------------------------------------------------------
def no_dac_prefix() -> tuple[list[str], str, bool]:
    """A command prefix under which root is subject to file permissions (chmod 000 really stops reads), how,
    and whether unreadable files can be simulated at all.

    As root, chmod 000 stops nothing (CAP_DAC_OVERRIDE). Dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from
    the bounding set keeps uid 0 (the daemon still owns its files) but makes mode bits count."""
    if os.geteuid() != 0:
        return [], "not root: file permissions apply as they are", True
    setpriv = shutil.which("setpriv")
    if setpriv:
        probe = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", "true"], capture_output=True)
        if probe.returncode == 0:
            caps = "-dac_override,-dac_read_search"
            prefix = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]
            return prefix, "root without CAP_DAC_OVERRIDE (setpriv)", True
    return [], "root with CAP_DAC_OVERRIDE: unreadable files cannot be simulated (setpriv unavailable)", False


class Daemon:
    """`transferd run` as a subprocess; every incarnation appends to the same log."""

    def __init__(self, config: Path, port: int, log: Path, prefix: Sequence[str] = ()) -> None:
        self.config, self.port, self.log = config, port, log
        self.prefix = list(prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.crashes: list[str] = []  # exits we did not cause

    def start(self, env: Mapping[str, str] | None = None) -> None:
        extra = " ".join(f"{k}={v}" for k, v in (env or {}).items())
        with open(self.log, "ab") as fh:
            fh.write(f"#### soak: starting daemon (incarnation {self.starts + 1}) at {time.strftime('%X')} {extra}\n"
                     .encode())  # fmt: skip
        self.proc = spawn([*self.prefix, sys.executable, "-m", "transferd", "run", "-c", str(self.config)],
                          log=self.log, env={"PYTHONFAULTHANDLER": "1", **(env or {})})  # fmt: skip
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def serving(self) -> bool:
        """Alive and answering /healthz: its signal handlers are set (systemd sends a reload only after READY=1;
        a SIGHUP before the handlers are set would end the process)."""
        with contextlib.suppress(OSError):
            return self.alive() and http("GET", self.url("/healthz"), timeout=2)[0] == 200
        return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_http(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                assert self.proc is not None
                raise RuntimeError(f"the daemon exited with {self.proc.returncode} while starting; see {self.log}")
            with contextlib.suppress(OSError):
                if http("GET", self.url("/healthz"), timeout=2)[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the daemon's /healthz did not answer within {timeout}s; see {self.log}")

    def kill(self, why: str = "") -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.kills += 1
        with open(self.log, "ab") as fh:
            fh.write(f"#### soak: SIGKILLed the daemon at {time.strftime('%X')} {why}\n".encode())

    def check_crash(self) -> str | None:
        """If the daemon exited on its own, record it and return a description."""
        if self.proc is not None and self.proc.poll() is not None:
            what = f"daemon exited on its own with code {self.proc.returncode} at {time.strftime('%X')}"
            self.crashes.append(what)
            self.proc = None
            return what
        return None

    def terminate(self, timeout: float) -> int | None:
        """SIGTERM and wait: the graceful stop whose exit code must be 0."""
        if self.proc is None:
            return None
        with open(self.log, "ab") as fh:
            fh.write(f"#### soak: SIGTERM to the daemon at {time.strftime('%X')}\n".encode())
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # leave the stacks in the log (PYTHONFAULTHANDLER)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            stop_process(self.proc)
            return None

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        status, body = http("GET", self.url("/metrics"), timeout=5)
        if status != 200:
            raise OSError(f"/metrics answered {status}")
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


# -- the download disk ----------------------------------------------------------------------------------------
class DownloadDisk:
    """Where mirrored files land, on a file system the soak can fill up.

    Preferred: an ext4 image on a loop device (filling is one `fallocate` of the free space). Else a tmpfs (filled
    by remounting it at its current usage). Else a plain folder, where a full disk cannot be simulated."""

    def __init__(self, base: Path, size: int, prefer: str = "auto") -> None:
        self.mount = base / "download-disk"
        self.mount.mkdir(parents=True, exist_ok=True)
        self.image = base / "download-disk.ext4"
        self.kind = "folder"
        self.note = ""
        self._tmpfs_size = size
        self._mounted = False
        self.filled = False
        self.fills = 0
        if os.geteuid() != 0:
            self.note = "not root: no mount, a full disk cannot be simulated"
            return
        if prefer == "folder":
            self.note = "plain folder (asked for): a full disk cannot be simulated"
            return
        try:
            if prefer == "tmpfs":
                raise OSError("tmpfs asked for")
            with open(self.image, "wb") as fh:
                fh.truncate(size)  # sparse
            subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)], check=True, capture_output=True)
            subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mount)], check=True, capture_output=True)
            self.kind, self._mounted = "ext4-loop", True
            self.note = f"ext4 image on a loop device ({size / 2**30:.1f} GiB sparse); full = fallocate of free space"
            return
        except (OSError, subprocess.CalledProcessError) as e:
            err = e.stderr.decode(errors="replace").strip() if isinstance(e, subprocess.CalledProcessError) else e
            self.note = f"loop mount failed ({err}); "
            with contextlib.suppress(OSError):
                self.image.unlink()
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.mount)], check=True,
                           capture_output=True)  # fmt: skip
            self.kind, self._mounted = "tmpfs", True
            self.note += "tmpfs; full = remount at its current usage"
        except (OSError, subprocess.CalledProcessError) as e:
            err = e.stderr.decode(errors="replace").strip() if isinstance(e, subprocess.CalledProcessError) else e
            self.note += f"tmpfs mount failed ({err}): plain folder, a full disk cannot be simulated"

    @property
    def results(self) -> Path:
        return self.mount / "results"

    @property
    def can_fill(self) -> bool:
        return self.kind in ("ext4-loop", "tmpfs")

    def fill(self) -> None:
        if not self.can_fill or self.filled:
            return
        if self.kind == "ext4-loop":
            st = os.statvfs(self.mount)
            free = st.f_bavail * st.f_frsize
            if free > 64 * 1024:
                subprocess.run(["fallocate", "-l", str(free - 16 * 1024), str(self.mount / "filler")], check=False,
                               capture_output=True)  # fmt: skip
            # top up whatever fallocate left (block rounding), so a write really gets ENOSPC
            with contextlib.suppress(OSError), open(self.mount / "filler2", "wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        else:
            used = self._used()
            subprocess.run(["mount", "-o", f"remount,size={max(used, 4096) + 4096}", str(self.mount)], check=False,
                           capture_output=True)  # fmt: skip
        self.filled = True
        self.fills += 1

    def free(self) -> None:
        if not self.filled:
            return
        if self.kind == "ext4-loop":
            for name in ("filler", "filler2"):
                with contextlib.suppress(OSError):
                    (self.mount / name).unlink()
        else:
            subprocess.run(["mount", "-o", f"remount,size={self._tmpfs_size}", str(self.mount)], check=False,
                           capture_output=True)  # fmt: skip
        self.filled = False

    def _used(self) -> int:
        st = os.statvfs(self.mount)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def close(self) -> None:
        self.free()
        if self._mounted:
            for _ in range(20):
                r = subprocess.run(["umount", str(self.mount)], capture_output=True)
                if r.returncode == 0:
                    break
                time.sleep(0.5)
            else:
                subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)
            self._mounted = False
        with contextlib.suppress(OSError):
            self.image.unlink()


# -- webhooks ----------------------------------------------------------------------------------------------------
SIGNATURE_HEADER = "Gencove-Signature"


def signature(secret: str, body: bytes, t: int) -> str:
    """The `Gencove-Signature` value: t=<unix seconds>,v1=<hex HMAC-SHA512(secret, "<t>." + body)>."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha512).hexdigest()
    return f"t={t},v1={mac}"
