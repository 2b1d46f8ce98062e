# Outbox.flush in two halves (flush_plan on the loop, flush_write on a worker
# thread, node/mqtt/forward.py), and the in-order ack fast path.
from node.core.outbox import Outbox
from node.core.memstore import MemStore


class CountingStore(MemStore):
    def __init__(self):
        MemStore.__init__(self)
        self.synced = []
        self.fail = False

    def sync(self, name):
        if self.fail:
            raise OSError("disk gone")
        self.synced.append(name)

    def write(self, name, data):
        if self.fail:
            raise OSError("disk gone")
        MemStore.write(self, name, data)


def test_plan_then_write_equals_flush_and_later_changes_wait():
    st = CountingStore()
    ob = Outbox(st)
    for i in range(4):
        ob.push(b"r%d" % i)
    ob.ack(0)
    seg, state = ob.flush_plan()
    assert seg is not None and state is not None
    assert ob.flush_plan() == (None, None)      # counted clean at once
    ob.ack(1)                                   # after the plan: the next flush
    ob.flush_write(seg, state)
    assert st.synced == [seg]
    assert len(Outbox(st)) == 3                 # the state as planned: 0 acked
    seg2, state2 = ob.flush_plan()
    assert seg2 is None and state2 is not None  # no new records, one more ack
    ob.flush_write(seg2, state2)
    assert len(Outbox(st)) == 2


def test_a_failed_write_is_done_again_after_dirty():
    st = CountingStore()
    ob = Outbox(st)
    ob.push(b"a")
    ob.ack(0)
    ob.push(b"b")
    plan = ob.flush_plan()
    st.fail = True
    try:
        ob.flush_write(*plan)
        raise AssertionError("no error")
    except OSError:
        ob.dirty()
    st.fail = False
    seg, state = ob.flush_plan()
    assert seg == plan[0] and state is not None
    ob.flush_write(seg, state)
    again = Outbox(st)
    assert len(again) == 1 and again.peek(5)[0][1] == b"b"


def test_in_order_acks_across_segments_and_out_of_order():
    st = MemStore()
    ob = Outbox(st, seg_bytes=64)
    ids = [ob.push(b"x" * 20) for _ in range(12)]   # several segments
    assert ob.stats()["segments"] > 2
    assert ob.ack(ids[3]) and not ob.ack(ids[3])    # out of order, once
    for i in ids[:3]:
        assert ob.ack(i)
    for i in ids[4:10]:
        assert ob.ack(i)
    assert len(ob) == 2 and [i for i, _ in ob.peek(5)] == ids[10:]
    ob.flush()
    assert [i for i, _ in Outbox(st, seg_bytes=64).peek(5)] == ids[10:]
    assert ob.stats()["segments"] <= 2              # fully acked segments deleted
