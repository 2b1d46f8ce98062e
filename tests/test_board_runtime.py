"""The board runtime (node/board/) on the real MicroPython binary with a
Pico W sized heap, a real Mosquitto and a real `aegis proxy`: refused
pushes, hostile messages, port and emit capabilities enforced by the
board, restarts of the board (kill -9) and of the proxy host, and a 64 KiB
module push.  Everything waits on conditions with deadlines."""
import os
import subprocess
import sys
import time

import cbor2

from broker import Subscriber, broker  # noqa: F401 (fixture)
from conftest import ROOT, Signer, example
from gateway_proc import wait_for
from host_sim.boards import ProxyHost, SourceBoard
from node.core import envelope as E
from test_mqtt_push import pad

BASE = "aegis/test/node/b1/"


def push(broker, path, to="b1", timeout=60):
    return subprocess.run([sys.executable, "-m", "node.cli.main", "push", str(path), "--to", to,
                           "--broker", broker.url, "--fleet", "test", "--timeout", str(timeout)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60)


def status(sub, node="b1"):
    st = [cbor2.loads(p) for t, p in list(sub.msgs) if t == "aegis/test/node/%s/status" % node]
    return st[-1] if st else {}


def request(sub, seq, src="tester"):
    env = E.encode(src, seq, int(time.time() * 1000), "facts/request", b"", "op@1.0.0")
    sub.publish("aegis/test/ev/%s/facts/request" % src, env)


def replies(sub, node="b1"):
    return [cbor2.loads(p) for t, p in list(sub.msgs)
            if t == "aegis/test/ev/%s/facts/reply" % node]


def up(sub):
    return [cbor2.loads(p) for t, p in list(sub.msgs) if t == BASE + "proxy/up"]


def test_refused_pushes_and_hostile_messages(tmp_path, broker):
    op, stranger = Signer(str(tmp_path / "op")), Signer(str(tmp_path / "stranger"))
    sub = Subscriber(broker, "aegis/test/#")
    board = SourceBoard("b1", tmp_path / "b1", broker.url, [op.pub])
    try:
        board.start()
        board.wait_for("connected to broker")
        wait_for(lambda: status(sub).get("online"), 20, "board online")

        (tmp_path / "s.pkg").write_bytes(stranger.example("facts"))
        r = push(broker, tmp_path / "s.pkg")
        assert r.returncode == 1 and "signed by an unknown key" in r.stderr, r.stderr

        good = op.example("facts")
        n = int.from_bytes(good[8:12], "big")
        hdr = cbor2.loads(good[12:12 + n])
        sig = bytearray(hdr["sig"])
        sig[5] ^= 0x40
        hdr["sig"] = bytes(sig)
        h2 = cbor2.dumps(hdr, canonical=True)
        (tmp_path / "t.pkg").write_bytes(good[:8] + len(h2).to_bytes(4, "big") + h2
                                         + good[12 + n:])
        r = push(broker, tmp_path / "t.pkg")
        assert r.returncode == 1 and "bad signature" in r.stderr, r.stderr

        # Garbage everywhere the board listens; it keeps serving.
        for topic, payload in ((BASE + "deploy", b"\xff\x00garbage"),
                               (BASE + "deploy", cbor2.dumps({"t": "chunk", "id": "0" * 32})),
                               (BASE + "proxy/down", b"\x9f\x9f\x9f"),
                               (BASE + "proxy/down", cbor2.dumps({"t": "call", "id": 1,
                                                                  "mod": "nope@1.0.0",
                                                                  "port": "facts", "d": b""})),
                               (BASE + "proxy/down", cbor2.dumps({"t": "emit", "mod": "x@1.0.0",
                                                                  "topic": "a/b", "d": b""}))):
            sub.publish(topic, payload)
        # The unknown module's call is answered EPERM, not run.
        wait_for(lambda: [m for m in up(sub) if m.get("t") == "res" and m["id"] == 1], 20,
                 "EPERM answer")
        assert [m["r"] for m in up(sub) if m.get("t") == "res"] == [-2]
        # A fresh status (any module change publishes one; force one with a
        # refused push) counts what was dropped.
        r = push(broker, tmp_path / "s.pkg")
        c = wait_for(lambda: status(sub).get("counts", {}).get("deploy_refused", 0) >= 3
                     and status(sub)["counts"], 20, "fresh counts")
        assert c["deploy_bad_messages"] >= 1        # the undecodable deploy message
        assert c["bad_messages"] >= 1               # the undecodable proxy message
        assert c["proxy_denied"] >= 2               # call and emit of an unknown module
        assert c["forwarded"] == 0 and board.proc.poll() is None
        assert not [t for t, _ in sub.msgs if t.startswith("aegis/test/ev/b1/")]
    finally:
        board.stop()
        sub.close()


def test_proxy_mode_capabilities_restarts_and_a_64k_push(tmp_path, broker):
    op = Signer(str(tmp_path / "op"))
    sub = Subscriber(broker, "aegis/test/#")
    board = SourceBoard("b1", tmp_path / "b1", broker.url, [op.pub],
                        extra={"heap_probe": True, "status_ms": 1000, "engine": "proxy"})
    proxy = ProxyHost("gw-1", tmp_path / "gw", broker.url, [op.pub], ["b1"])
    try:
        board.start()
        proxy.start()
        board.wait_for("connected to broker")
        wait_for(lambda: "proxy host connected" in proxy.logs(), 20, "proxy up")
        (tmp_path / "f.pkg").write_bytes(op.example("facts"))
        r = push(broker, tmp_path / "f.pkg")
        assert r.returncode == 0 and "running on gw-1 (proxy)" in r.stdout, r.stdout + r.stderr
        # Pushing the same package again is a no-op answered at once.
        r = push(broker, tmp_path / "f.pkg")
        assert r.returncode == 0 and "already active" in r.stdout, r.stdout + r.stderr

        # An envelope whose src does not match its topic, and a repeat: dropped.
        sub.publish("aegis/test/ev/liar/facts/request",
                    E.encode("other", 1, 1, "facts/request", b"", "a@1.0.0"))
        request(sub, 1)
        request(sub, 1)
        wait_for(lambda: replies(sub), 20, "first reply")
        c = wait_for(lambda: status(sub)["counts"].get("bad_envelopes")
                     and status(sub)["counts"].get("dups") and status(sub)["counts"],
                     20, "status counting the bad envelope and the repeat")
        assert c["dups"] == 1 and c["received"] == 1 and c["bad_envelopes"] == 1

        # The board enforces the manifest even against its own proxy topic:
        # facts may call only port "facts" and emit only under facts/reply.
        sub.publish(BASE + "proxy/down", cbor2.dumps(
            {"t": "call", "id": 77, "mod": "facts@1.0.0", "port": "led", "d": b"\x01"}))
        sub.publish(BASE + "proxy/down", cbor2.dumps(
            {"t": "emit", "mod": "facts@1.0.0", "topic": "alarm/fire", "d": b"", "b": 1, "n": 1}))
        res = wait_for(lambda: [m for m in up(sub) if m.get("t") == "res" and m["id"] == 77],
                       20, "EPERM for an ungranted port")
        assert res[0]["r"] == -2

        # kill -9 the board: it comes back with its module from flash, hands
        # it to the proxy again (a no-op there), and its seq never goes back.
        before = max(e["seq"] for e in replies(sub))
        board.kill()
        board.start()
        board.wait_for("module facts@1.0.0 running (proxy)", 30)
        request(sub, 2)
        # (An event whose PUBACK came but whose ack was not yet flushed is
        # sent again after the kill: at-least-once, receivers dedup by seq.)
        fresh = wait_for(lambda: [e for e in replies(sub) if e["seq"] > before], 30,
                         "a reply with a new seq after the board restart")
        assert fresh[0]["seq"] >= 1000      # the next reserved block: never reused

        # The proxy host restarts: it restores the board's module from its
        # own store and serves the board again.
        proxy.stop()
        proxy.start()
        wait_for(lambda: proxy.logs().count("proxy host connected") >= 2, 40,
                 "proxy back: " + proxy.logs()[-1500:])
        request(sub, 3)
        wait_for(lambda: len({e["seq"] for e in replies(sub)}) >= 3, 30,
                 "reply after the proxy restart")
        assert not [e for e in replies(sub) if e["topic"] != "facts/reply"]
        assert len({e["seq"] for e in replies(sub)}) == 3   # liar and repeat dropped

        assert not [t for t, _ in sub.msgs if t == "aegis/test/ev/b1/alarm/fire"]

        # A 64 KiB module (1 KiB chunks into flash) on a 192 KiB heap.
        t, wasm = example("facts")
        big = op.pack("facts", "1.1.0", pad(wasm, 64 * 1024), t["subscribe"], t["emit"],
                      t["ports"])
        (tmp_path / "big.pkg").write_bytes(big)
        r = push(broker, tmp_path / "big.pkg", timeout=120)
        assert r.returncode == 0 and "running on gw-1 (proxy)" in r.stdout, r.stdout + r.stderr
        request(sub, 4)
        wait_for(lambda: [e for e in replies(sub) if e["mod"] == "facts@1.1.0"], 30,
                 "reply from 1.1.0")
        st = wait_for(lambda: [m for m in status(sub)["modules"] if m["version"] == "1.1.0"]
                      and status(sub), 20, "status with 1.1.0")
        assert st["counts"]["heap_peak"] < 192 * 1024
        store = tmp_path / "b1" / "fs" / "aegis"
        # The version before the active one stays, as the rollback target.
        assert sorted(os.listdir(store / "pkgs")) == ["facts@1.0.0.pkg", "facts@1.1.0.pkg"]
        assert not [f for f in os.listdir(store / "incoming") if f.endswith(".part")]
        print("board heap peak during the 64 KiB push: %d bytes" % st["counts"]["heap_peak"])

        # The board is gone: a port call gets no answer and the module sees
        # EIO after call_timeout_s (3 s here), not a hang.  The event comes
        # up as the board would send it.
        board.kill()
        t0 = time.monotonic()
        sub.publish(BASE + "proxy/up", cbor2.dumps(
            {"t": "ev", "topic": "facts/request", "d": b"", "src": "tester",
             "mod": "op@1.0.0", "b": 12345, "n": 1}))
        wait_for(lambda: "port call failed" in proxy.logs(), 30, "the module's EIO warning")
        assert time.monotonic() - t0 >= 2.5
    finally:
        proxy.stop()
        board.stop()
        sub.close()
        print(board.console()[-3000:], proxy.logs()[-3000:])
