"""Stdlib helpers for the sandbox's child processes (kept free of aiohttp so importing them is cheap)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def child_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child Python that must import `transferd` from this same tree."""
    env = dict(os.environ)
    env.update(overrides or {})
    root = str(Path(__file__).resolve().parents[2])
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return env
