# Property-based fuzzing of the mesh parsers and queues (CPython only).
import hashlib

from hypothesis import given, settings, strategies as st

from node.core import cbor
from node.core import envelope as ev, forwarding as fw
from node.core import transfer as tr
from node.core.transfer_send import Sender
from node.core.outbox import Outbox
from node.core.memstore import MemStore

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 64) + 1, (1 << 64) - 1)
    | st.binary(max_size=40) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=6),
    max_leaves=8)

ENV_KEYS = st.sampled_from(["src", "seq", "ts", "topic", "data", "mod", "x"])
TR_KEYS = st.sampled_from(["t", "id", "o", "size", "sha256", "chunk", "win", "name",
                           "version", "i", "d", "h", "ranges", "upto", "have", "n"])
TYPES = st.sampled_from(["offer", "chunk", "want", "ack", "result", "error", "zzz"])


@given(st.binary(max_size=300))
def test_envelope_decode_bytes_only_envelopeerror(b):
    try:
        ev.decode(b)
    except ev.EnvelopeError:
        pass


# Mostly-valid envelopes with one field at a time swapped for junk.
good_env = st.fixed_dictionaries({
    "src": st.sampled_from(["gw-1", "a", "x" * 64]), "seq": st.integers(0, 1 << 63),
    "ts": st.integers(0, 1 << 50), "topic": st.sampled_from(["t", "a/b/c", "\u00e9/x"]),
    "data": st.binary(max_size=50), "mod": st.sampled_from(["m@1", "thermo@1.2.0-rc1"])})


@settings(max_examples=300)
@given(good_env, ENV_KEYS, plain)
def test_envelope_decode_maps(m, k, junk):
    if junk is not None:
        m[k] = junk
    try:
        e = ev.decode(cbor.dumps(m))
    except ev.EnvelopeError:
        return
    assert ev.decode(ev.encode(e.src, e.seq, e.ts, e.topic, e.data, e.mod)) == e


@given(st.text(max_size=80))
def test_parse_ev_topic(t):
    try:
        node, topic = ev.parse_ev_topic("f", t)
    except ev.EnvelopeError:
        return
    assert fw.ev_topic("f", node, topic) == t


@given(st.lists(st.integers(0, 3000), max_size=300))
def test_dedup_matches_model(seqs):
    d, top, seen = ev.Dedup(window=64), None, set()
    for s in seqs:
        if top is None or s > top:
            want = False
        elif top - s >= 64:
            want = True
        else:
            want = s in seen
        assert d.seen("a", s) == want
        if not want:
            seen.add(s)
            top = s if top is None else max(top, s)


def _receiver_survives(r, raw):
    r.receive_data(raw, 0)
    while r.next_event() is not None:
        pass
    r.messages_to_send()


@settings(max_examples=300)
@given(st.lists(st.dictionaries(TR_KEYS, plain | TYPES, max_size=10), max_size=6))
def test_receiver_never_raises(msgs):
    data = b"p" * 1000
    sha = hashlib.sha256(data).digest()
    tid = tr.transfer_id(sha)
    r = tr.Receiver(MemStore())
    _receiver_survives(r, cbor.dumps({"t": "offer", "id": tid, "size": 1000, "sha256": sha,
                                      "chunk": 256}))
    for m in msgs:
        if "id" in m and m["id"] is None:
            m["id"] = tid
        _receiver_survives(r, cbor.dumps(m))
    # Whatever came before, the real transfer still completes.
    s = Sender(data, chunk=256)
    for _ in range(50):
        for raw in s.messages_to_send(0):
            r.receive_data(raw, 0)
        for _, raw in r.messages_to_send():
            s.receive_data(raw, 0)
        e = r.next_event()
        while e is not None:
            if isinstance(e, tr.Complete):
                r.finish(e.tid, True, "ok")
            e = r.next_event()
        if s.result:
            break
    assert s.result == (True, "ok")


@given(st.binary(max_size=400))
def test_sender_and_receiver_take_any_bytes(b):
    r = tr.Receiver(MemStore())
    _receiver_survives(r, b)
    s = Sender(b"z" * 600, chunk=256)
    s.receive_data(b, 0)
    assert s.result is None


ops = st.lists(st.one_of(
    st.tuples(st.just("push"), st.binary(min_size=1, max_size=30)),
    st.tuples(st.just("ack"), st.integers(0, 60)),
    st.tuples(st.just("restart"), st.just(0)),
), max_size=80)


@settings(max_examples=200)
@given(ops)
def test_outbox_matches_model(script):
    store = MemStore()
    ob = Outbox(store, seg_bytes=64)
    model = []                                  # [(id, bytes)] unacked
    for op, arg in script:
        if op == "push":
            model.append((ob.push(arg), arg))
        elif op == "ack":
            live = any(i == arg for i, _ in model)
            assert ob.ack(arg) == live
            model = [x for x in model if x[0] != arg]
        else:
            ob.flush()
            ob = Outbox(store, seg_bytes=64)
        assert ob.peek(1000) == model
        assert len(ob) == len(model)
