# Chunked package transfer: Sender and Receiver shuttled in memory by Pair.
# Plain functions and asserts: runs under pytest and tests/core/mp_run.py.
import binascii
import hashlib
from node.core import cbor
from node.core import transfer as tr
from node.core.transfer_send import Sender, StoreReader
from node.core.memstore import MemStore


from helpers import raises


def blob(n, seed=1):
    out, x = bytearray(), seed
    while len(out) < n:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.extend(x.to_bytes(4, "big"))
    return bytes(out[:n])


class CountingStore(MemStore):
    def __init__(self):
        MemStore.__init__(self)
        self.write_ats = 0

    def write_at(self, name, off, data):
        self.write_ats += 1
        MemStore.write_at(self, name, off, data)


class Pair:
    """Sender and Receiver over an in-memory ordered link, like aioquic's
    client_and_server().  Hooks: drop(direction, msg) -> True to lose a
    message, dup(direction, msg) -> True to deliver it twice,
    tamper(direction, raw) -> raw; disconnect() loses everything in flight,
    restart_receiver() builds a new Receiver on the same store.  Complete
    events are finished with ok=True unless `verdict` says otherwise."""

    def __init__(self, data, chunk=1024, window=16, store=None, sender=None, **rkw):
        self.store = store if store is not None else CountingStore()
        self.rkw = rkw
        self.r = tr.Receiver(self.store, **rkw)
        self.s = sender or Sender(data, chunk=chunk, window=window,
                                     name="thermo", version="1.0")
        self.now = 0
        self.drop = self.dup = self.tamper = None
        self.verdict = (True, "active")
        self.s_ev, self.r_ev = [], []
        self.completes = []
        self.delivered = {}     # message type -> count delivered to receiver

    def _link(self, direction, raw):
        if self.tamper:
            raw = self.tamper(direction, raw)
        m = cbor.loads(raw)
        if self.drop and self.drop(direction, m):
            return []
        if self.dup and self.dup(direction, m):
            return [raw, raw]
        return [raw]

    def step(self):
        self.now += 10
        for raw in self.s.messages_to_send(self.now):
            for b in self._link("s2r", raw):
                t = cbor.loads(b)["t"]
                self.delivered[t] = self.delivered.get(t, 0) + 1
                self.r.receive_data(b, self.now)
                self._pump_r()
        self._pump_r()

    def _pump_r(self):
        while True:
            ev = self.r.next_event()
            if ev is None:
                break
            self.r_ev.append(ev)
            if isinstance(ev, tr.Complete):
                self.completes.append(ev)
                if self.verdict is not None:
                    self.r.finish(ev.tid, self.verdict[0], self.verdict[1])
        for tid, raw in self.r.messages_to_send():
            for b in self._link("r2s", raw):
                self.s.receive_data(b, self.now)
        while True:
            ev = self.s.next_event()
            if ev is None:
                break
            self.s_ev.append(ev)

    def run(self, steps=5000, until=None):
        for _ in range(steps):
            if self.s.result is not None or (until and until()):
                return
            self.step()
        raise AssertionError("transfer did not finish in %d steps" % steps)

    def disconnect(self):
        # The link is synchronous, so "in flight" is what the next step would
        # carry; drop the sender's queued output and forget its window.
        self.s.messages_to_send(self.now)
        self.r.messages_to_send()
        self.s.reconnected(self.now)

    def restart_receiver(self):
        self.r = tr.Receiver(self.store, **self.rkw)

    def have(self):
        t = self.r._t.get(self.s.id)
        return 0 if t is None else t.have

    def errors(self, side):
        return [e for e in (self.r_ev if side == "r" else self.s_ev)
                if isinstance(e, tr.TransferError)]


def check_done(p, data):
    assert p.s.result == (True, "active"), p.s.result
    pkg = "incoming/%s.pkg" % p.s.id
    assert p.store.read(pkg) == data
    assert p.store.list("incoming/") == [pkg]
    assert p.s.confirmed == len(data)
    assert isinstance(p.s_ev[-1], tr.Result) and p.s_ev[-1].ok
    c = p.completes[-1]
    assert c.store_name == pkg and c.sha256 == hashlib.sha256(data).digest()
    assert (c.name, c.version, c.size) == ("thermo", "1.0", len(data))


