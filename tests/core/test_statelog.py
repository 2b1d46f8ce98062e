from node.core.statelog import StateLog, StateError
from node.core.memstore import MemStore
from helpers import raises


def test_set_get_delete_and_replay():
    st = MemStore()
    s = StateLog(st, "m")
    s.set(b"a", b"1")
    s.set(b"b", b"22")
    s.set(b"a", b"333")
    s.delete(b"b")
    s.delete(b"nope")
    s2 = StateLog(st, "m")
    assert s2.get(b"a") == b"333" and s2.get(b"b") is None
    assert s2.live == 4


def test_torn_tail_is_dropped_and_log_repaired():
    st = MemStore()
    s = StateLog(st, "m")
    s.set(b"k", b"v1")
    s.set(b"k", b"v2")
    good = st.read("state/m.log")
    st.write("state/m.log", good + b"\xa5\x01\x01\x00\x00")  # crash mid-append
    s2 = StateLog(st, "m")
    assert s2.get(b"k") == b"v2"
    s2.set(b"k", b"v3")  # appends after a repaired log are readable
    assert StateLog(st, "m").get(b"k") == b"v3"


def test_corrupt_record_stops_replay():
    st = MemStore()
    s = StateLog(st, "m")
    s.set(b"x", b"1")
    raw = bytearray(st.read("state/m.log"))
    raw[-1] ^= 0xFF
    st.write("state/m.log", bytes(raw))
    assert StateLog(st, "m").get(b"x") is None


def test_quota_and_sizes():
    s = StateLog(MemStore(), "m", max_bytes=100)
    raises(StateError, s.set, b"", b"x")
    raises(StateError, s.set, b"k" * 129, b"x")
    raises(StateError, s.set, b"k", b"x" * 200)
    s.set(b"k", b"x" * 90)
    raises(StateError, s.set, b"j", b"x" * 20)
    s.set(b"k", b"y" * 98)  # replacing within quota is fine
    assert s.live == 99


def test_compaction_keeps_data_and_bounds_log():
    st = MemStore()
    s = StateLog(st, "m")
    for i in range(2000):
        s.set(b"n", b"%d" % i)
    assert st.size("state/m.log") < 8192
    assert StateLog(st, "m").get(b"n") == b"1999"


def test_restore_snapshot():
    st = MemStore()
    s = StateLog(st, "m")
    s.set(b"a", b"1")
    snap = dict(s.data)
    s.set(b"a", b"2")
    s.set(b"b", b"3")
    s.restore(snap)
    s2 = StateLog(st, "m")
    assert s2.data == {b"a": b"1"} and s2.live == 2
