"""Signed rollback and removal statements on a board (real MicroPython
runtime, real Mosquitto, real `aegis proxy`), made by the real `aegis
rollback --out` / `aegis remove --key --out` and published on the board's
deploy topic, as for a gateway (docs/ROLLBACK.md): rollback to the kept
previous version, blocked versions refused and persisted on flash across
a kill -9, replays and bad statements refused with reasons, removal from
flash with the proxy host told; the same for a native (wasm3 on the
board) module; and a signed removal on a gateway."""
import hashlib
import os
import time

import cbor2

from broker import Subscriber, broker  # noqa: F401 (fixture)
from conftest import Signer
from gateway_proc import cli, wait_for
from host_sim.boards import ProxyHost, SourceBoard
from node.core import envelope as E, rollback as rb
from test_board_runtime import push, replies, request, status

DEPLOY = "aegis/test/node/b1/deploy"


def answers(sub, data, topic=DEPLOY + "/reply"):
    """Replies to statement `data` so far (id = sha256[:16] in hex)."""
    tid = hashlib.sha256(data).hexdigest()[:32]
    out = []
    for t, p in list(sub.msgs):
        if t == topic:
            m = cbor2.loads(p)
            if m.get("id") == tid:
                out.append(m)
    return out


def send(sub, data, topic=DEPLOY, timeout=30):
    """Publish statement `data` on `topic`; the new answer to it."""
    n = len(answers(sub, data, topic + "/reply"))
    sub.publish(topic, data)
    return wait_for(lambda: answers(sub, data, topic + "/reply")[n:], timeout,
                    "answer to a statement")[0]


def running(sub):
    st = status(sub)
    return [(m["name"], m["version"]) for m in st.get("modules", []) if m["state"] == "running"]


def sign_rollback(tmp_path, signer, frm, to, node="b1", name="facts"):
    out = str(tmp_path / ("rb-%s-%s.stmt" % (frm, to)))
    cli("rollback", name, to, "--from", frm, "--node", node, "--key", signer.prefix + ".key",
        "--out", out)
    return open(out, "rb").read()


