# Outbox.push_many: one store append per batch, same ids, limits and
# restart behaviour as one push per record.  Runs under pytest and
# tests/core/mp_run.py (MicroPython).
from node.core.outbox import Outbox, OutboxError
from node.core.memstore import MemStore

from helpers import raises


class CountingStore(MemStore):
    def __init__(self):
        MemStore.__init__(self)
        self.appends = 0
        self.syncs = 0

    def append(self, name, data):
        self.appends += 1
        MemStore.append(self, name, data)

    def sync(self, name):
        self.syncs += 1


def recs(a, b):
    return [b"rec-%d" % i for i in range(a, b)]


def test_batch_is_one_append_and_consecutive_ids():
    st = CountingStore()
    ob = Outbox(st)
    assert ob.push(b"first") == 0
    assert ob.push_many(recs(1, 101)) == 1
    assert st.appends == 2 and len(ob) == 101
    assert ob.peek(3, after=0) == [(1, b"rec-1"), (2, b"rec-2"), (3, b"rec-3")]
    assert ob.push_many([]) == 101 and st.appends == 2


def test_batch_survives_restart_like_single_pushes():
    st = MemStore()
    ob = Outbox(st)
    ob.push_many(recs(0, 50))
    for i in range(10):
        ob.ack(i)
    ob.flush()
    ob2 = Outbox(st)
    assert len(ob2) == 40
    assert [r for _, r in ob2.peek(100)] == recs(10, 50)


def test_batch_rolls_segments_and_syncs_full_ones():
    st = CountingStore()
    ob = Outbox(st, seg_bytes=200)
    ob.push_many(recs(0, 60))           # ~14 bytes a frame: several segments
    segs = ob.stats()["segments"]
    assert segs > 3
    assert st.appends == segs           # one append per segment touched
    assert st.syncs == segs - 1         # every full segment made durable
    ob.flush()
    assert [r for _, r in Outbox(st, seg_bytes=200).peek(100)] == recs(0, 60)


def test_batch_over_limits_drops_oldest_counted():
    ob = Outbox(MemStore(), max_items=10)
    ob.push_many(recs(0, 25))
    assert len(ob) == 10 and ob.dropped == 15
    assert [r for _, r in ob.peek(100)] == recs(15, 25)
    assert not ob.ack(14) and ob.ack(15)   # dropped ones are gone, not ackable


def test_bad_record_rejects_whole_batch():
    st = CountingStore()
    ob = Outbox(st, max_record=16)
    raises(OutboxError, ob.push_many, [b"ok", b"x" * 17])
    raises(OutboxError, ob.push_many, [b"ok", b""])
    assert len(ob) == 0 and st.appends == 0
