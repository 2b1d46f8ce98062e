# Envelope codec, MQTT topic helpers, Dedup window and SeqCounter.
# Plain functions and asserts: runs under pytest and tests/core/mp_run.py.
from node.core import cbor
from node.core import envelope as ev
from node.core import forwarding as fw
from node.core.envelope import EnvelopeError
from node.core.memstore import MemStore


from helpers import raises


GOOD = {"src": "gw-1", "seq": 7, "ts": 1700000000000, "topic": "sensors/temp",
        "data": b"\x01\x02", "mod": "thermo@1.2.0"}


def mk(**kw):
    m = dict(GOOD)
    for k in kw:
        if kw[k] is None:
            del m[k]
        else:
            m[k] = kw[k]
    return cbor.dumps(m)


def test_roundtrip():
    b = ev.encode("gw-1", 7, 1700000000000, "sensors/temp", b"\x01\x02", "thermo@1.2.0")
    e = ev.decode(b)
    assert (e.src, e.seq, e.ts, e.topic, e.data, e.mod) == (
        "gw-1", 7, 1700000000000, "sensors/temp", b"\x01\x02", "thermo@1.2.0")
    assert e == ev.Envelope("gw-1", 7, 1700000000000, "sensors/temp", b"\x01\x02",
                            "thermo@1.2.0")
    # Canonical: same bytes as encoding the plain map.
    assert b == mk()


def test_roundtrip_edges():
    big = bytes(range(256)) * 256
    e = ev.decode(ev.encode("a", 0, 0, "x", big, "m@1"))
    assert e.data == big and e.seq == 0
    e = ev.decode(ev.encode("A" * 64, (1 << 63) - 1, 1, "t/\u00e9/3", b"", "m_1@1.0-rc1+b"))
    assert e.topic == "t/\u00e9/3"
    assert ev.decode(ev.encode("n", 1, 1, "t", bytearray(b"ab"), "m@1")).data == b"ab"


def test_unknown_keys_ignored():
    m = dict(GOOD)
    m["future"] = [1, 2, 3]
    m[5] = "x"
    assert ev.decode(cbor.dumps(m)).seq == 7


def test_missing_keys():
    for k in ("src", "seq", "ts", "topic", "data", "mod"):
        e = raises(EnvelopeError, ev.decode, mk(**{k: None}))
        assert k in str(e)


def test_wrong_types():
    bad = [("src", 5), ("src", b"gw"), ("seq", "7"), ("seq", True), ("seq", 1.0),
           ("ts", None), ("ts", -1), ("seq", -1), ("seq", 1 << 63),
           ("topic", b"t"), ("data", "text"), ("data", [1]), ("mod", 3)]
    for k, v in bad:
        m = dict(GOOD)
        m[k] = v
        raises(EnvelopeError, ev.decode, cbor.dumps(m))


def test_bad_topics():
    for t in ("", "a//b", "/a", "a/", "a/+/b", "a/#", "x" * 256, "a\x00b"):
        raises(EnvelopeError, ev.decode, mk(topic=t))
        raises(EnvelopeError, ev.encode, "n", 1, 1, t, b"", "m@1")
    # 255 bytes of UTF-8 is fine, 256 is not (2-byte characters).
    ev.check_topic("\u00e9" * 127 + "a")
    raises(EnvelopeError, ev.check_topic, "\u00e9" * 128)


def test_bad_ids_and_mods():
    for s in ("", "a b", "a/b", "x" * 65, "..", "n\u00e9", "a+b"):
        raises(EnvelopeError, ev.decode, mk(src=s))
    for m in ("", "noversion", "@1", "m@", "m@1@2", "a b@1", "m@1 2", "m" * 65 + "@1"):
        raises(EnvelopeError, ev.decode, mk(mod=m))


def test_data_limit():
    e = raises(EnvelopeError, ev.decode, mk(data=bytes(65537)))
    assert "65536" in str(e)
    assert ev.decode(mk(data=bytes(100)), 100).data == bytes(100)
    raises(EnvelopeError, ev.decode, mk(data=bytes(101)), 100)
    # Way oversized input is refused before decoding.
    raises(EnvelopeError, ev.decode, bytes(200000))


def test_malformed_cbor():
    good = mk()
    for b in (b"", b"\xff", good[:-1], good + b"\x00", b"\xc1\x00",
              cbor.dumps([1, 2]), cbor.dumps("x"), b"\xbf\xff"):
        e = raises(EnvelopeError, ev.decode, b)
        assert str(e)
    assert isinstance(raises(EnvelopeError, ev.decode, b"\xff"), ValueError)


def test_topic_helpers():
    t = fw.ev_topic("acme", "gw-1", "sensors/temp")
    assert t == "aegis/acme/ev/gw-1/sensors/temp"
    assert ev.parse_ev_topic("acme", t) == ("gw-1", "sensors/temp")
    assert ev.parse_ev_topic("acme", "aegis/acme/ev/n/x") == ("n", "x")
    for bad in ("aegis/other/ev/gw-1/t", "aegis/acme/ev/gw-1", "aegis/acme/ev/gw-1/",
                "aegis/acme/ev//t", "aegis/acme/ev/gw 1/t", "aegis/acme/ev/n/a//b",
                "aegis/acme/st/n/t", "aegis/acme/ev/n/+"):
        raises(EnvelopeError, ev.parse_ev_topic, "acme", bad)
    raises(EnvelopeError, fw.ev_topic, "ac/me", "n", "t")
    raises(EnvelopeError, fw.ev_topic, "acme", "n/x", "t")
    raises(EnvelopeError, fw.ev_topic, "acme", "n", "t/#")
    raises(EnvelopeError, ev.parse_ev_topic, "acme", b"aegis/acme/ev/n/t")


