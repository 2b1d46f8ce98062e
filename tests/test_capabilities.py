"""Capabilities deny by default, checked on every call, against a real
gateway: the signed manifest grants emit prefixes and ports, the node's
[policy] narrows them, and `aegis reload` changes policy and port bindings
of running modules live (no restart, no reinstall)."""

import pytest

from conftest import example
from gateway_proc import Gateway, wait_for
from node.control import Client
from node.core import cbor

FACTS_PORT = '[ports.facts]\nadapter = "node_facts"\n'


@pytest.fixture
def gw(tmp_path, signer):
    g = Gateway(tmp_path, [signer.pub], extra=FACTS_PORT).start()
    yield g
    if g.proc.poll() is None:
        g.stop()


def install(c, data):
    c.send({"op": "install", "package": data})
    r = c.recv()
    assert r["ok"], r
    return r


def info(c, name):
    return [m for m in c.request("modules")["modules"] if m["name"] == name][0]


def events(c, flt):
    return c.request("events", topic=flt, last=100000)["events"]


def settle(c, name, n_events):
    """Wait until module `name` has handled n_events."""
    wait_for(lambda: info(c, name)["events"] >= n_events, what="%s handled %d" % (name, n_events))


def reload(gw, signer, extra):
    gw.write_config([signer.pub], extra=extra)
    r = gw.cli("reload", check=False)
    assert r.returncode == 0, r.stderr


def test_policy_narrows_emit_and_ports_live(gw, signer):
    c = Client(gw.sock)
    install(c, signer.fixture("echo.wasm", name="echo", emit=("echo/",)))
    install(c, signer.example("facts"))
    c.request("emit", topic="in/a", data=b"1")
    c.request("emit", topic="facts/request", data=cbor.dumps({}))
    settle(c, "echo", 1)
    settle(c, "facts", 1)
    assert len(events(c, "echo/#")) == 1 and len(events(c, "facts/reply")) == 1
    # Narrow: echo may only emit under other/, nobody may call any port.
    reload(gw, signer, FACTS_PORT + '[policy]\nemit = ["other/"]\nports = []\n')
    assert info(c, "echo")["emit"] == [] and info(c, "facts")["ports"] == []
    c.request("emit", topic="in/a", data=b"2")
    c.request("emit", topic="facts/request", data=cbor.dumps({}))
    settle(c, "echo", 2)
    settle(c, "facts", 2)
    assert len(events(c, "echo/#")) == 1 and len(events(c, "facts/reply")) == 1
    assert info(c, "echo")["denied"] == 1 and info(c, "facts")["denied"] == 1
    # A policy wider than the manifest gives nothing more than the manifest.
    reload(gw, signer, FACTS_PORT + '[policy]\nemit = ["", "echo/"]\nports = ["facts", "web"]\n')
    assert info(c, "echo")["emit"] == ["echo/"] and info(c, "facts")["ports"] == ["facts"]
    c.request("emit", topic="in/a", data=b"3")
    c.request("emit", topic="facts/request", data=cbor.dumps({}))
    settle(c, "echo", 3)
    settle(c, "facts", 3)
    assert len(events(c, "echo/#")) == 2 and len(events(c, "facts/reply")) == 2
    c.close()


def test_ports_deny_by_default_and_unbound_live(gw, signer):
    c = Client(gw.sock)
    # The manifest grants no port: the call is refused (EPERM) although the
    # node has the port bound.
    t = signer.example("facts")
    wasm = example("facts")[1]
    install(c, signer.pack("nogrant", "1.0.0", wasm, ["facts/request"], ["facts/reply"], []))
    c.request("emit", topic="facts/request", data=cbor.dumps({}))
    settle(c, "nogrant", 1)
    assert not events(c, "facts/reply") and info(c, "nogrant")["denied"] == 1
    c.request("remove", name="nogrant")
    # Granted and bound: answered.  Then the binding is removed live: the
    # port no longer exists (ENOENT), nothing is answered, the node serves on.
    install(c, t)
    c.request("emit", topic="facts/request", data=cbor.dumps({}))
    settle(c, "facts", 1)
    assert len(events(c, "facts/reply")) == 1
    reload(gw, signer, "")
    assert c.request("status")["ports"] == []
    c.request("emit", topic="facts/request", data=cbor.dumps({}))
    settle(c, "facts", 2)
    assert len(events(c, "facts/reply")) == 1
    fi = info(c, "facts")
    assert fi["errors"] >= 1 and fi["state"] == "running"
    # Bound again, live.
    reload(gw, signer, FACTS_PORT)
    c.request("emit", topic="facts/request", data=cbor.dumps({}))
    settle(c, "facts", 3)
    assert len(events(c, "facts/reply")) == 2
    c.close()


def test_limits_reload_and_unmetered_policy(gw, signer):
    """[limits] is node policy too: allow_unmetered can be turned on live."""
    c = Client(gw.sock)
    _, wasm = example("counter")
    plain = signer.pack("counter", "1.0.0", wasm, ["sensor/#"], ["count/"], meter=False)
    c.send({"op": "install", "package": plain})
    r = c.recv()
    assert not r["ok"] and "not metered" in r["error"]
    reload(gw, signer, FACTS_PORT + "[limits]\nallow_unmetered = true\n")
    install(c, plain)
    assert info(c, "counter")["metered"] is False
    c.close()
