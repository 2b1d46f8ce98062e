# MQTT 5 in the sans-I/O client (node/core/mqtt.py, version=5), on CPython
# and MicroPython: byte-exact packets, properties checked and skipped, reason
# codes, the broker's Receive Maximum, and the 3.1.1 broker's refusal that
# makes a driver fall back.  The real-broker proof is tests/test_mqtt_aio_link.py.
from helpers import raises

from node.core.mqtt import (Client, Connected, ConnectRefused, Message,
                            MQTTError, ProtocolError, Published, Subscribed)
from node.core.mqtt5 import Disconnected

CONNECTED, CLOSED = 2, 3    # Client.state (node/core/mqtt.py)

# Mosquitto 2.0's CONNACK to a level 5 CONNECT (captured from a socket):
# topic alias maximum 10, receive maximum 20.
MOSQUITTO_CONNACK = bytes.fromhex("200900000622000a210014")


def h(s):
    return bytes.fromhex(s)


def drain(c):
    return c.events()


def connected(connack=MOSQUITTO_CONNACK, **kw):
    kw.setdefault("clean_session", True)
    c = Client("gw", version=5, **kw)
    c.connect(0)
    c.data_to_send()
    c.receive_data(connack, 0)
    evs = drain(c)
    assert len(evs) == 1 and type(evs[0]) is Connected, evs
    return c


def test_connect_v5_bytes():
    c = Client("gw", keepalive=15, clean_session=True, version=5, max_packet=70000)
    c.connect(0)
    # properties: Maximum Packet Size 70000
    assert bytes(c.data_to_send()) == (h("1014") + b"\x00\x04MQTT\x05\x02\x00\x0f"
                                       + h("052700011170") + b"\x00\x02gw")
    c = Client("gw", keepalive=15, version=5, will=("s", b"off", 1, True), username="u",
               password="p", max_packet=70000)
    c.connect(0)
    # flags: user, password, will retain, will QoS 1, will; session expiry
    # "never" (a kept session), empty will properties.
    assert bytes(c.data_to_send()) == (h("1028") + b"\x00\x04MQTT\x05\xec\x00\x0f"
                                       + h("0a2700011170") + h("11ffffffff") + b"\x00\x02gw"
                                       + b"\x00" + b"\x00\x01s\x00\x03off\x00\x01u\x00\x01p")
    assert raises(MQTTError, Client, "gw", version=6)


def test_connack_properties_set_the_window():
    c = connected(max_inflight=200)
    assert c.receive_max == 20 and c.window() == 20
    for i in range(20):
        assert c.publish("t", b"x", qos=1) == i + 1
    assert c.publish("t", b"x", qos=1) is None      # the broker's limit, not ours
    c.reset()
    assert c.window() == 200                        # until the next CONNACK says


def test_connack_keepalive_from_the_broker_wins():
    c = connected(h("200600000313003c"), keepalive=15)
    assert c.keepalive == 60


def test_publish_subscribe_unsubscribe_v5_bytes():
    c = connected()
    assert c.publish("a", b"hi", qos=1) == 1
    assert bytes(c.data_to_send()) == h("3208") + b"\x00\x01a\x00\x01\x00hi"
    c.publish("a", b"hi", qos=0)
    assert bytes(c.data_to_send()) == h("3006") + b"\x00\x01a\x00hi"
    s = c.subscribe([("a/#", 1, True), ("b", 0)])
    assert bytes(c.data_to_send()) == (h("820d") + s.to_bytes(2, "big") + b"\x00"
                                       + b"\x00\x03a/#\x05" + b"\x00\x01b\x00")
    u = c.unsubscribe(["a/#"])
    assert bytes(c.data_to_send()) == h("a208") + u.to_bytes(2, "big") + b"\x00\x00\x03a/#"


def test_no_local_is_ignored_on_311():
    c = Client("n", clean_session=True)
    c.connect(0)
    c.receive_data(h("20020000"), 0)
    c.data_to_send()
    s = c.subscribe([("a", 1, True)])
    assert bytes(c.data_to_send()) == h("8206") + s.to_bytes(2, "big") + b"\x00\x01a\x01"