def test_dedup_in_order_and_repeats():
    d = ev.Dedup(window=64)
    for s in range(200):
        assert not d.seen("a", s)
    for s in range(190, 200):
        assert d.seen("a", s)
    assert d.dups == 10 and d.too_old == 0


def test_dedup_reorder_within_window():
    d = ev.Dedup(window=64)
    assert not d.seen("a", 100)
    assert not d.seen("a", 90)      # late but inside the window: new
    assert d.seen("a", 90)          # now a duplicate
    assert not d.seen("a", 37)      # 100 - 37 = 63 < 64: still inside
    assert d.seen("a", 36)          # 64 behind the top: too old
    assert d.too_old == 1 and d.dups == 1
    # A jump forward clears skipped slots: 101..163 are all new.
    assert not d.seen("a", 163)
    for s in range(101, 163):
        assert not d.seen("a", s), s
    # A jump past the whole window forgets everything below it.
    assert not d.seen("a", 10000)
    assert d.seen("a", 163)
    assert not d.seen("a", 9999)


def test_dedup_sources_independent_and_evicted():
    d = ev.Dedup(window=64, max_sources=4)
    for src in ("a", "b", "c", "d"):
        assert not d.seen(src, 5)
    assert d.seen("a", 5)           # touch "a": "b" is now least recent
    assert not d.seen("e", 5)       # evicts "b"
    assert len(d) == 4 and d.evicted == 1
    assert not d.seen("b", 5)       # forgotten: accepted again (counted above)
    assert d.seen("a", 5)           # "a" survived both evictions
    for i in range(1000):
        d.seen("flood%d" % i, 0)
    assert len(d) == 4


def test_dedup_state_survives_a_restart():
    d = fw.SavedDedup(window=64)
    for s in (1, 2, 5, 100):
        d.seen("a", s)
    d.seen("b", 7)
    raw = d.dumps()
    d2 = fw.SavedDedup(window=64)
    assert d2.loads(raw) == 2
    assert d2.seen("a", 5) and d2.seen("a", 100) and d2.seen("b", 7)
    assert d2.seen("a", 10)                 # below the window: too old
    assert not d2.seen("a", 99) and not d2.seen("b", 8)
    # Another window size: those sources start fresh; garbage is an error.
    assert fw.SavedDedup(window=128).loads(raw) == 0
    raises(EnvelopeError, fw.SavedDedup().loads, b"\xff\x00")
    raises(EnvelopeError, fw.SavedDedup().loads, cbor.dumps([1]))
    bad = cbor.dumps({"a": [-1, bytes(8)], "b": "x", 3: [1, bytes(8)], "c": [2, bytes([4]) + bytes(7)]})
    d3 = fw.SavedDedup(window=64)
    assert d3.loads(bad) == 1 and d3.seen("c", 2)


def test_dedup_rejects_bad_seq():
    d = ev.Dedup()
    raises(EnvelopeError, d.seen, "a", -1)
    raises(EnvelopeError, d.seen, "a", "1")
    raises(ValueError, ev.Dedup, 10)


def test_seq_counter_blocks_and_crash():
    st = MemStore()
    c = ev.SeqCounter(st, block=10)
    got = [c.take() for _ in range(25)]
    assert got == list(range(25))
    assert c.writes == 3            # one write per block, not per event
    # Crash: a fresh counter on the same store starts past every used seq.
    c2 = ev.SeqCounter(st, block=10)
    nxt = [c2.take() for _ in range(15)]
    assert nxt[0] == 30 and min(nxt) > max(got)
    c3 = ev.SeqCounter(st, block=10)
    assert c3.take() > max(nxt)


def test_seq_counter_write_happens_before_use():
    class Failing(MemStore):
        def write(self, name, data):
            raise OSError("flash full")
    c = ev.SeqCounter(Failing(), block=10)
    raises(OSError, c.take)         # no seq handed out without a reservation
    raises(OSError, c.take)


def test_seq_counter_corrupt_file():
    st = MemStore()
    st.write("mesh/seq", b"\xff")
    raises(EnvelopeError, ev.SeqCounter, st)
    st.write("mesh/seq", cbor.dumps("7"))
    raises(EnvelopeError, ev.SeqCounter, st)
    st.write("mesh/seq", cbor.dumps(-3))
    raises(EnvelopeError, ev.SeqCounter, st)


def test_node_ids_and_module_refs():
    for good in ("a", "...", "n.1", "A-z_0", "x" * 64):
        ev.check_node_id(good)
    for bad in (".", "..", "", "x" * 65, "a/b", "a b", 5, None):
        raises(EnvelopeError, ev.check_node_id, bad)
    e = raises(EnvelopeError, ev.check_node_id, "..", "fleet")
    assert "fleet" in str(e)
    ev.check_mod("facts@1.0.0+build.5")
    for bad in ("..@1.0.0", ".@1", "facts", "f@", "@1", "f@1/2", "f@" + "1" * 65, b"f@1"):
        raises(EnvelopeError, ev.check_mod, bad)
