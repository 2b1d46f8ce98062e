# Outbox: FIFO, out-of-order acks, overflow, restart, torn tails, I/O cost.
# Plain functions and asserts: runs under pytest and tests/core/mp_run.py.
from node.core import cbor
from node.core.outbox import Outbox, OutboxError
from node.core.memstore import MemStore


from helpers import raises


class CountingStore(MemStore):
    def __init__(self):
        MemStore.__init__(self)
        self.ops = {}

    def _n(self, op):
        self.ops[op] = self.ops.get(op, 0) + 1

    def write(self, name, data):
        self._n("write")
        MemStore.write(self, name, data)

    def append(self, name, data):
        self._n("append")
        MemStore.append(self, name, data)

    def sync(self, name):
        self._n("sync")


def rec(i):
    return b"rec-%d" % i


def test_fifo_and_ack_in_order():
    ob = Outbox(MemStore())
    ids = [ob.push(rec(i)) for i in range(5)]
    assert ids == [0, 1, 2, 3, 4] and len(ob) == 5
    assert ob.peek(3) == [(0, rec(0)), (1, rec(1)), (2, rec(2))]
    assert ob.ack(0) and ob.ack(1)
    assert ob.peek(10) == [(2, rec(2)), (3, rec(3)), (4, rec(4))]
    assert not ob.ack(1)            # repeated ack: ignored
    assert not ob.ack(99)           # unknown id: ignored
    assert not ob.ack("2")
    assert len(ob) == 3 and ob.stats()["acked"] == 2


def test_out_of_order_acks_keep_fifo():
    ob = Outbox(MemStore())
    for i in range(6):
        ob.push(rec(i))
    assert ob.ack(3) and ob.ack(1) and ob.ack(5)
    assert [i for i, _ in ob.peek(10)] == [0, 2, 4]
    assert [i for i, _ in ob.peek(10, after=0)] == [2, 4]
    assert [i for i, _ in ob.peek(1, after=2)] == [4]
    assert ob.ack(0)
    assert [i for i, _ in ob.peek(10)] == [2, 4]
    ob.ack(2)
    ob.ack(4)
    assert len(ob) == 0 and ob.peek(5) == []


def test_overflow_drops_oldest_counted():
    ob = Outbox(MemStore(), max_items=3)
    for i in range(5):
        ob.push(rec(i))
    assert [b for _, b in ob.peek(10)] == [rec(2), rec(3), rec(4)]
    assert ob.dropped == 2 and ob.stats()["dropped"] == 2 and len(ob) == 3
    assert not ob.ack(0)            # dropped: no longer ackable


def test_overflow_by_bytes():
    ob = Outbox(MemStore(), max_bytes=20)
    for i in range(4):
        ob.push(b"x" * 8)
    assert len(ob) == 2 and ob.dropped == 2 and ob.stats()["bytes"] == 16
    raises(OutboxError, ob.push, b"x" * 21)
    raises(OutboxError, ob.push, b"")
    assert len(ob) == 2


def test_stuck_record_does_not_pin_log():
    ob = Outbox(MemStore(), max_items=10)
    ob.push(b"stuck")
    for i in range(30):
        ob.ack(ob.push(rec(i)))
    assert ob.dropped >= 1 and ob.peek(5) == []


def test_restart_keeps_unacked_in_order():
    st = MemStore()
    ob = Outbox(st, seg_bytes=40)           # several segments
    for i in range(20):
        ob.push(rec(i))
    for i in (0, 1, 2, 7, 9):
        ob.ack(i)
    ob.flush()
    ob2 = Outbox(st, seg_bytes=40)
    want = [i for i in range(20) if i not in (0, 1, 2, 7, 9)]
    got = ob2.peek(100)
    assert [i for i, _ in got] == want
    assert [b for _, b in got] == [rec(i) for i in want]
    assert len(ob2) == 15
    # New ids never collide with old ones.
    assert ob2.push(b"new") == 20
    assert ob2.peek(100)[-1] == (20, b"new")


