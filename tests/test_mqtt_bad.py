"""Hostile and broken input on a node's MQTT topics: clear log lines and
counters, the node keeps serving, nothing already accepted is lost."""
import hashlib
import subprocess

import cbor2

from broker import Subscriber, broker  # noqa: F401 (fixture)
from conftest import Signer
from gateway_proc import cli, wait_for
from test_mqtt import envelope, install_counter, mqtt_gw, mqtt_stats

DEPLOY = "aegis/test/node/gw1/deploy"


def msg(t, tid, **kw):
    kw.update(t=t, id=tid)
    return cbor2.dumps(kw, canonical=True)


def logged(g, text):
    return [x for x in g.log_lines() if text in x["msg"] + str(x.get("error", ""))]


def test_bad_envelopes_and_duplicate_floods(tmp_path, signer, broker):
    g = mqtt_gw(tmp_path, signer, broker)
    sub = Subscriber(broker, "aegis/test/ev/gw1/#")
    try:
        install_counter(g, signer, tmp_path)
        sub.publish("aegis/test/ev/ext/sensor/x", envelope("ext", 1, "sensor/x", b"ok"))
        wait_for(lambda: mqtt_stats(g)["received"] == 1, what="good envelope")
        garbage = [b"\xff\x00garbage", b"", cbor2.dumps([1, 2]),
                   cbor2.dumps({"src": "ext", "seq": -1, "ts": 1, "topic": "sensor/x",
                                "data": b"", "mod": "a@1"}),
                   envelope("spoof", 2, "sensor/x", b""),     # src != topic's node
                   envelope("ext", 3, "sensor/y", b""),       # topic mismatch
                   envelope("ext", 4, "sensor/x", b"x" * 70000)]
        for b in garbage:
            sub.publish("aegis/test/ev/ext/sensor/x", b)
        # mosquitto_pub, the plain command-line client, works too.
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
                        "-t", "aegis/test/ev/ext/sensor/x", "-m", "not cbor"], check=True,
                       timeout=10)
        wait_for(lambda: mqtt_stats(g)["bad_envelopes"] == len(garbage) + 1,
                 what="garbage counted")
        assert logged(g, "bad envelope dropped")
        assert any("arrived on" in x["error"] for x in logged(g, "bad envelope dropped"))
        for _ in range(3):
            for seq in range(1, 51):
                sub.publish("aegis/test/ev/ext/sensor/x", envelope("ext", seq, "sensor/x", b""),
                            qos=0)
        sub.publish("aegis/test/ev/ext/sensor/x", envelope("ext", 60, "sensor/x", b""))
        wait_for(lambda: mqtt_stats(g)["received"] == 51, what="51 distinct events")
        wait_for(lambda: mqtt_stats(g)["dups"] == 101, what="101 repeats dropped")
        # Still serving: every accepted event was counted and forwarded.
        evs = wait_for(lambda: len(sub.envelopes()) == 51 and sub.envelopes(),
                       what="51 counts forwarded")
        assert cbor2.loads(evs[-1]["data"]) == 51
        assert g.proc.poll() is None
    finally:
        sub.close()
        g.stop()


