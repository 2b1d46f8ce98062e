"""Replay and downgrade: a captured old package, chunk stream or rollback
statement replayed later changes nothing; going back needs a signed
rollback statement (host, control socket and MQTT deploy topic)."""
import os

import pytest

from broker import Subscriber, broker  # noqa: F401 (fixture)
from conftest import Signer
from gateway_proc import Gateway, cli, wait_for
from node.core import cbor, rollback as rb
from node.host import InstallError


def stmt(signer, frm, to, name="counter", node="*", nonce=None, ts=None):
    import time
    return rb.make(name, frm, to, signer.sign, signer.raw, nonce or os.urandom(16),
                   ts if ts is not None else time.time_ns() // 1000000, node=node)


def active(h, name="counter"):
    m = h.modules.get(name)
    return m.active.version if m and m.active else None


def test_replays_and_signed_rollback_on_the_host(make_host, signer, tmp_path):
    import time
    h = make_host(clock=lambda: time.time_ns() // 1000000)
    v1 = signer.example("counter", version="1.0.0")
    v2 = signer.example("counter", version="2.0.0")
    h.install(v1)
    h.install(v2)
    with pytest.raises(InstallError, match="older than the active 2.0.0"):
        h.install(v1)                                   # replayed old package
    assert active(h) == "2.0.0"
    with pytest.raises(InstallError, match="unknown key"):
        h.rollback(stmt(Signer(str(tmp_path / "rogue")), "2.0.0", "1.0.0"))
    with pytest.raises(InstallError, match="for node 'other'"):
        h.rollback(stmt(signer, "2.0.0", "1.0.0", node="other"))
    with pytest.raises(InstallError, match="expired"):
        h.rollback(stmt(signer, "2.0.0", "1.0.0", ts=1700000000000))
    with pytest.raises(InstallError, match="active version is 2.0.0"):
        h.rollback(stmt(signer, "3.0.0", "1.0.0"))
    s = stmt(signer, "2.0.0", "1.0.0", node="n1")
    r = h.rollback(s)                                   # package from the store
    assert r["version"] == "1.0.0" and r["rolled_back_from"] == "2.0.0"
    assert active(h) == "1.0.0"
    with pytest.raises(InstallError, match="already used"):
        h.rollback(s)                                   # replayed statement
    with pytest.raises(InstallError, match="was rolled back on this node"):
        h.install(v2)                                   # replayed newer package
    h.install(signer.example("counter", version="3.0.0"))
    with pytest.raises(InstallError, match="active version is 3.0.0"):
        h.rollback(stmt(signer, "2.0.0", "1.0.0"))
    # What the node refuses survives a restart.
    h.flush()
    h2 = make_host(clock=lambda: time.time_ns() // 1000000)
    h2.restore()
    assert active(h2) == "3.0.0" and h2.modules["counter"].blocked == ["2.0.0"]
    with pytest.raises(InstallError, match="already used"):
        h2.rollback(s)
    # The local root override still exists (documented): install --rollback.
    assert h2.install(v2, rollback=True)["version"] == "2.0.0"


def test_rollback_target_must_match_the_package(make_host, signer):
    import time
    h = make_host(clock=lambda: time.time_ns() // 1000000)
    h.install(signer.example("counter", version="2.0.0"))
    # 1.0.0 was never on this node: the statement needs its package.
    with pytest.raises(InstallError, match="not in this node's store"):
        h.rollback(stmt(signer, "2.0.0", "1.0.0"))
    with pytest.raises(InstallError, match="package is counter@1.5.0"):
        h.rollback(stmt(signer, "2.0.0", "1.0.0"), signer.example("counter", version="1.5.0"))
    r = h.rollback(stmt(signer, "2.0.0", "1.0.0"), signer.example("counter", version="1.0.0"))
    assert r["version"] == "1.0.0" and active(h) == "1.0.0"


def test_rollback_over_the_control_socket(tmp_path, signer):
    g = Gateway(tmp_path, [signer.pub]).start()
    try:
        for v in ("1.0.0", "2.0.0"):
            p = tmp_path / ("c%s.pkg" % v)
            p.write_bytes(signer.example("counter", version=v))
            g.cli("install", str(p))
        r = g.cli("install", str(tmp_path / "c1.0.0.pkg"), check=False)
        assert r.returncode == 1 and "refusing a downgrade" in r.stderr
        rogue = Signer(str(tmp_path / "rogue"))
        r = g.cli("rollback", "counter", "1.0.0", "--key", rogue.prefix + ".key", check=False)
        assert r.returncode == 1 and "unknown key" in r.stderr
        r = g.cli("rollback", "counter", "1.0.0", "--key", signer.prefix + ".key")
        assert "counter@1.0.0 is running (rolled back from 2.0.0" in r.stdout
        assert [m["version"] for m in g.status()["modules"] if m["state"] == "running"] == ["1.0.0"]
        r = g.cli("install", str(tmp_path / "c2.0.0.pkg"), check=False)
        assert r.returncode == 1 and "was rolled back" in r.stderr
        assert '"rolled back by signed statement"' in g.logs()
    finally:
        g.stop()


def test_replayed_chunk_stream_and_rollback_over_mqtt(tmp_path, signer, broker):
    from test_mqtt import mqtt_gw
    g = mqtt_gw(tmp_path, signer, broker)
    deploy = "aegis/test/node/gw1/deploy"
    spy = Subscriber(broker, deploy, deploy + "/reply")
    try:
        pk1, pk2 = tmp_path / "c1.pkg", tmp_path / "c2.pkg"
        pk1.write_bytes(signer.example("counter", version="1.0.0"))
        pk2.write_bytes(signer.example("counter", version="2.0.0"))
        r = cli("push", str(pk1), "--to", "gw1", "--broker", broker.url, "--fleet", "test",
                timeout=120)
        captured = [p for t, p in list(spy.msgs) if t == deploy]
        assert captured, "no deploy messages seen"
        cli("push", str(pk2), "--to", "gw1", "--broker", broker.url, "--fleet", "test",
            timeout=120)
        assert [m["version"] for m in g.status()["modules"]] == ["2.0.0"]
        # An attacker replays the captured 1.0.0 chunk stream.
        n_logged = g.logs().count('"pushed module refused"')
        for p in captured:
            spy.publish(deploy, p)
        wait_for(lambda: g.logs().count('"pushed module refused"') > n_logged, timeout=20,
                 what="replayed stream refused")
        assert "older than the active 2.0.0" in g.logs()
        assert [m["version"] for m in g.status()["modules"] if m["state"] == "running"] == ["2.0.0"]
        # A signed rollback statement published on the deploy topic.
        out = str(tmp_path / "rb.stmt")
        cli("rollback", "counter", "1.0.0", "--from", "2.0.0", "--node", "gw1", "--key",
            signer.prefix + ".key", "--out", out)
        data = open(out, "rb").read()
        spy.publish(deploy, data)
        wait_for(lambda: [m["version"] for m in g.status()["modules"]
                          if m["state"] == "running"] == ["1.0.0"], timeout=20,
                 what="rollback over MQTT")
        wait_for(lambda: any(x.get("ok") and x.get("module") == "counter@1.0.0"
                             for x in [cbor.loads(p) for t, p in list(spy.msgs)
                                       if t.endswith("/reply")]),
                 timeout=20, what="rollback reply")
        # Replayed: refused, answered with the reason.
        spy.publish(deploy, data)
        wait_for(lambda: any(not x.get("ok") and "already used" in x.get("error", "")
                             for x in [cbor.loads(p) for t, p in list(spy.msgs)
                                       if t.endswith("/reply")]),
                 timeout=20, what="replayed statement refused")
        assert [m["version"] for m in g.status()["modules"] if m["state"] == "running"] == ["1.0.0"]
    finally:
        spy.close()
        g.stop()


def test_signed_rollback_leaves_no_way_back_to_the_bad_version(make_host, signer):
    """After 2.0.0 -> 1.0.0 by statement, 2.0.0 is not kept as the automatic
    rollback target either: if 1.0.0 traps later, nothing brings 2.0.0 back."""
    import time
    h = make_host(clock=lambda: time.time_ns() // 1000000)
    h.install(signer.fixture("echo.wasm", name="m", version="1.0.0"))
    h.install(signer.fixture("echo.wasm", name="m", version="2.0.0"))
    assert h.modules["m"].previous == "1.0.0"
    h.rollback(stmt(signer, "2.0.0", "1.0.0", name="m"))
    m = h.modules["m"]
    assert m.active.version == "1.0.0" and m.previous is None and m.blocked == ["2.0.0"]
