"""Whether the `sandbox` extra is installed: `transferd sandbox` and `transferd demo` need it, the daemon does not.

Checked before anything starts, so a plain `pip install transferd` gets one line naming the extra to install
instead of a ModuleNotFoundError traceback from a child process. Stdlib only, and no module is imported: the
check must be cheap and must not fail the way it reports.
"""

from __future__ import annotations

import importlib.util
import sys

# What `pip install 'transferd[sandbox]'` brings (pyproject.toml): moto[server] (flask is its server part),
# awscrt (the CRC32C/CRC64NVME checks), cryptography (--tls).
SANDBOX_MODULES = ("moto", "flask", "awscrt", "cryptography")
INSTALL_HINT = "pip install 'transferd[sandbox]'"


def _absent(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is None  # None there blocks the import (also how tests simulate absence)
    return importlib.util.find_spec(name) is None


def missing_sandbox_modules() -> list[str]:
    return [name for name in SANDBOX_MODULES if _absent(name)]


def missing_extra_message(command: str) -> str | None:
    """One line for stderr when the extra is incomplete, else None."""
    missing = missing_sandbox_modules()
    if not missing:
        return None
    return f"transferd {command}: needs the sandbox extra ({', '.join(missing)} not installed): {INSTALL_HINT}"