def test_acks_after_last_flush_are_redelivered():
    st = MemStore()
    ob = Outbox(st)
    for i in range(3):
        ob.push(rec(i))
    ob.flush()
    ob.ack(0)                               # not flushed: crash now
    ob2 = Outbox(st)
    assert [i for i, _ in ob2.peek(10)] == [0, 1, 2]   # at-least-once


def test_acked_segments_deleted():
    st = MemStore()
    ob = Outbox(st, seg_bytes=30)
    for i in range(12):
        ob.push(rec(i))
    nseg = len(st.list("outbox/seg-"))
    assert nseg > 2
    for i in range(12):
        ob.ack(i)
    ob.flush()
    assert len(st.list("outbox/seg-")) == 1     # only the open one remains
    ob2 = Outbox(st, seg_bytes=30)
    assert len(ob2) == 0 and ob2.push(b"z") == 12


def test_torn_tail_ignored():
    st = MemStore()
    ob = Outbox(st)
    for i in range(4):
        ob.push(rec(i))
    seg = st.list("outbox/seg-")[0]
    full = st.read(seg)
    for cut in (1, 5, 9, 11):
        st.write(seg, full[:-cut])              # crash mid-append of rec 3
        ob2 = Outbox(st)
        assert [b for _, b in ob2.peek(10)] == [rec(0), rec(1), rec(2)], cut
        assert ob2.corrupt == 1
    # Zero-filled tail (a crash after the file grew) is not a record either.
    st.write(seg, full + bytes(16))
    ob3 = Outbox(st)
    assert len(ob3) == 4 and ob3.corrupt == 1
    # And appends after restart go to a fresh segment, readable next time.
    ob3.push(b"after")
    ob3.flush()
    assert [b for _, b in Outbox(st).peek(10)][-1] == b"after"


def test_bitflip_stops_segment_not_queue():
    st = MemStore()
    ob = Outbox(st, seg_bytes=20)
    for i in range(6):
        ob.push(rec(i))
    segs = st.list("outbox/seg-")
    b = bytearray(st.read(segs[0]))
    b[-1] ^= 1
    st.write(segs[0], b)
    got = [x for _, x in Outbox(st, seg_bytes=20).peek(10)]
    assert rec(5) in got and len(got) < 6


def test_corrupt_state_redelivers():
    st = MemStore()
    ob = Outbox(st)
    for i in range(3):
        ob.push(rec(i))
    ob.ack(0)
    ob.flush()
    for bad in (b"\xff", cbor.dumps([1]), cbor.dumps({"head": -1, "next": 3, "acked": []}),
                cbor.dumps({"head": 1, "next": 3, "acked": [[2, 1]]}),
                cbor.dumps({"head": 1, "next": 3, "acked": [[1]]}),
                cbor.dumps({"head": 1, "next": 3, "acked": "x"}),
                cbor.dumps({"head": 1, "next": 3, "acked": [[1, "2"]]}),
                cbor.dumps({"head": 1, "next": 3, "acked": [[False, 2]]}),
                cbor.dumps({"head": 1, "next": "3", "acked": []}),
                cbor.dumps({"head": 1, "next": 3, "dropped": True, "acked": []}),
                cbor.dumps({"next": 3, "acked": []})):
        st.write("outbox/state", bad)
        assert len(Outbox(st)) == 3


def test_io_cost_per_push_and_flush():
    st = CountingStore()
    ob = Outbox(st)
    for i in range(100):
        ob.push(rec(i))
    assert st.ops.get("append") == 100 and "write" not in st.ops and "sync" not in st.ops
    for i in range(50):
        ob.ack(i)
    assert "write" not in st.ops               # acks are RAM until flush
    ob.flush()
    assert st.ops["sync"] == 1 and st.ops["write"] == 1
    ob.flush()                                  # nothing new: no I/O
    assert st.ops["sync"] == 1 and st.ops["write"] == 1


def test_prefixes_are_independent():
    st = MemStore()
    a = Outbox(st, prefix="a/")
    b = Outbox(st, prefix="b/")
    a.push(b"1")
    b.push(b"2")
    b.push(b"3")
    assert len(Outbox(st, prefix="a/")) == 1 and len(Outbox(st, prefix="b/")) == 2
