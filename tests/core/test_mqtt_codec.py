# The sans-I/O MQTT client (node/core/mqtt.py), on CPython and MicroPython.
# Byte-exact encodings, every server packet, fragmentation, the QoS 1 window
# and its resend, keepalive, and hostile input.  The real-broker proof is
# tests/test_board_mqtt.py; these pin the wire format and the edge cases.
from helpers import raises

from node.core import mqtt
from node.core.mqtt import (Client, Connected, ConnectRefused, Message, MQTTError,
                            PingTimeout, ProtocolError, Published, Subscribed,
                            Unsubscribed)

CONNECTED, CLOSED = 2, 3    # Client.state (node/core/mqtt.py)

# paho-mqtt 2.2.0's CONNECT for the same arguments (captured once from a
# socket): client "node-1", clean_session=False, keepalive 30, will
# ("aegis/acme/node/node-1/status", b"offline", 1, retain), alice / s3cret.
PAHO_CONNECT_FULL = bytes.fromhex(
    "104900044d51545404ec001e00066e6f64652d31001d61656769732f61636d652f6e6f"
    "64652f6e6f64652d312f73746174757300076f66666c696e650005616c696365000673"
    "3363726574")
PAHO_CONNECT_PLAIN = bytes.fromhex("101200044d5154540400001e00066e6f64652d31")

CONNACK = b"\x20\x02\x00\x00"


def h(s):
    return bytes.fromhex(s)


def drain(c):
    out = []
    while True:
        ev = c.next_event()
        if ev is None:
            return out
        out.append(ev)


def connected(**kw):
    c = Client("node-1", **kw)
    c.connect(0)
    c.data_to_send()
    c.receive_data(CONNACK, 0)
    evs = drain(c)
    assert len(evs) == 1 and type(evs[0]) is Connected
    return c


