# Eager sender: the first window follows the offer without waiting for the
# `want`.  Same Pair harness as test_transfer.py (ordered in-memory link).
# Plain functions and asserts: runs under pytest and tests/core/mp_run.py.
from node.core import transfer as tr
from node.core.transfer_send import Sender

from test_transfer import Pair, blob, check_done


def eager(data, chunk=1024, window=16):
    return Sender(data, chunk=chunk, window=window, name="thermo", version="1.0",
                     eager=True)


def test_eager_first_step_carries_offer_and_window():
    data = blob(20 * 1024)
    s = eager(data, window=8)
    out = s.messages_to_send(0)
    assert len(out) == 9 and s.chunks_sent == 8       # offer + 8 chunks at once


def test_eager_transfer_sends_each_chunk_once():
    for size, window in ((1, 16), (5 * 1024 + 3, 16), (40 * 1024, 16), (40 * 1024, 4)):
        data = blob(size, size)
        p = Pair(data, window=window, sender=eager(data, window=window))
        p.run()
        check_done(p, data)
        n = (size + 1023) // 1024
        # The want for the first offer predates the eager chunks: they are
        # kept in flight, not sent again.
        assert p.s.chunks_sent == n and p.delivered["chunk"] == n, (size, p.s.chunks_sent)
        assert not p.errors("r") and not p.errors("s")


def test_eager_resume_counts_held_chunks_as_duplicates():
    data = blob(30 * 1024)
    p = Pair(data, persist_every=1)
    p.run(until=lambda: p.have() >= 20)
    p.s.messages_to_send(p.now)     # cut the first CLI run short
    p.restart_receiver()
    p.s = eager(data)               # a new `aegis push` run, eager
    p.run()
    check_done(p, data)
    assert p.r.dups <= 16           # at most the eager window was redundant
    assert not p.errors("s")


def test_eager_chunks_after_a_final_answer_are_dropped_quietly():
    data = blob(10 * 1024)
    p = Pair(data, is_active=lambda tid, name, version, sha: "running")
    p.s = eager(data)
    p.run()
    assert p.s.result == (True, "running")
    assert p.delivered["chunk"] == 10 and p.r.dups == 10
    assert not p.errors("r") and not p.errors("s")
    assert p.store.list("incoming/") == []


def test_receiver_remembers_only_the_last_ended_transfers():
    from node.core.memstore import MemStore
    r = tr.Receiver(MemStore(), is_active=lambda tid, name, version, sha: "running")
    out = [eager(blob(300, k + 1), chunk=256).messages_to_send(0) for k in range(10)]
    for msgs in out:                # 10 offers, each answered "already active"
        r.receive_data(msgs[0], 0)
    for msgs in out:                # then each one's 2 eager chunks
        for m in msgs[1:]:
            r.receive_data(m, 0)
    errs = []
    while True:
        e = r.next_event()
        if e is None:
            break
        if isinstance(e, tr.TransferError):
            errs.append(e)
    assert r.dups == 8 * 2          # the last 8 ended transfers: dropped quietly
    assert len(errs) == 2 * 2       # the first 2 were forgotten: "unknown" each
