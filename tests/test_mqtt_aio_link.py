"""The gateway's asyncio MQTT driver (node/mqtt/aio_link.py) against a real
Mosquitto: MQTT 5 with "no local" and the broker's Receive Maximum, batched
writes, resend of unacked publishes across a broker restart, the will, the
3.1.1 fallback, and TLS / login / ACL refusals with their kinds."""
import asyncio
import os
import signal
import time

import pytest

from broker import Broker, Subscriber, broker  # noqa: F401 (fixture)
from node.mqtt import tls as T
from node.mqtt.aio_link import AioLink
from secure_broker import SecureBroker
from test_mqtt_v311 import OldBrokerFront


class Rec:
    """Collects what a link reports."""

    def __init__(self):
        self.msgs, self.acked, self.errors = [], [], []
        self.ups = self.downs = 0

    def link(self, url, **kw):
        def up():
            self.ups += 1
        def down():
            self.downs += 1
        return AioLink(url, kw.pop("client_id", "t-link"),
                       lambda t, p: self.msgs.append((t, p)), on_connect=up,
                       on_disconnect=down, on_puback=self.acked.extend,
                       on_error=lambda text, kind: self.errors.append((kind, text)), **kw)


async def until(cond, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.01)


async def publish_all(link, topic, payloads, what, timeout=30.0):
    """Publish each payload, waiting for room when the window is full."""
    pids = []
    for p in payloads:
        await until(lambda: link.room() > 0, what, timeout)
        pid = link.publish(topic, p)
        assert pid is not None
        pids.append(pid)
    return pids


def test_v5_no_local_window_and_batched_writes(broker):   # noqa: F811
    sub = Subscriber(broker, "t/#")
    r = Rec()

    async def main():
        link = r.link(broker.url, inflight=200).start()
        await until(lambda: link.connected, "CONNACK")
        assert link.protocol == 5
        # Mosquitto's default max_inflight_messages (20) is its Receive
        # Maximum: the window honours it, whatever we configured.
        assert link.c.window() == 20 and link.room() < 20
        link.subscribe(["t/#"], no_local=True)
        writes = []
        real = link._tr.write
        link._tr.write = lambda d: (writes.append(len(d)), real(d))
        payloads = [b"%05d" % i for i in range(500)]
        pids = await publish_all(link, "t/own", payloads, "room")
        await until(lambda: len(r.acked) == 500, "500 PUBACKs")
        assert sorted(r.acked) == sorted(pids)
        assert len(writes) < 400, "a write per publish: %d writes" % len(writes)
        # Inbound QoS 1 is acked once handled: far more than the broker's
        # window of 20 unacked messages arrives.
        # A message over our Maximum Packet Size (MQTT 5 CONNECT property)
        # is dropped by the broker, not sent to cost us the connection.
        sub.c.publish("t/other", b"x" * (2 << 20), qos=1)
        for i in range(100):
            sub.c.publish("t/other", b"%d" % i, qos=1)
        await until(lambda: len(r.msgs) == 100, "the other client's 100 messages")
        assert r.msgs == [("t/other", b"%d" % i) for i in range(100)]   # none of our own
        assert link.connects == 1 and r.downs == 0
        await link.stop()
        assert r.downs == 1

    asyncio.run(main())
    got = [p for t, p in sub.msgs if t == "t/own"]
    assert got == [b"%05d" % i for i in range(500)]     # all, in order
    sub.close()


def test_unacked_publishes_survive_a_broker_restart(tmp_path):
    b = Broker(tmp_path / "b").start()
    # A persistent subscriber's session, saved by a clean broker restart; it
    # is offline from now on, so the broker queues what it should get.
    sub = Persistent(b)
    deadline = time.monotonic() + 10
    while not sub.ready and time.monotonic() < deadline:
        time.sleep(0.02)
    sub.close()
    b.restart()
    r = Rec()
    sent = [b"m%04d" % i for i in range(80)]

    async def main():
        link = r.link(b.url, inflight=50).start()
        await until(lambda: link.connected, "CONNACK")
        # The broker hangs: a window's worth published now is never acked
        # (Mosquitto's Receive Maximum makes that 20), then it dies.
        os.kill(b.proc.pid, signal.SIGSTOP)
        k = link.room()
        await publish_all(link, "r/x", sent[:k], "room")
        assert link.c.inflight() == k and link.room() == 0
        b.kill()
        await until(lambda: not link.connected, "link notices the dead broker")
        assert link.publish("r/x", b"nope") is None     # the caller keeps it
        b.start()
        await until(lambda: link.connects == 2 and not link.c.inflight(),
                    "reconnect, and the unacked sent again and acked", timeout=30)
        assert r.ups == 2 and r.downs == 1
        await publish_all(link, "r/x", sent[k:], "room")
        await until(lambda: not link.c.inflight(), "all acked")
        await link.stop()

    try:
        asyncio.run(main())
        sub = Persistent(b)
        deadline = time.monotonic() + 20
        while len(sub.msgs) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for _, p in sub.msgs] == sent     # all, in order, once each
        sub.close()
    finally:
        b.kill()