def test_full_transfer_chunk_sizes():
    for chunk in (256, 1024, 4096):
        for size in (1, chunk, 5 * chunk, 5 * chunk + 17):
            data = blob(size, chunk + size)
            p = Pair(data, chunk=chunk)
            p.run()
            check_done(p, data)
            n = (size + chunk - 1) // chunk
            assert p.s.chunks_sent == n and p.delivered["chunk"] == n
            assert not p.errors("r") and not p.errors("s")
            assert p.s.id == binascii.hexlify(hashlib.sha256(data).digest()[:16]).decode()


def test_progress_events():
    data = blob(20000)
    p = Pair(data, chunk=1024, window=4)
    p.run()
    prog = [e.done for e in p.s_ev if isinstance(e, tr.Progress)]
    assert prog == sorted(prog) and prog[-1] == len(data) and len(prog) > 3
    rprog = [e for e in p.r_ev if isinstance(e, tr.Progress)]
    assert rprog[-1].done == rprog[-1].total == len(data)


def test_window_bounds_unacked_chunks():
    data = blob(64 * 256)
    p = Pair(data, chunk=256, window=4)
    most = [0]
    orig = p.s.messages_to_send

    def watch(now):
        out = orig(now)
        most[0] = max(most[0], len(p.s._inflight))
        return out
    p.s.messages_to_send = watch
    p.run()
    check_done(p, data)
    assert most[0] == 4


def test_resume_after_disconnect_sends_only_missing():
    data = blob(100 * 512)
    p = Pair(data, chunk=512, window=8)
    p.run(until=lambda: p.have() >= 40)
    p.disconnect()
    had = p.have()
    sent = p.s.chunks_sent
    p.run()
    check_done(p, data)
    assert p.s.chunks_sent - sent == 100 - had


def test_disconnect_losing_replies():
    data = blob(30 * 256)
    p = Pair(data, chunk=256, window=8)
    p.run(until=lambda: p.have() >= 10)
    p.drop = lambda d, m: d == "r2s"            # replies lost for a while
    for _ in range(3):
        p.step()
    p.drop = None
    p.disconnect()
    p.run()
    check_done(p, data)
    assert p.delivered["chunk"] <= 30 + 8


def test_receiver_restart_resumes_from_store():
    data = blob(80 * 256)
    p = Pair(data, chunk=256, window=8, persist_every=10)
    p.run(until=lambda: p.have() >= 45)
    p.restart_receiver()                        # the sender is not told
    raw = p.store.read("incoming/%s.state" % p.s.id)
    kept = sum(bin(b).count("1") for b in cbor.loads(raw)["bits"])
    assert kept == 40                           # persisted every 10 chunks
    before = p.store.write_ats
    p.run()
    check_done(p, data)
    assert p.store.write_ats - before == 80 - kept
    codes = [e.text for e in p.errors("s")]
    assert codes and "unknown transfer" in codes[0]


def test_both_restart_with_reconnect():
    data = blob(50 * 1024)
    store = MemStore()
    p = Pair(data, chunk=1024, store=store, persist_every=4)
    p.run(until=lambda: p.have() >= 20)
    p.restart_receiver()
    p.s = Sender(data, chunk=1024, name="thermo", version="1.0")   # new CLI run
    sent0 = p.s.chunks_sent
    p.run()
    check_done(p, data)
    assert p.s.chunks_sent - sent0 <= 50 - 20 + 4


def test_duplicates_are_harmless():
    data = blob(40 * 256 + 3)
    p = Pair(data, chunk=256, window=8)
    p.dup = lambda d, m: True
    p.run()
    check_done(p, data)
    assert p.r.dups > 0 or p.s.chunks_sent == 41


def test_lossy_link_recovers():
    data = blob(60 * 256)
    p = Pair(data, chunk=256, window=8)
    k = [0]

    def drop(d, m):
        if d == "s2r" and m["t"] == "chunk":
            k[0] += 1
            return k[0] % 7 == 0
        return False
    p.drop = drop
    p.run()
    check_done(p, data)
    assert p.s.retries == 0                     # no timeouts were needed


def test_many_holes_more_than_one_want():
    # Every other chunk lost: more holes than one want can list (128), so
    # the receiver cuts the list ("upto") and the sender asks again.
    data = blob(300 * 256)
    s = Sender(data, chunk=256, window=300, name="thermo", version="1.0")
    p = Pair(data, sender=s)
    wants, lost = [], {}

    def drop(d, m):
        if m["t"] == "want":
            wants.append(m)
        if m["t"] == "ack":
            return True                         # only wants get through
        if d == "s2r" and m["t"] == "chunk" and m["i"] % 2 == 1 and m["i"] not in lost:
            lost[m["i"]] = 1                    # first copy of each odd chunk
            return True
        return False
    p.drop = drop
    p.run()
    check_done(p, data)
    cut = [w for w in wants if w["upto"] < 300]
    assert cut and len(cut[0]["ranges"]) == tr.MAX_RANGES
    assert p.s.chunks_sent == 450 and p.s.retries == 0