def test_rollback_blocked_versions_and_removal_on_a_board(tmp_path, broker):
    op = Signer(str(tmp_path / "op"))
    sub = Subscriber(broker, "aegis/test/#")
    board = SourceBoard("b1", tmp_path / "b1", broker.url, [op.pub],
                        extra={"engine": "proxy", "status_ms": 1000})
    proxy = ProxyHost("gw-1", tmp_path / "gw", broker.url, [op.pub], ["b1"])
    pkgs = {}
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        pkgs[v] = tmp_path / ("f%s.pkg" % v)
        pkgs[v].write_bytes(op.example("facts", version=v))
    flash = os.path.join(board.work, "aegis")
    try:
        board.start()
        proxy.start()
        board.wait_for("connected to broker")
        wait_for(lambda: "proxy host connected" in proxy.logs(), 20, "proxy up")
        for v in ("1.0.0", "2.0.0"):
            r = push(broker, pkgs[v])
            assert r.returncode == 0 and "running on gw-1" in r.stdout, r.stdout + r.stderr
        wait_for(lambda: running(sub) == [("facts", "2.0.0")], 20, "2.0.0 running")
        # The board keeps the version before the active one, for a rollback.
        assert sorted(os.listdir(os.path.join(flash, "pkgs"))) == ["facts@1.0.0.pkg",
                                                                    "facts@2.0.0.pkg"]

        # Statements that must not apply, each answered with its reason.
        rogue = Signer(str(tmp_path / "rogue"))
        for data, why in (
                (sign_rollback(tmp_path, rogue, "2.0.0", "1.0.0"), "unknown key"),
                (sign_rollback(tmp_path, op, "2.0.0", "1.0.0", node="b2"), "for node 'b2'"),
                (sign_rollback(tmp_path, op, "3.0.0", "1.0.0"), "active version is 2.0.0"),
                (rb.make("facts", "2.0.0", "1.0.0", op.sign, op.raw, os.urandom(16),
                         int(time.time() * 1000) - 2 * rb.MAX_AGE_MS), "expired"),
                (sign_rollback(tmp_path, op, "2.0.0", "0.9.0"), "not on this board's flash"),
                (b"AEGISRB1\xff\x00", "rollback statement")):
            a = send(sub, data)
            assert not a["ok"] and why in a["error"], (why, a)
        assert running(sub) == [("facts", "2.0.0")]

        # The real one: back to 1.0.0, on the board and on its proxy host.
        # Sent as an operator would: `aegis push STATEMENT --to b1`.
        good = sign_rollback(tmp_path, op, "2.0.0", "1.0.0")
        n = len(answers(sub, good))
        r = push(broker, tmp_path / "rb-2.0.0-1.0.0.stmt")
        assert r.returncode == 0 and "b1: rollback applied: running" in r.stdout, \
            r.stdout + r.stderr
        a = wait_for(lambda: answers(sub, good)[n:], 10, "the answer")[0]
        assert a["ok"] and a["state"] == "running" and a["module"] == "facts@1.0.0", a
        wait_for(lambda: running(sub) == [("facts", "1.0.0")], 20, "1.0.0 in the status")
        assert "board statement applied" in proxy.logs()
        assert os.listdir(os.path.join(flash, "pkgs")) == ["facts@1.0.0.pkg"]
        request(sub, 1)
        wait_for(lambda: replies(sub), 20, "the rolled-back module answers")

        # Replays: the statement (nonce spent) and the newer package (blocked).
        a = send(sub, good)
        assert not a["ok"] and "already used" in a["error"], a
        r = push(broker, pkgs["2.0.0"])
        assert r.returncode == 1 and "was rolled back on this node" in r.stderr, r.stderr

        # Both survive a power cut (kill -9) of the board.
        board.kill()
        board.start()
        board.wait_for("connected to broker", count=2)
        wait_for(lambda: running(sub) == [("facts", "1.0.0")], 30, "1.0.0 after the restart")
        a = send(sub, good)
        assert not a["ok"] and "already used" in a["error"], a
        r = push(broker, pkgs["2.0.0"])
        assert r.returncode == 1 and "was rolled back on this node" in r.stderr, r.stderr
        r = push(broker, pkgs["3.0.0"])     # a fixed, newer version goes in as usual
        assert r.returncode == 0 and "running on gw-1" in r.stdout, r.stdout + r.stderr

        # Removal: `aegis remove --key` signs it; the board deletes the module
        # from flash, tells its proxy host, and republishes its status.
        out = str(tmp_path / "rm.stmt")
        cli("remove", "facts", "--from", "2.0.0", "--node", "b1", "--key", op.prefix + ".key",
            "--out", out)
        a = send(sub, open(out, "rb").read())
        assert not a["ok"] and "active version is 3.0.0" in a["error"], a
        cli("remove", "facts", "--from", "3.0.0", "--node", "b1", "--key", op.prefix + ".key",
            "--out", out)
        rm = open(out, "rb").read()
        n = len(answers(sub, rm))
        r = push(broker, out)
        assert r.returncode == 0 and "b1: remove applied: removed" in r.stdout, r.stdout + r.stderr
        a = wait_for(lambda: answers(sub, rm)[n:], 10, "the answer")[0]
        assert a["ok"] and a["state"] == "removed" and a["module"] == "facts@3.0.0", a
        wait_for(lambda: status(sub).get("modules") == [], 20, "status without the module")
        assert os.listdir(os.path.join(flash, "pkgs")) == []
        assert not os.path.exists(os.path.join(flash, "mods", "facts.cbor"))
        wait_for(lambda: proxy.logs().count("board statement applied") >= 2, 20, "host removed")
        assert not os.path.exists(os.path.join(proxy.dir, "store", "boards", "b1", "modules",
                                               "facts.cbor"))
        # Its event filter is unsubscribed: a request no longer reaches the
        # board.  The replayed statement after it is the sync point (same
        # publisher, in order): its refusal republishes the counts.
        c0 = status(sub)["counts"]
        n = len(replies(sub))
        request(sub, 2)
        r = push(broker, out)       # replayed: refused, exit 1 with the reason
        assert r.returncode == 1 and "b1 refused the remove" in r.stderr \
            and "already used" in r.stderr, r.stderr
        c1 = wait_for(lambda: status(sub)["counts"]["deploy_refused"] > c0["deploy_refused"]
                      and status(sub)["counts"], 20, "counts after the refusal")
        assert c1["received"] == c0["received"] and c1["proxy_ev"] == c0["proxy_ev"]
        assert len(replies(sub)) == n
        # The blocked version stays blocked after the removal.
        r = push(broker, pkgs["2.0.0"])
        assert r.returncode == 1 and "was rolled back on this node" in r.stderr, r.stderr
        assert board.proc.poll() is None and "runtime crashed" not in board.console()
    finally:
        proxy.stop()
        board.stop()
        sub.close()


