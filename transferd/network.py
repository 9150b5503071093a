"""How transferd's HTTP clients reach the outside: one proxy rule and one trust store for all of them (the Gencove
API, S3 and deliverable downloads), from `[network]` or, where it is silent, the usual environment.

* Proxy: `[network] proxy` (with `no_proxy`), else HTTPS_PROXY / HTTP_PROXY / NO_PROXY (aiohttp's `trust_env`,
  botocore's own environment lookup). A host in no_proxy (exact, or a `.suffix` / `suffix` of it; `*` = all) is
  reached directly.
* Trust: `[network] ca_file`, else SSL_CERT_FILE, REQUESTS_CA_BUNDLE (what the gencove CLI honours) or
  AWS_CA_BUNDLE: a private CA (a proxy that re-signs TLS) trusted besides the system's CAs. botocore takes one
  bundle file, so S3 gets the system bundle and the private CA joined in a file of this process's own.
"""

from __future__ import annotations

import atexit
import os
import ssl
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from transferd.config import NetworkConfig

CA_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE")


@dataclass(frozen=True, slots=True)
class Network:
    proxy: str = ""  # explicit; empty: the environment's
    no_proxy: tuple[str, ...] = ()
    ca_file: Path | None = None

    @classmethod
    def from_config(cls, cfg: NetworkConfig, environ: dict[str, str] | None = None) -> Network:
        env = os.environ if environ is None else environ
        ca = cfg.ca_file
        if ca is None:
            named = next((env[k] for k in CA_ENV if env.get(k)), None)
            ca = Path(named) if named else None
        return cls(cfg.proxy, cfg.no_proxy, ca)

    # -- proxy --------------------------------------------------------------------------------------------------
    def bypassed(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        for entry in (e.strip().lower() for e in self.no_proxy):
            if entry == "*" or host == entry.lstrip(".") or (entry and host.endswith("." + entry.lstrip("."))):
                return True
        return False

    def proxy_for(self, url: str) -> str | None:
        """The configured proxy for `url`, or None: direct, or the environment's (the session trusts it)."""
        return self.proxy if self.proxy and not self.bypassed(url) else None

    # -- trust --------------------------------------------------------------------------------------------------
    @property
    def ssl_context(self) -> ssl.SSLContext:
        return _ssl_context(self.ca_file)

    def botocore_verify(self) -> str | bool:
        """botocore's `verify`: True (its bundle) or a file with its bundle and our CA joined."""
        if self.ca_file is None:
            return True
        return _joined_bundle(self.ca_file)

    # -- clients ------------------------------------------------------------------------------------------------
    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """An aiohttp session for transferd's own requests: our trust store, and the environment's proxy settings
        unless a proxy is configured (then each request names it: `proxy=network.proxy_for(url)`)."""
        connector = aiohttp.TCPConnector(ssl=self.ssl_context)
        return aiohttp.ClientSession(connector=connector, trust_env=not self.proxy, **kwargs)

    def botocore_options(self, endpoint: str) -> dict[str, Any]:
        """AioConfig options for S3 at `endpoint` (empty: AWS)."""
        proxy = self.proxy_for(endpoint or "https://s3.amazonaws.com")
        return {"proxies": {"http": proxy, "https": proxy}} if proxy else {}


DIRECT = Network()


@lru_cache(maxsize=4)
def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """One context per trust store for the process: loading the system's CAs costs ~20 ms each time."""
    ctx = ssl.create_default_context()
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


@lru_cache(maxsize=4)
def _joined_bundle(ca_file: Path) -> str:
    """The system's CA bundle (certifi's, as botocore uses) followed by `ca_file`, in a file removed at exit."""
    import certifi

    data = Path(certifi.where()).read_bytes() + b"\n" + ca_file.read_bytes()
    fd, name = tempfile.mkstemp(prefix="transferd-ca-", suffix=".pem")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    atexit.register(lambda: Path(name).unlink(missing_ok=True))
    return name