def test_bad_chunks_rejected_then_completes():
    data = blob(20 * 256)
    p = Pair(data, chunk=256, window=4)
    hit = [0]

    def tamper(d, raw):
        m = cbor.loads(raw)
        if d == "s2r" and m["t"] == "chunk" and m["i"] == 5 and not hit[0]:
            hit[0] = 1
            m["d"] = b"X" + m["d"][1:]          # hash no longer matches
            return cbor.dumps(m)
        return raw
    p.tamper = tamper
    p.run()
    check_done(p, data)
    errs = [e.text for e in p.errors("r")]
    assert errs == ["chunk 5 failed its hash check"]


def test_bad_chunk_fields():
    data = blob(10 * 256)
    p = Pair(data, chunk=256)
    p.step()                                    # offer/want exchanged, chunks flowing
    tid = p.s.id
    good = blob(256, 9)
    h = hashlib.sha256(good).digest()[:8]
    bad = [dict(i=10, d=good, h=h), dict(i=-1, d=good, h=h), dict(i="1", d=good, h=h),
           dict(i=9, d=good, h=bytes(8)), dict(i=3, d=good[:100], h=h), dict(i=3, d="x", h=h),
           dict(i=3, d=good, h=h[:4]), dict(i=3, d=good, h=b"12345678")]
    p.restart_receiver()
    p.r.receive_data(cbor.dumps({"t": "offer", "id": tid, "size": len(data), "o": 1,
                                 "sha256": p.s.sha256, "chunk": 256}), 0)
    p.r.messages_to_send()
    for m in bad:
        m.update(t="chunk", id=tid)
        p.r.receive_data(cbor.dumps(m), 0)
    evs = []
    while True:
        e = p.r.next_event()
        if e is None:
            break
        evs.append(e)
    errs = [e for e in evs if isinstance(e, tr.TransferError)]
    assert len(errs) == len(bad), [e.text for e in errs]
    assert all(e.tid == tid for e in errs)
    assert p.r._t[tid].have == 0                # nothing bad was stored
    assert p.store.size("incoming/%s.part" % tid) <= 0
    p.s.reconnected(p.now)
    p.run()
    check_done(p, data)


def test_malformed_messages_keep_receiver_working():
    p = Pair(blob(3000), chunk=256)
    tid = p.s.id
    for raw in (b"", b"\xff", b"\x00" * 70000, cbor.dumps([1]), cbor.dumps({"t": 1}),
                cbor.dumps({"t": "chunk"}), cbor.dumps({"t": "chunk", "id": "AB" * 16}),
                cbor.dumps({"t": "chunk", "id": tid[:-1]}), cbor.dumps({"t": "want", "id": tid}),
                b"\xc1\x00"):
        p.r.receive_data(raw, 0)
    n = 0
    while p.r.next_event() is not None:
        n += 1
    assert n == 10 and p.r.bad == 10
    p.run()
    check_done(p, blob(3000))


def test_unknown_transfer_chunk():
    r = tr.Receiver(MemStore())
    d = b"x" * 256
    r.receive_data(cbor.dumps({"t": "chunk", "id": "0" * 32, "i": 0, "d": d,
                               "h": hashlib.sha256(d).digest()[:8]}), 0)
    e = r.next_event()
    assert isinstance(e, tr.TransferError) and "offer first" in e.text
    (tid, raw), = r.messages_to_send()
    m = cbor.loads(raw)
    assert tid == "0" * 32 and m["t"] == "error" and m["code"] == "unknown"


def test_whole_hash_mismatch():
    data = blob(10 * 256)
    lie = hashlib.sha256(b"something else").digest()
    s = Sender(data, chunk=256, name="thermo", version="1.0", sha256=lie)
    p = Pair(data, sender=s)
    p.run()
    ok, detail = p.s.result
    assert not ok and "sha256 mismatch" in detail and "push again" in detail
    assert p.store.list("incoming/") == [] and not p.completes
    assert "sha256 mismatch" in p.errors("r")[-1].text


def test_node_rejects_package():
    data = blob(1000)
    p = Pair(data, chunk=256)
    p.verdict = (False, "signature not trusted")
    p.run()
    assert p.s.result == (False, "signature not trusted")
    assert p.store.list("incoming/") == []
    raises(tr.TransferError, p.r.finish, p.s.id, True, "x")   # already finished