def test_signed_removal_on_a_gateway_over_mqtt(tmp_path, signer, broker):
    from test_mqtt import mqtt_gw
    g = mqtt_gw(tmp_path, signer, broker)
    deploy = "aegis/test/node/gw1/deploy"
    spy = Subscriber(broker, deploy + "/reply")      # noqa: F841
    try:
        (tmp_path / "c.pkg").write_bytes(signer.example("counter", version="1.0.0"))
        cli("push", str(tmp_path / "c.pkg"), "--to", "gw1", "--broker", broker.url,
            "--fleet", "test", timeout=120)
        assert [m["version"] for m in g.status()["modules"]] == ["1.0.0"]
        out = str(tmp_path / "rm.stmt")
        cli("remove", "counter", "--from", "1.0.0", "--node", "gw1", "--key",
            signer.prefix + ".key", "--out", out)
        data = open(out, "rb").read()
        a = send(spy, data, deploy)
        assert a["ok"] and a["state"] == "removed", a
        assert g.status()["modules"] == []
        a = send(spy, data, deploy)
        assert not a["ok"] and "already used" in a["error"], a
        r = cli("remove", "counter", "--out", out, check=False)
        assert r.returncode == 2 and "need --key" in r.stderr
    finally:
        spy.close()
        g.stop()


def test_rollback_and_removal_of_a_native_module(tmp_path, broker):
    """The same statements for a module running in wasm3 on the board
    itself (native mode, no proxy host anywhere)."""
    op = Signer(str(tmp_path / "op"))
    sub = Subscriber(broker, "aegis/test/#")
    board = SourceBoard("b1", tmp_path / "b1", broker.url, [op.pub], heap="256K",
                        extra={"status_ms": 1000})
    seq = [0]

    def sensor():
        seq[0] += 1
        sub.publish("aegis/test/ev/tester/sensor/t1",
                    E.encode("tester", seq[0], int(time.time() * 1000), "sensor/t1",
                             cbor2.dumps(1), "op@1.0.0"))

    def totals(mod):
        return [e for e in (cbor2.loads(p) for t, p in list(sub.msgs)
                            if t == "aegis/test/ev/b1/count/total") if e["mod"] == mod]
    try:
        board.start()
        board.wait_for("connected to broker")
        for v in ("1.0.0", "2.0.0"):
            (tmp_path / ("c%s.pkg" % v)).write_bytes(op.example("counter", version=v))
            r = push(broker, tmp_path / ("c%s.pkg" % v))
            assert r.returncode == 0 and "(native)" in r.stdout, r.stdout + r.stderr + \
                board.console()[-2000:]
        sensor()
        wait_for(lambda: totals("counter@2.0.0"), 20, "2.0.0 counts natively")

        sign_rollback(tmp_path, op, "2.0.0", "1.0.0", name="counter")
        r = push(broker, tmp_path / "rb-2.0.0-1.0.0.stmt")
        assert r.returncode == 0 and "b1: rollback applied: running" in r.stdout, \
            r.stdout + r.stderr
        wait_for(lambda: [m for m in status(sub).get("modules", [])
                          if m["version"] == "1.0.0" and m["mode"] == "native"], 20,
                 "1.0.0 native in the status")
        sensor()
        wait_for(lambda: totals("counter@1.0.0"), 20, "1.0.0 counts natively")
        r = push(broker, tmp_path / "c2.0.0.pkg")
        assert r.returncode == 1 and "was rolled back on this node" in r.stderr, r.stderr

        out = str(tmp_path / "rm.stmt")
        cli("remove", "counter", "--from", "1.0.0", "--key", op.prefix + ".key", "--out", out)
        r = push(broker, out)
        assert r.returncode == 0 and "b1: remove applied: removed" in r.stdout, \
            r.stdout + r.stderr
        wait_for(lambda: status(sub).get("modules") == [], 20, "status without the module")
        # No module and no subscription left: a sensor event reaches nothing
        # (the replayed removal after it is the sync point, as above).
        c0 = status(sub)["counts"]
        n = len(totals("counter@1.0.0"))
        sensor()
        r = push(broker, out)
        assert r.returncode == 1 and "already used" in r.stderr, r.stderr
        c1 = wait_for(lambda: status(sub)["counts"]["deploy_refused"] > c0["deploy_refused"]
                      and status(sub)["counts"], 20, "counts after the refusal")
        assert c1["received"] == c0["received"] and len(totals("counter@1.0.0")) == n
        assert not os.listdir(os.path.join(board.work, "aegis", "pkgs"))
        assert "Traceback" not in board.console(), board.console()[-2000:]
    finally:
        board.stop()
        sub.close()
