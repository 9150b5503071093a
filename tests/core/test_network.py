"""`[network]`: one proxy rule and one trust store for every client, from the config or the usual environment."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from transferd.config import NetworkConfig, load_config
from transferd.errors import ConfigError
from transferd.network import Network
from transferd.sandbox.tls import make_tls_files


def test_no_proxy_names_hosts_and_domains() -> None:
    net = Network(proxy="http://proxy:3128", no_proxy=("localhost", ".lab.example.org", "s3.internal"))
    assert net.proxy_for("https://api.gencove.com/api/v2/") == "http://proxy:3128"
    assert net.proxy_for("http://localhost:8080/x") is None
    assert net.proxy_for("https://nas.lab.example.org/") is None and net.proxy_for("https://lab.example.org/") is None
    assert net.proxy_for("https://bucket.s3.internal/k") is None
    assert Network(proxy="http://p:1", no_proxy=("*",)).proxy_for("https://anything/") is None
    assert Network().proxy_for("https://api.gencove.com/") is None  # the environment's, through trust_env


def test_the_ca_comes_from_the_config_else_the_usual_variables(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    env = {"REQUESTS_CA_BUNDLE": str(tls.ca_file)}
    assert Network.from_config(NetworkConfig(), env).ca_file == tls.ca_file
    assert Network.from_config(NetworkConfig(), {}).ca_file is None
    net = Network.from_config(NetworkConfig(ca_file=tls.ca_file), {"SSL_CERT_FILE": "/nonexistent"})
    assert net.ca_file == tls.ca_file
    names = {c["subject"][-1][0][1] for c in net.ssl_context.get_ca_certs() if c.get("subject")}
    assert "transferd sandbox CA" in names  # besides the system's CAs, not instead of them
    assert len(net.ssl_context.get_ca_certs()) > 1 or ssl.get_default_verify_paths().cafile is None
    bundle = Path(str(net.botocore_verify())).read_text()
    assert tls.ca_file.read_text().strip() in bundle and bundle.count("BEGIN CERTIFICATE") > 1


def test_config_names_a_bad_network_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[state]\npath = "j.sqlite3"\n[network]\nproxy = "proxy:3128"\n')
    with pytest.raises(ConfigError, match=r"network\.proxy: expected an http\(s\) URL"):
        load_config(cfg)
    cfg.write_text('[state]\npath = "j.sqlite3"\n[network]\nca_file = "missing.pem"\n')
    with pytest.raises(ConfigError, match=r"network\.ca_file: .*missing\.pem is not a readable file"):
        load_config(cfg)
    cfg.write_text('[state]\npath = "j.sqlite3"\n[network]\nproxy = "http://p:3128"\nno_proxy = ["localhost"]\n')
    assert load_config(cfg).network == NetworkConfig(proxy="http://p:3128", no_proxy=("localhost",))