def test_second_push_of_active_version_is_noop():
    data = blob(5000)
    seen = []

    def is_active(tid, name, version, sha):
        seen.append((name, version))
        return "active" if sha == hashlib.sha256(data).digest() else None
    p = Pair(data, chunk=1024, is_active=is_active)
    p.run()
    assert p.s.result == (True, "active") and p.s.chunks_sent == 0
    assert p.store.list("incoming/") == [] and seen == [("thermo", "1.0")]
    assert p.s.confirmed == len(data)


def test_max_size_and_chunk_limits():
    p = Pair(blob(2000), chunk=256, max_size=1000)
    p.run()
    ok, detail = p.s.result
    assert not ok and "at most 1000" in detail and p.s.chunks_sent == 0
    for chunk in (255, 65537):
        raises(tr.TransferError, Sender, b"x" * 300, chunk)
        r = tr.Receiver(MemStore())
        sha = hashlib.sha256(b"x").digest()
        r.receive_data(cbor.dumps({"t": "offer", "id": tr.transfer_id(sha), "size": 1000,
                                   "sha256": sha, "chunk": chunk, "name": "", "version": ""}), 0)
        (_, raw), = r.messages_to_send()
        m = cbor.loads(raw)
        assert m["t"] == "result" and not m["ok"] and "chunk" in m["error"]
    raises(tr.TransferError, Sender, b"")


def test_offer_id_must_match_sha():
    r = tr.Receiver(MemStore())
    sha = hashlib.sha256(b"x").digest()
    r.receive_data(cbor.dumps({"t": "offer", "id": "ab" * 16, "size": 10, "sha256": sha,
                               "chunk": 256, "name": "", "version": ""}), 0)
    assert "first 16 bytes" in r.next_event().text


def test_concurrency_bound_and_expiry():
    r = tr.Receiver(MemStore(), max_transfers=2, idle_ms=1000)
    ids = []
    for k in range(3):
        s = Sender(blob(600, k + 1), chunk=256)
        ids.append(s.id)
        for raw in s.messages_to_send(0):
            r.receive_data(raw, 0)
    out = [cbor.loads(b) for _, b in r.messages_to_send()]
    assert [m["t"] for m in out] == ["want", "want", "error"]
    assert out[2]["code"] == "busy" and sorted(r.active()) == sorted(ids[:2])
    s = Sender(blob(600, 3), chunk=256)
    for raw in s.messages_to_send(0):
        r.receive_data(raw, 5000)               # the first two went stale
    assert r.active() == [ids[2]]
    assert cbor.loads(r.messages_to_send()[-1][1])["t"] == "want"


def test_restart_after_complete_before_finish():
    data = blob(3000)
    p = Pair(data, chunk=256)
    p.verdict = None                            # node crashes while verifying
    p.run(until=lambda: p.completes)
    p.restart_receiver()
    p.verdict = (True, "active")
    p.s.reconnected(p.now)
    p.run()
    check_done(p, data)
    assert len(p.completes) == 2


def test_sender_timeout_gives_up():
    s = Sender(blob(1000), chunk=256, timeout=100, max_retries=2)
    offers = 0
    for now in range(0, 1000, 10):
        offers += sum(1 for b in s.messages_to_send(now) if cbor.loads(b)["t"] == "offer")
    assert offers == 3 and s.result[0] is False and "no answer" in s.result[1]


def test_sender_from_store_reader():
    data = blob(7000)
    src = MemStore()
    src.write("pkgs/thermo.pkg", data)
    s = Sender(StoreReader(src, "pkgs/thermo.pkg"), chunk=1024, name="thermo",
                  version="1.0")
    p = Pair(data, sender=s)
    p.run()
    check_done(p, data)
    raises(tr.TransferError, StoreReader, src, "nope")


def test_sender_ignores_bad_replies():
    s = Sender(blob(1000), chunk=256)
    s.messages_to_send(0)
    for m in ({"t": "want", "id": s.id, "o": 1, "ranges": [[0, 9]], "upto": 4},
              {"t": "want", "id": s.id, "o": 1, "ranges": [[2, 1]], "upto": 4},
              {"t": "ack", "id": s.id, "ranges": "x", "upto": 4},
              {"t": "result", "id": s.id, "ok": "yes"},
              {"t": "want", "id": "ab" * 16, "o": 1, "ranges": [], "upto": 4}):
        s.receive_data(cbor.dumps(m), 0)
        assert isinstance(s.next_event(), tr.TransferError)
    assert s.result is None and s.chunks_sent == 0
