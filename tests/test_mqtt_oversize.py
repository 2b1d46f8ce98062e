"""A PUBLISH larger than a board's max_packet.  MQTT 3.1.1 cannot tell the
broker our limit, and a QoS 1 message the client never acks comes back on
every reconnect: ending the connection on it (the codec's protocol error)
would have cut a board off for good with one oversized event on a topic it
subscribes to.  With `drop_big` (set by node/board/mqtt_async.py) the codec
skips the body without buffering it and hands the app a Message without
payload, which the board counts, logs and acks.  Sans-I/O codec on CPython,
then a real MicroPython board on a real Mosquitto."""
import cbor2
import pytest

from broker import Subscriber, broker  # noqa: F401 (fixture)
from conftest import Signer
from gateway_proc import wait_for
from host_sim.boards import SourceBoard
from node.core import mqtt


def publish(topic, payload, pid):
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + pid.to_bytes(2, "big") + payload
    n, head = len(body), bytearray()
    while True:
        n, b = n >> 7, n & 0x7F
        head.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes([0x32]) + bytes(head) + body


def connected(drop_big):
    c = mqtt.Client("b", max_packet=2048)
    c.drop_big = drop_big
    c.connect(0)
    c.data_to_send()
    c.receive_data(b"\x20\x02\x00\x00", 0)
    assert [type(e).__name__ for e in c.events()] == ["Connected"]
    return c


def feed(c, data, piece=700):
    biggest = 0
    for i in range(0, len(data), piece):
        c.receive_data(data[i:i + piece], 0)
        biggest = max(biggest, len(c._buf or b""))
    return biggest


def test_codec_skips_an_oversized_publish_and_the_app_acks_it():
    c = connected(True)
    big = publish("aegis/f/node/b/deploy", b"x" * 50000, 7)
    assert feed(c, big) <= 512              # never buffered whole
    ev = c.events()
    assert len(ev) == 1 and isinstance(ev[0], mqtt.Message)
    m = ev[0]
    assert (m.topic, m.payload, m.qos, m.packet_id) == ("aegis/f/node/b/deploy", None, 1, 7)
    assert c.ack(m) and c.data_to_send() == b"\x40\x02\x00\x07"
    # The stream goes on: the next message arrives whole.
    feed(c, publish("aegis/f/node/b/deploy", b"ok", 8))
    m = c.events()[0]
    assert bytes(m.payload) == b"ok" and m.packet_id == 8


def test_without_drop_big_or_without_the_packet_id_in_view_the_link_ends():
    c = connected(False)
    feed(c, publish("a/b", b"x" * 5000, 1))
    e = c.events()
    assert type(e[0]).__name__ == "ProtocolError" and "exceeds limit 2048" in e[0].text
    # A topic longer than the kept start: no packet id to ack, so as before.
    c = connected(True)
    feed(c, publish("t/" + "x" * 600, b"x" * 5000, 1))
    assert type(c.events()[0]).__name__ == "ProtocolError"


def test_board_counts_an_oversized_message_and_stays_connected(tmp_path, broker):  # noqa: F811
    op = Signer(str(tmp_path / "op"))
    sub = Subscriber(broker, "aegis/test/node/b1/status")
    board = SourceBoard("b1", tmp_path / "b1", broker.url, [op.pub],
                        extra={"status_ms": 1000, "engine": "proxy"})
    try:
        board.start()
        board.wait_for("connected to broker")

        def bad():
            st = [cbor2.loads(p) for _, p in list(sub.msgs)]
            return st[-1].get("counts", {}).get("bad_messages", -1) if st else -1
        for i in (1, 2):      # max_packet is 8192 here
            sub.publish("aegis/test/node/b1/deploy", b"\x00" * 20000)
            wait_for(lambda: bad() == i, 30, "bad_messages %d in the status" % i)
        board.wait_for("over max_packet 8192")
        assert board.console().count("connected to broker") == 1, board.console()[-2000:]
    finally:
        board.stop()
        sub.close()


@pytest.mark.parametrize("n", [0, 1])
def test_a_short_body_is_not_taken_for_a_skipped_one(n):
    # A PUBLISH under the limit is delivered whole, also when drop_big is on.
    c = connected(True)
    feed(c, publish("a/b", b"y" * (100 + n), 3), piece=37)
    m = c.events()[0]
    assert bytes(m.payload) == b"y" * (100 + n)


def test_a_limit_under_the_kept_start_still_skips():
    # max_packet below the 512 bytes kept of a skipped body: still skipped.
    c = mqtt.Client("b", max_packet=200)
    c.drop_big = True
    c.connect(0)
    c.receive_data(b"\x20\x02\x00\x00", 0)
    c.events()
    feed(c, publish("a/b", b"z" * 300, 9), piece=50)
    m = c.events()[0]
    assert m.payload is None and m.packet_id == 9
