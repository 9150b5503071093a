"""The Gencove-compatible sandbox: the v2 API on loopback, a fault proxy in front of a moto S3 server.

Light imports only (stdlib): `SandboxProcess` runs it as a subprocess, `SandboxControl` drives it,
`SandboxInfo` describes it. The server itself is `transferd.sandbox.runtime.Sandbox`.
"""

from transferd.sandbox.control_client import SandboxControl, SandboxControlError
from transferd.sandbox.info import SandboxInfo
from transferd.sandbox.process import SandboxProcess, SandboxStartError

__all__ = ["SandboxControl", "SandboxControlError", "SandboxInfo", "SandboxProcess", "SandboxStartError"]