class Persistent:
    def __init__(self, b):
        import paho.mqtt.client as mqtt
        self.msgs, self.ready = [], False
        c = self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="persist",
                                 clean_session=False)
        c.on_message = lambda c, u, m: self.msgs.append((m.topic, m.payload))
        c.on_connect = lambda c, u, f, rc, p: c.subscribe("r/#", 1)
        c.on_subscribe = lambda *a: setattr(self, "ready", True)
        c.connect("127.0.0.1", b.port)
        c.loop_start()

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_will_on_a_dropped_link_and_not_on_a_clean_stop(broker):   # noqa: F811
    sub = Subscriber(broker, "w/#")

    async def main():
        r = Rec()
        link = r.link(broker.url, will=("w/status", b"offline"), client_id="w1").start()
        await until(lambda: link.connected, "CONNACK")
        link._tr.abort()            # the connection dies without DISCONNECT
        await until(lambda: ("w/status", b"offline") in sub.msgs, "the will")
        await until(lambda: link.connected, "reconnect")
        await link.stop(last=("w/status", b"bye"))
        await until(lambda: ("w/status", b"bye") in sub.msgs, "the last status")

    asyncio.run(main())
    # A clean stop: the broker discarded the will (and `last` was retained).
    assert sub.msgs.count(("w/status", b"offline")) == 1
    late = Subscriber(broker, "w/status")
    deadline = time.monotonic() + 10
    while not late.msgs and time.monotonic() < deadline:
        time.sleep(0.02)
    assert late.msgs == [("w/status", b"bye")]
    late.close()
    sub.close()


def test_falls_back_to_311_and_keeps_working(broker):   # noqa: F811
    front = OldBrokerFront(broker.port)
    sub = Subscriber(broker, "f/#")
    r = Rec()

    async def main():
        link = r.link(front.url).start()
        await until(lambda: link.connected, "CONNACK on 3.1.1")
        assert link.protocol == 4 and front.levels[:2] == [5, 4]
        assert r.errors == []       # a fallback is not an error
        link.subscribe(["f/#"], no_local=True)      # ignored on 3.1.1
        await publish_all(link, "f/x", [b"1", b"2"], "room")
        await until(lambda: len(r.acked) == 2, "PUBACKs")
        await link.stop()

    try:
        asyncio.run(main())
        deadline = time.monotonic() + 10
        while len(sub.msgs) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sub.msgs == [("f/x", b"1"), ("f/x", b"2")]
    finally:
        sub.close()
        front.close()


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    b = SecureBroker(tmp_path_factory.mktemp("sb")).start()
    yield b
    b.kill()


def test_tls_login_and_acl_refusals_have_kinds(sb):
    async def refused(url, **kw):
        # A TLS 1.3 broker refuses a client certificate after the handshake;
        # when its reset overtakes the alert, that try is only "net": the
        # next tries report the refusal.
        r = Rec()
        link = r.link(url, **kw).start()
        await until(lambda: [e for e in r.errors if e[0] != "net"], "a refusal")
        assert not link.connected and link._slow      # backing off, slowly
        await link.stop()
        return [e for e in r.errors if e[0] != "net"][0]

    async def main():
        kind, text = await refused(sb.cert_url, ca=sb.prefix("rogue-gw1") + ".ca.crt",
                                   cert=sb.prefix("gw1"))
        assert kind == "tls" and "not trusted" in text, text
        kind, text = await refused(sb.cert_url, ca=sb.prefix("gw1") + ".ca.crt",
                                   cert=sb.prefix("rogue-gw1"))
        assert kind == "tls" and "refused our client certificate" in text, text
        kind, text = await refused(sb.cert_url, ca=sb.prefix("gw1") + ".ca.crt")
        assert kind == "tls" and "requires a client certificate" in text, text
        kind, text = await refused(sb.pw_url, ca=sb.prefix("gw1") + ".ca.crt",
                                   username="gw2", password="wrong")
        assert kind == "auth" and "refused the login" in text, text
        # Logged in as gw2: its own event tree is allowed, gw1's is not.
        r = Rec()
        link = r.link(sb.cert_url, cert=sb.prefix("gw2"), client_id="aegis-test-gw2").start()
        await until(lambda: link.connected, "mqtts CONNACK")
        assert r.errors == [] and link.last_error is None
        ok = link.publish("aegis/test/ev/gw2/x", b"\xa0")
        bad = link.publish("aegis/test/ev/gw1/x", b"\xa0")
        await until(lambda: {ok, bad} <= set(r.acked), "both answered")
        assert r.errors == [("denied", "the broker refused a publish: Not authorized")]
        await link.stop()

    asyncio.run(main())
    with pytest.raises(T.TlsFileError, match="need an mqtts"):
        Rec().link("mqtt://127.0.0.1:1", ca=sb.prefix("gw1") + ".ca.crt")


def test_unacked_v5_publishes_are_reencoded_for_311():
    from node.core import mqtt as M
    from node.mqtt.aio_link import _v311_publish
    for topic, payload in (("a", b""), ("aegis/t/ev/n/x", b"p" * 300)):
        packets = []
        for version in (5, 4):
            c = M.Client("x", clean_session=True, version=version)
            c.connect(0)
            c.receive_data(b"\x20\x02\x00\x00", 0)
            c.publish(topic, payload, qos=1)
            packets.append(bytes(c._inflight[0][1]))
        assert _v311_publish(bytearray(packets[0])) == packets[1]