def test_puback_reason_codes_and_properties():
    c = connected()
    p1 = c.publish("a", b"1", qos=1)
    p2 = c.publish("a", b"2", qos=1)
    p3 = c.publish("a", b"3", qos=1)
    # bare (success), "not authorized", "no matching subscribers" + a reason string
    c.receive_data(bytes([0x40, 2, 0, p1]) + bytes([0x40, 3, 0, p2, 0x87])
                   + bytes([0x40, 8, 0, p3, 0x10, 4, 0x1F, 0, 1]) + b"x", 0)
    evs = drain(c)
    assert [(type(e), e.packet_id, e.code) for e in evs] == [
        (Published, p1, 0), (Published, p2, 0x87), (Published, p3, 0x10)]
    assert c.inflight() == 0


def test_suback_v5_with_properties_and_refusal_codes():
    c = connected()
    s = c.subscribe([("a", 1), ("b", 1)])
    c.receive_data(bytes([0x90, 5, 0, s, 0, 1, 0x87]), 0)
    evs = drain(c)
    assert type(evs[0]) is Subscribed and evs[0].granted == [1, 0x87]


def test_inbound_publish_with_properties():
    c = connected()
    # payload format indicator 1, user property ("k", "v"), then the payload
    props = b"\x01\x01" + b"\x26\x00\x01k\x00\x01v"
    body = b"\x00\x03a/b" + b"\x00\x07" + bytes([len(props)]) + props + b"data"
    c.receive_data(bytes([0x32, len(body)]) + body, 0)
    evs = drain(c)
    assert type(evs[0]) is Message and evs[0].topic == "a/b"
    assert bytes(evs[0].payload) == b"data" and evs[0].packet_id == 7


def test_bad_properties_are_protocol_errors():
    for bad in (b"\x00\x01a\x00\x07\x02\x01",              # list overruns the packet
                b"\x00\x01a\x00\x07\x02\x7f\x00",          # unknown property id
                b"\x00\x01a\x00\x07\x03\x26\x00\x05"):     # truncated string pair
        c = connected()
        c.receive_data(bytes([0x32, len(bad)]) + bad, 0)
        evs = drain(c)
        assert len(evs) == 1 and type(evs[0]) is ProtocolError, evs
        assert c.state == CLOSED


def test_broker_disconnect_v5_and_not_on_311():
    c = connected()
    c.receive_data(h("e0018b"), 0)
    evs = drain(c)
    assert type(evs[0]) is Disconnected and evs[0].code == 0x8B and "0x8b" in evs[0].text
    assert c.state == CLOSED
    c = Client("n", clean_session=True)
    c.connect(0)
    c.receive_data(h("20020000"), 0)
    drain(c)
    c.receive_data(h("e000"), 0)
    assert type(drain(c)[-1]) is ProtocolError


def test_refusals_in_both_forms():
    # A 3.1.1 broker answering our level 5 CONNECT: code 1, the fall-back cue.
    c = Client("gw", clean_session=True, version=5)
    c.connect(0)
    c.receive_data(h("20020001"), 0)
    ev = drain(c)[0]
    assert type(ev) is ConnectRefused and ev.code == 1 and "protocol version" in ev.text
    c = Client("gw", clean_session=True, version=5)
    c.connect(0)
    c.receive_data(h("2003008600"), 0)
    ev = drain(c)[0]
    assert type(ev) is ConnectRefused and ev.text == "bad user name or password"
    assert c.state == CLOSED


def test_unacked_resent_after_reconnect_v5():
    c = connected(max_inflight=4)
    c.publish("a", b"1", qos=1)
    c.data_to_send()
    c.reset()
    c.connect(0)
    c.data_to_send()
    c.receive_data(MOSQUITTO_CONNACK, 0)
    assert type(drain(c)[0]) is Connected
    assert bytes(c.data_to_send()) == h("3a07") + b"\x00\x01a\x00\x01\x00" + b"1"   # DUP


def test_events_batch_and_many_pubacks_at_once():
    c = connected(h("20020000"), max_inflight=300)
    pids = [c.publish("t", b"x", qos=1) for _ in range(300)]
    c.data_to_send()
    c.receive_data(b"".join(bytes([0x40, 2]) + p.to_bytes(2, "big") for p in pids), 0)
    evs = c.events()
    assert [e.packet_id for e in evs] == pids and c.events() == [] and c.inflight() == 0
    assert c.publish("t", b"x", qos=1) not in pids[-1:]
