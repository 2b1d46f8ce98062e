# The Receiver hashes chunks as they arrive in order, so completing a
# transfer re-reads only what arrived out of order (or before a restart).
# Plain functions and asserts: runs under pytest and tests/core/mp_run.py.
import hashlib

from node.core.transfer_send import Sender
from node.core.memstore import MemStore

from node.core import transfer as tr
from helpers import raises
from test_transfer import Pair, blob, check_done


class ReadCountingStore(MemStore):
    def __init__(self):
        MemStore.__init__(self)
        self.read_bytes = 0

    def read_at(self, name, off, n):
        b = MemStore.read_at(self, name, off, n)
        self.read_bytes += len(b)
        return b


def pair(data, **kw):
    """A Pair whose node, like a gateway, answers offers for the package it
    has installed (is_active) instead of handing the stored file over again."""
    box = []
    p = Pair(data, store=ReadCountingStore(),
             is_active=lambda tid, name, version, sha: "active" if box[0].completes else None,
             **kw)
    box.append(p)
    return p


def test_in_order_transfer_reads_nothing_back():
    data = blob(20 * 512 + 7)
    p = pair(data, chunk=512, window=8)
    p.run()
    check_done(p, data)
    assert p.store.read_bytes == 0


def test_out_of_order_chunk_reads_back_from_the_gap():
    data = blob(20 * 512)
    p = pair(data, chunk=512, window=8)
    lost = []

    def drop(d, m):
        if d == "s2r" and m["t"] == "chunk" and m["i"] == 5 and not lost:
            lost.append(5)
            return True
        return False
    p.drop = drop
    p.run()
    check_done(p, data)
    assert lost == [5]
    # Chunks 0..4 were hashed on arrival, then 5 when it came again (after
    # 6..); from chunk 6 on the file is read back.
    assert p.store.read_bytes == len(data) - 6 * 512


def test_resumed_transfer_hashes_what_is_on_the_store():
    data = blob(30 * 256)
    p = pair(data, chunk=256, window=8, persist_every=5)
    p.run(until=lambda: p.have() >= 12)
    p.restart_receiver()            # the running hash is lost with the process
    p.run()
    check_done(p, data)
    assert p.store.read_bytes >= len(data) - 256


def test_mismatch_still_detected_with_running_hash():
    # Every chunk is self-consistent (its own 8-byte hash matches), but the
    # offer names other bytes: the running hash refuses the whole package.
    data = blob(8 * 256)
    lie = hashlib.sha256(b"something else").digest()
    s = Sender(data, chunk=256, name="thermo", version="1.0", sha256=lie)
    p = Pair(data, sender=s, store=ReadCountingStore())
    p.run()
    assert p.s.result[0] is False and "sha256 mismatch" in p.s.result[1], p.s.result
    assert p.store.list("incoming/") == [] and not p.completes
    assert p.store.read_bytes == 0


def test_received_head_and_refuse():
    data = blob(10 * 256)
    p = pair(data, chunk=256, window=4)
    p.verdict = None                    # the test answers for the node
    p.run(until=lambda: p.r.received_head(p.s.id)[1] > 0)
    name, n = p.r.received_head(p.s.id)
    assert name == "incoming/%s.part" % p.s.id and 0 < n < len(data) and n % 256 == 0
    assert p.store.read_at(name, 0, n) == data[:n]
    p.r.refuse(p.s.id, "bad signature on package thermo@1.0")
    p._pump_r()
    assert p.s.result == (False, "bad signature on package thermo@1.0")
    assert p.store.list("incoming/") == [] and p.r.received_head(p.s.id) == (None, 0)
    assert raises(tr.TransferError, p.r.refuse, p.s.id, "again")
    # Chunks still on their way are dropped quietly, not answered.
    for m in p.s.messages_to_send(p.now):
        p.r.receive_data(m, p.now)
    assert p.r.messages_to_send() == [] and not p.errors("r")
