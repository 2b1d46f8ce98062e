"""The Pi gateway files shipped in boards/rpi-gateway/ stay usable."""
import configparser
import os
import tomllib

from conftest import ROOT
from node.gateway.config import Config

D = os.path.join(ROOT, "boards", "rpi-gateway")


def test_sample_config_is_valid():
    with open(os.path.join(D, "gateway.toml"), "rb") as f:
        cfg = Config(tomllib.load(f), os.path.join(D, "gateway.toml"))
    assert cfg.control_socket == "/run/aegis/aegis.sock"
    assert "facts" in cfg.ports


def test_systemd_unit_runs_the_gateway():
    u = configparser.ConfigParser(strict=False, interpolation=None)
    u.read(os.path.join(D, "aegis-gateway.service"))
    assert u["Service"]["ExecStart"].endswith("aegis gateway --config /etc/aegis/gateway.toml")
    assert u["Service"]["KillSignal"] == "SIGTERM"
    assert "HUP" in u["Service"]["ExecReload"]
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_unit_runs_the_proxy_host():
    u = configparser.ConfigParser(strict=False, interpolation=None)
    u.read(os.path.join(D, "aegis-proxy.service"))
    assert u["Service"]["ExecStart"].endswith("aegis proxy --config /etc/aegis/gateway.toml")
    assert u["Install"]["WantedBy"] == "multi-user.target"
