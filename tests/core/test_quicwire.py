# QUIC stream wire format: framing, hello, mesh stream acks.
# Plain functions and asserts: runs under pytest and tests/core/mp_run.py.
from node.core import cbor
from node.core.quicwire import (Acked, Deframer, Ev, FrameError, MeshStream, frame,
                                hello, parse_hello)

from helpers import raises


def test_frames_split_anywhere():
    msgs = [b"a", b"bc" * 100, b"\x00" * 7]
    wire = b"".join(frame(m) for m in msgs)
    for step in (1, 2, 3, 5, 64, len(wire)):
        d, got = Deframer(1000), []
        for k in range(0, len(wire), step):
            got.extend(d.feed(wire[k:k + step]))
        assert got == msgs, step
        assert d.pending() == 0


def test_oversized_or_empty_frame_refused_before_payload():
    d = Deframer(100)
    e = raises(FrameError, d.feed, (101).to_bytes(4, "big"))
    assert "101" in str(e)
    raises(FrameError, Deframer(100).feed, b"\0\0\0\0")
    # A hostile 4 GiB length: refused from the prefix alone.
    raises(FrameError, Deframer(100).feed, b"\xff\xff\xff\xff")


def test_hello():
    assert parse_hello(hello("push")) == "push"
    assert parse_hello(hello("mesh")) == "mesh"
    raises(FrameError, parse_hello, b"GET / HTTP/1.1\r\n")
    raises(FrameError, parse_hello, cbor.dumps({"p": "shell", "v": 1}))
    e = raises(FrameError, parse_hello, cbor.dumps({"p": "push", "v": 9}))
    assert "version" in str(e)
    raises(FrameError, parse_hello, b"\xa1" + b"x" * 300)


def test_mesh_stream_window_and_acks():
    a, b = MeshStream(window=3), MeshStream()
    msgs = []
    for i in range(5):
        if a.room() > 0:
            msgs.append(a.send(i, b"rec%d" % i))
    assert len(msgs) == 3 and a.room() == 0
    for m in msgs:
        (ev,) = b.receive(m)
        assert isinstance(ev, Ev)
        b.ack(ev.i)
    (ackmsg,) = b.messages_to_send()
    assert b.messages_to_send() == []
    (done,) = a.receive(ackmsg)
    assert isinstance(done, Acked) and done.ids == [0, 1, 2]
    assert a.room() == 3
    # A repeated ack confirms nothing new.
    assert a.receive(ackmsg)[0].ids == []
    a.send(3, b"x")
    a.reset()
    assert a.inflight() == 0


def test_many_acks_are_split():
    b = MeshStream()
    for i in range(1200):
        b.ack(i)
    out = b.messages_to_send()
    assert [len(cbor.loads(m)["i"]) for m in out] == [512, 512, 176]


def test_mesh_garbage():
    s = MeshStream()
    for bad in (b"\xff\xfe", cbor.dumps([1]), cbor.dumps({"t": "ev", "i": -1, "e": b""}),
                cbor.dumps({"t": "ev", "i": 1, "e": "text"}), cbor.dumps({"t": "ack", "i": 5}),
                cbor.dumps({"t": "ack", "i": ["x"]}), cbor.dumps({"t": "nope"}),
                cbor.dumps({"t": "ack", "i": list(range(600))})):
        raises(FrameError, s.receive, bad)