def pub_packet(topic, payload, qos=0, pid=0, retain=False, dup=False):
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + (pid.to_bytes(2, "big") if qos else b"") + payload
    first = 0x30 | (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    return bytes(mqtt._packet(first, (body,), len(body)))


def one_error(c, data):
    c.receive_data(data, 0)           # must not raise
    evs = drain(c)
    assert len(evs) == 1 and type(evs[0]) is ProtocolError, evs
    assert c.state == CLOSED
    c.receive_data(CONNACK + b"\x00" * 10, 0)   # ignored until reset()
    assert drain(c) == []
    return evs[0].text


# --- encoding ----------------------------------------------------------------

def test_connect_with_will_and_auth_matches_paho():
    c = Client("node-1", keepalive=30, will=("aegis/acme/node/node-1/status", b"offline", 1, True),
               username="alice", password="s3cret")
    c.connect(0)
    assert bytes(c.data_to_send()) == PAHO_CONNECT_FULL
    assert c.data_to_send() == b""


def test_connect_plain_matches_paho():
    c = Client("node-1", keepalive=30)
    c.connect(0)
    assert bytes(c.data_to_send()) == PAHO_CONNECT_PLAIN


def test_connect_clean_session_flag_and_argument_checks():
    c = Client("", clean_session=True, keepalive=0)
    c.connect(0)
    assert bytes(c.data_to_send()) == h("100c00044d51545404020000") + b"\x00\x00"
    raises(MQTTError, Client, "")                       # empty id needs clean session
    raises(MQTTError, Client, "x", password="p")        # password without user
    raises(MQTTError, Client, "x", will=("a/#", b"", 0, False))
    raises(MQTTError, c.connect, 0)                     # twice on one connection


def test_publish_subscribe_unsubscribe_disconnect_bytes():
    c = connected()
    assert c.publish("a/b", b"hi", qos=0) == 0
    assert bytes(c.data_to_send()) == h("3007") + b"\x00\x03a/bhi"
    pid = c.publish("a/b", "hi", qos=1, retain=True)
    assert pid == 1
    assert bytes(c.data_to_send()) == h("3309") + b"\x00\x03a/b\x00\x01hi"
    assert c.subscribe([("a/+", 1), ("b/#", 0)]) == 2
    assert bytes(c.data_to_send()) == h("820e0002") + b"\x00\x03a/+\x01\x00\x03b/#\x00"
    assert c.unsubscribe(["a/+"]) == 3
    assert bytes(c.data_to_send()) == h("a2070003") + b"\x00\x03a/+"
    c.disconnect()
    assert bytes(c.data_to_send()) == h("e000")
    assert c.state == CLOSED


def test_large_payload_uses_multibyte_length():
    c = connected()
    c.publish("t", b"x" * 200, qos=0)
    out = bytes(c.data_to_send())
    assert out[:3] == h("30cb01") and len(out) == 3 + 203


def test_publish_argument_checks():
    c = connected()
    raises(MQTTError, c.publish, "a/+", b"")
    raises(MQTTError, c.publish, "", b"")
    raises(MQTTError, c.publish, "a", b"", 2)
    raises(MQTTError, c.subscribe, [("a", 2)])
    raises(MQTTError, c.subscribe, [])
    assert c.data_to_send() == b""


# --- decoding every server packet ---------------------------------------------

def test_connack_session_present_and_refusals():
    c = Client("n")
    c.connect(0)
    c.receive_data(h("20020100"), 0)
    ev = drain(c)[0]
    assert type(ev) is Connected and ev.session_present is True
    for code, text in ((5, "not authorized"), (4, "bad user name or password"), (9, "refused")):
        c = Client("n")
        c.connect(0)
        c.receive_data(bytes([0x20, 2, 0, code]), 0)
        ev = drain(c)[0]
        assert type(ev) is ConnectRefused and ev.code == code and ev.text == text
        assert c.state == CLOSED


def test_publish_in_qos0_qos1_flags_and_explicit_ack():
    c = connected()
    c.receive_data(pub_packet("x/y", b"zero", retain=True)
                   + pub_packet("x/z", b"one", qos=1, pid=7, dup=True), 0)
    m0, m1 = drain(c)
    assert (m0.topic, bytes(m0.payload), m0.qos, m0.retain, m0.dup) == ("x/y", b"zero", 0, True, False)
    assert (m1.topic, bytes(m1.payload), m1.qos, m1.retain, m1.dup, m1.packet_id) == \
        ("x/z", b"one", 1, False, True, 7)
    assert c.data_to_send() == b""          # nothing acked before the app says so
    assert c.ack(m0) is False
    assert c.ack(m1) is True
    assert bytes(c.data_to_send()) == h("40020007")
    assert c.ack(m1) is False               # once only


def test_ack_of_earlier_connection_is_dropped_and_auto_ack():
    c = connected()
    c.receive_data(pub_packet("x", b"1", qos=1, pid=3), 0)
    m = drain(c)[0]
    c.reset()
    c.connect(0)
    c.receive_data(CONNACK, 0)
    drain(c)
    c.data_to_send()
    assert c.ack(m) is False and c.data_to_send() == b""   # broker redelivers instead
    c = connected(auto_ack=True)
    c.receive_data(pub_packet("x", b"1", qos=1, pid=300), 0)
    assert type(c.next_event()) is Message
    assert bytes(c.data_to_send()) == h("4002012c")


def test_puback_suback_unsuback_pingresp():
    c = connected()
    p1 = c.publish("a", b"1", qos=1)
    s = c.subscribe([("a/#", 1), ("b", 1)])
    u = c.unsubscribe(["a/#"])
    c.data_to_send()
    c.receive_data(bytes([0x40, 2, 0, p1]) + bytes([0x90, 4, 0, s, 1, 0x80])
                   + bytes([0xB0, 2, 0, u]) + h("40020063") + h("d000"), 0)
    evs = drain(c)
    assert [type(e) for e in evs] == [Published, Subscribed, Unsubscribed]
    assert evs[0].packet_id == p1 and c.inflight() == 0
    assert evs[1].packet_id == s and evs[1].granted == [1, 0x80]
    assert evs[2].packet_id == u
    assert c.state == CONNECTED


def test_suback_with_wrong_count_or_code_is_an_error():
    c = connected()
    s = c.subscribe([("a", 1)])
    assert "codes" in one_error(c, bytes([0x90, 4, 0, s, 1, 1]))
    c = connected()
    s = c.subscribe([("a", 1)])
    assert "code" in one_error(c, bytes([0x90, 3, 0, s, 3]))


# --- fragmentation ------------------------------------------------------------------

def _stream():
    big = bytes(range(256)) * 3
    return (CONNACK + pub_packet("a/b", b"first", qos=1, pid=1) + h("d000")
            + pub_packet("big/one", big) + h("40020001") + pub_packet("c", b"", qos=0)), big


def _summary(evs):
    out = []
    for e in evs:
        if type(e) is Message:
            out.append(("M", e.topic, bytes(e.payload), e.qos))
        else:
            out.append((type(e).__name__, getattr(e, "packet_id", None)))
    return out


def test_byte_by_byte_equals_all_at_once():
    data, big = _stream()
    results = []
    for step in (len(data), 1, 2, 3, 7, 64):
        c = Client("n")
        c.connect(0)
        c.data_to_send()
        c.publish("q", b"x", qos=1)     # packet id 1, acked in the stream
        for i in range(0, len(data), step):
            c.receive_data(data[i:i + step], 0)
        results.append(_summary(drain(c)))
    assert results[0][0] == ("Connected", None)
    assert ("M", "big/one", big, 0) in results[0] and ("Published", 1) in results[0]
    assert len(results[0]) == 5
    for r in results[1:]:
        assert r == results[0]


def test_uneven_splits_with_memoryview_and_bytearray_input():
    data, _ = _stream()
    want = None
    seed = 12345
    for _ in range(20):
        c = Client("n")
        c.connect(0)
        c.publish("q", b"x", qos=1)
        i = 0
        while i < len(data):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            k = 1 + seed % 40
            chunk = data[i:i + k]
            c.receive_data(memoryview(chunk) if k & 1 else bytearray(chunk), 0)
            i += k
        got = _summary(drain(c))
        want = want or got
        assert got == want and len(got) == 5


# --- QoS 1 window and session continuity ---------------------------------------------

def test_inflight_window_is_bounded():
    c = connected(max_inflight=3)
    pids = [c.publish("t", b"%d" % i, qos=1) for i in range(3)]
    assert pids == [1, 2, 3]
    assert c.publish("t", b"no room", qos=1) is None
    assert c.publish("t", b"qos0 still ok", qos=0) == 0
    c.receive_data(h("40020002"), 0)
    assert type(c.next_event()) is Published
    assert c.publish("t", b"room", qos=1) == 4


def test_resend_with_dup_after_reset_in_order():
    c = connected()
    a = c.publish("t", b"a", qos=1)
    b = c.publish("t", b"b", qos=1)
    c.data_to_send()
    c.receive_data(bytes([0x40, 2, 0, a]), 0)      # a done, b lost with the link
    drain(c)
    c.reset()
    assert c.publish("t", b"c", qos=0) is None     # no QoS 0 while down
    d = c.publish("t", b"d", qos=1)                # queued, never sent yet
    c.connect(5)
    assert bytes(c.data_to_send())[:1] == b"\x10"  # only the CONNECT before CONNACK
    c.receive_data(h("20020100"), 6)
    assert drain(c)[0].session_present is True
    out = bytes(c.data_to_send())
    assert out == (h("3a06") + b"\x00\x01t" + bytes([0, b]) + b"b"       # DUP=1
                   + h("3206") + b"\x00\x01t" + bytes([0, d]) + b"d")    # first time
    c.receive_data(bytes([0x40, 2, 0, b, 0x40, 2, 0, d]), 7)
    assert [e.packet_id for e in drain(c)] == [b, d] and c.inflight() == 0


def test_events_read_before_the_link_died_survive_reset():
    c = connected()
    pid = c.publish("t", b"x", qos=1)
    c.receive_data(bytes([0x40, 2, 0, pid]) + pub_packet("in", b"y"), 0)
    c.reset()
    assert [type(e) for e in drain(c)] == [Published, Message]
    assert c.inflight() == 0


def test_packet_ids_skip_ids_in_use_and_wrap():
    c = connected(max_inflight=2)
    c._seq = 0xFFFE
    assert c.publish("t", b"", qos=1) == 0xFFFF
    assert c.publish("t", b"", qos=1) == 1
    c.receive_data(h("4002ffff"), 0)
    c._seq = 0
    assert c.publish("t", b"", qos=1) == 2          # 1 is still in flight


# --- keepalive -------------------------------------------------------------------------

def test_keepalive_ping_and_pong():
    c = connected(keepalive=10, ping_timeout=3000)
    c.publish("t", b"", qos=0, now=4000)            # traffic postpones the ping
    c.data_to_send()
    c.tick(13999)
    assert c.data_to_send() == b""
    c.tick(14000)
    assert bytes(c.data_to_send()) == h("c000")
    c.tick(16000)
    assert c.data_to_send() == b"" and drain(c) == []
    c.receive_data(h("d000"), 16500)
    c.tick(30000)
    assert drain(c) == [] and c.state == CONNECTED
    assert bytes(c.data_to_send()) == h("c000")


def test_ping_timeout_closes():
    c = connected(keepalive=10, ping_timeout=3000)
    c.tick(10000)
    c.data_to_send()
    c.tick(12999)
    assert drain(c) == []
    c.tick(13000)
    evs = drain(c)
    assert len(evs) == 1 and type(evs[0]) is PingTimeout and c.state == CLOSED
    c.tick(99999)
    assert drain(c) == [] and c.data_to_send() == b""


def test_connack_that_never_comes_times_out():
    c = Client("n", keepalive=0, ping_timeout=2000)
    c.connect(100)
    c.tick(2099)
    assert drain(c) == []
    c.tick(2100)
    assert type(c.next_event()) is PingTimeout


# --- hostile brokers ---------------------------------------------------------------------

def test_five_byte_remaining_length():
    assert "4 bytes" in one_error(connected(), h("30ffffffff01"))


def test_over_max_packet_refused_from_header_alone():
    c = connected(max_packet=100)
    assert "limit" in one_error(c, h("30e807"))     # says 1000 bytes; none sent
    c = connected(max_packet=100)
    c.receive_data(pub_packet("t", b"x" * 95), 0)   # exactly 100 bytes: fine
    assert type(c.next_event()) is Message
    c.receive_data(pub_packet("t", b"x" * 96), 0)
    assert type(c.next_event()) is ProtocolError


def test_huge_declared_length_does_not_allocate():
    c = connected()
    assert "limit" in one_error(c, h("30ffffff7f"))   # 256 MiB claimed


def test_reserved_and_client_only_types():
    for pkt in ("0000", "f000", "1000", "c000", "e000", "8200", "a200", "5002", "6202", "7002"):
        assert "unexpected packet type" in one_error(connected(), h(pkt)), pkt


def test_bad_flags_and_qos():
    assert "flags" in one_error(connected(), h("d100"))        # PINGRESP with flags
    assert "type 3" in one_error(connected(), h("360500017400"))   # QoS 3
    assert "QoS 2" in one_error(connected(), h("3406000174000161"))


def test_truncated_and_malformed_bodies():
    for pkt in ("3000", "300100", "3003000574", "3203000174", "32050001740000",
                "400100", "400300010000", "90020001", "b003000100", "d00100"):
        one_error(connected(), h(pkt))
    assert "UTF-8" in one_error(connected(), h("30030001ff"))


def test_packets_out_of_order():
    c = Client("n")
    c.connect(0)
    assert "before CONNACK" in one_error(c, h("40020001"))
    assert "CONNACK" in one_error(connected(), CONNACK)         # a second CONNACK
    c = Client("n")
    c.connect(0)
    assert "CONNACK" in one_error(c, h("200100"))


def test_error_then_reset_recovers():
    c = connected()
    pid = c.publish("t", b"keep", qos=1)
    c.data_to_send()
    one_error(c, h("00"))
    c.reset()
    c.connect(0)
    c.data_to_send()
    c.receive_data(CONNACK, 0)
    assert type(c.next_event()) is Connected
    assert bytes(c.data_to_send()) == h("3a09") + b"\x00\x01t" + bytes([0, pid]) + b"keep"


def test_data_to_send_with_a_limit_hands_out_whole_packets():
    c = connected()
    for i in range(5):
        c.publish("t/%d" % i, b"x" * 100, 1)
    whole = [bytes(p) for p in c._out]
    assert len(whole) == 5
    got = []
    while True:
        b = c.data_to_send(250)
        if not b:
            break
        assert len(b) <= 250
        got.append(bytes(b))
    assert b"".join(got) == b"".join(whole) and len(got) == 3
    c.publish("big", b"y" * 600, 1)
    assert len(c.data_to_send(250)) > 600   # one packet is never split