def test_bad_chunks_and_bad_signature_stream(tmp_path, signer, broker):
    g = mqtt_gw(tmp_path, signer, broker)
    sub = Subscriber(broker, "aegis/test/node/gw1/deploy/reply")
    try:
        install_counter(g, signer, tmp_path)
        pkg = signer.example("counter", version="1.1.0")
        sha = hashlib.sha256(pkg).digest()
        tid = sha[:16].hex()
        sub.publish(DEPLOY, b"\x00junk")
        sub.publish(DEPLOY, msg("chunk", tid, i=0, d=b"x", h=b"\0" * 8))   # no offer yet
        sub.publish(DEPLOY, msg("offer", tid, o=1, size=len(pkg), sha256=sha, chunk=256,
                                win=4, name="counter", version="1.1.0"))
        n = (len(pkg) + 255) // 256
        sub.publish(DEPLOY, msg("chunk", tid, i=n + 5, d=b"x" * 256, h=b"\0" * 8))  # range
        sub.publish(DEPLOY, msg("chunk", tid, i=0, d=b"x" * 100, h=b"\0" * 8))      # size
        sub.publish(DEPLOY, msg("chunk", tid, i=0, d=pkg[:256], h=b"\0" * 8))       # hash
        wait_for(lambda: len(logged(g, "transfer problem")) >= 5, what="problems logged")
        def replies():
            return [cbor2.loads(p) for _, p in list(sub.msgs)]
        wait_for(lambda: {"unknown", "bad"} <= {r.get("code") for r in replies()},
                 what="error replies")
        wait_for(lambda: any(r.get("bad") == [0] for r in replies()), what="bad-chunk ack")
        text = " ".join(x["error"] for x in logged(g, "transfer problem"))
        assert "out of range" in text and "must be 256 bytes" in text and "hash" in text
        # A flood of one valid chunk: written once, the repeats only counted.
        good0 = msg("chunk", tid, i=0, d=pkg[:256], h=hashlib.sha256(pkg[:256]).digest()[:8])
        for _ in range(100):
            sub.publish(DEPLOY, good0, qos=0)
        sub.publish(DEPLOY, good0)
        wait_for(lambda: mqtt_stats(g)["deploy_dup_chunks"] == 100, what="100 repeats counted")
        # A whole package whose signature fails: refused with the reason.
        rogue = Signer(str(tmp_path / "rogue"))
        bad = tmp_path / "bad.pkg"
        bad.write_bytes(rogue.example("counter", version="1.2.0"))
        r = cli("push", str(bad), "--to", "gw1", "--broker", broker.url, "--fleet", "test",
                check=False)
        assert r.returncode == 1 and "unknown key" in r.stderr
        # The node still serves and still runs what it had.
        good = tmp_path / "good.pkg"
        good.write_bytes(pkg)
        r = cli("push", str(good), "--to", "gw1", "--broker", broker.url, "--fleet", "test",
                "--chunk", "256", check=False)
        assert r.returncode == 0, r.stderr
        assert [m["version"] for m in g.status()["modules"]] == ["1.1.0"]
        st = mqtt_stats(g)
        assert st["deploy_refused"] == 1 and st["deploy_installed"] == 1
        assert st["deploy_bad_messages"] >= 5
    finally:
        sub.close()
        g.stop()


def test_duplicates_are_dropped_across_a_gateway_restart(tmp_path, signer, broker):
    """The dedup windows are persisted: a redelivery after a restart (a
    bridge, a QoS 1 resend) does not reach the modules twice."""
    g = mqtt_gw(tmp_path, signer, broker)
    sub = Subscriber(broker, "aegis/test/ev/gw1/#")
    try:
        install_counter(g, signer, tmp_path)
        for seq in range(1, 11):
            sub.publish("aegis/test/ev/ext/sensor/x", envelope("ext", seq, "sensor/x", b""))
        wait_for(lambda: mqtt_stats(g)["received"] == 10, what="10 envelopes")
        g.stop()            # SIGTERM: a clean stop saves the windows
        g.start()
        wait_for(lambda: g.logs().count('"mqtt connected"') >= 2, what="mqtt reconnected")
        assert logged(g, "dedup state restored")
        for seq in range(1, 12):
            sub.publish("aegis/test/ev/ext/sensor/x", envelope("ext", seq, "sensor/x", b""))
        wait_for(lambda: mqtt_stats(g)["received"] == 1, what="only the new envelope")
        wait_for(lambda: mqtt_stats(g)["dups"] == 10, what="10 repeats dropped")
    finally:
        sub.close()
        g.stop()


def test_event_over_the_brokers_packet_limit_is_dropped_not_the_stream(tmp_path, signer):
    """A broker with a Maximum Packet Size (MQTT 5 CONNACK) would drop the
    connection over a bigger PUBLISH, again after every resend: that one
    event is dropped and counted, the events after it still go out."""
    from broker import Broker
    b = Broker(str(tmp_path / "broker"), extra="max_packet_size 2000\n").start()
    try:
        g = mqtt_gw(tmp_path, signer, b)
        sub = Subscriber(b, "aegis/test/ev/gw1/#")
        try:
            p = tmp_path / "echo.pkg"
            p.write_bytes(signer.fixture("echo.wasm", name="echo", emit=("echo/",)))
            g.cli("install", str(p))
            g.cli("emit", "in/small", "--json", '"a"')
            g.cli("emit", "in/big", "--json", '"%s"' % ("x" * 3000))
            g.cli("emit", "in/after", "--json", '"b"')
            wait_for(lambda: mqtt_stats(g)["too_big"] == 1, what="big event counted")
            got = wait_for(lambda: len(sub.msgs) >= 2 and sub.msgs, what="small events")
            assert [t for t, _ in got] == ["aegis/test/ev/gw1/echo/in/small",
                                           "aegis/test/ev/gw1/echo/in/after"]
            assert logged(g, "Maximum Packet Size")
            wait_for(lambda: mqtt_stats(g)["outbox_len"] == 0, what="outbox empty")
            assert g.logs().count('"mqtt connected"') == 1     # never knocked off
        finally:
            sub.close()
            g.stop()
    finally:
        b.kill()
