"""A board releases its push receiver once a package is complete, before the
check and the proxy handover (node/board/deploy.py, docs/BOARDS.md "Heap
budget"), and still answers the pusher as the receiver would: a re-offer
while the module starts gets an ack for every chunk (never a `want` that
would send the package again), late chunks are dropped, and the final
result comes once the module runs.  Real MicroPython board, real
Mosquitto, real `aegis proxy`; the pusher is the core Sender driven here
so the test can re-offer at the moment it needs to."""
import hashlib
import time
import types

import cbor2
import pytest

from broker import Subscriber, broker  # noqa: F401 (fixture)
from conftest import Signer
from gateway_proc import wait_for
from host_sim.boards import ProxyHost, SourceBoard
from node.core.transfer import _msg, transfer_id
from node.core.transfer_send import Sender

BASE = "aegis/test/node/b1/"


def replies(sub, tid):
    out = []
    for t, p in list(sub.msgs):
        if t == BASE + "deploy/reply":
            m = cbor2.loads(p)
            if m.get("id") == tid:
                out.append(m)
    return out


def drive(sender, sub, seen, until, what, timeout=60):
    """Run the sender over MQTT (publish what it sends, feed it the board's
    replies) until until() holds."""
    deadline = time.monotonic() + timeout

    def replies_now():
        return [p for t, p in list(sub.msgs) if t == BASE + "deploy/reply"]
    while True:
        now = int(time.monotonic() * 1000)
        for m in sender.messages_to_send(now):
            sub.publish(BASE + "deploy", m)
        rs = replies_now()
        for p in rs[seen[0]:]:
            sender.receive_data(p, now)
        seen[0] = len(rs)
        while sender.next_event() is not None:
            pass
        if until():
            return
        assert time.monotonic() < deadline, "timed out waiting for " + what
        # The sender moves on replies, or on its silence timeout.
        tick = time.monotonic() + 0.5
        wait_for(lambda: len(replies_now()) > seen[0] or time.monotonic() > tick, 5, what)


@pytest.fixture
def b1(tmp_path, broker):
    """Board b1 in proxy mode, connected; a subscriber on the fleet's topics;
    `proxy_host()` starts its proxy host when a test wants it.  All stopped after."""
    env = types.SimpleNamespace(op=Signer(str(tmp_path / "op")), hosts=[])
    env.sub = Subscriber(broker, "aegis/test/#")
    env.board = SourceBoard("b1", tmp_path / "b1", broker.url, [env.op.pub],
                            extra={"status_ms": 1000, "engine": "proxy"})

    def proxy_host():
        env.hosts.append(ProxyHost("gw-1", tmp_path / "gw", broker.url, [env.op.pub],
                                   ["b1"]).start())
    env.proxy_host = proxy_host
    try:
        env.board.start()
        env.board.wait_for("connected to broker")
        yield env
    finally:
        for h in env.hosts:
            h.stop()
        env.board.stop()
        env.sub.close()


def test_receiver_released_before_handover_still_answers_the_pusher(b1):
    op, sub, board = b1.op, b1.sub, b1.board
    wait_for(lambda: [1 for t, p in list(sub.msgs) if t == BASE + "status"
                      and cbor2.loads(p).get("online")], 20, "board online")
    pkg = op.example("facts")
    # No proxy host yet: once verified, the module stays "starting" (its
    # handover unanswered), the push complete on the board's flash.
    s = Sender(pkg, chunk=1024, window=4, name="facts", version="1.0.0", timeout=3000)
    seen = [0]
    drive(s, sub, seen, lambda: s.confirmed == s.size, "every chunk acked")
    board.wait_for("package facts@1.0.0 verified")
    assert s.result is None

    # The pusher is unsure (say, it reconnected) and offers again: all
    # chunks held, no want.
    before = len(replies(sub, s.id))
    s.reconnected(int(time.monotonic() * 1000))
    for m in s.messages_to_send(int(time.monotonic() * 1000)):
        sub.publish(BASE + "deploy", m)
    ack = wait_for(lambda: [m for m in replies(sub, s.id)[before:] if m["t"] == "ack"],
                   20, "ack to the re-offer")[0]
    assert ack["have"] == ack["n"] == s.n and ack["ranges"] == [] and ack["upto"] == s.n
    assert not [m for m in replies(sub, s.id)[before:] if m["t"] in ("want", "error")]

    # The proxy host comes: the module starts, the pusher gets its result.
    b1.proxy_host()
    drive(s, sub, seen, lambda: s.result is not None, "the result", timeout=90)
    assert s.result[0] is True and "running" in s.result[1], s.result
    assert [m["ok"] for m in replies(sub, s.id) if m["t"] == "result"] == [True]
    # Pushed again: answered at once as already active.
    s2 = Sender(pkg, chunk=1024, window=4, name="facts", version="1.0.0")
    drive(s2, sub, seen, lambda: s2.result is not None, "the second push's result")
    assert s2.result[0] is True and "already active" in s2.result[1], s2.result
    assert board.proc.poll() is None


def test_late_chunks_after_a_refusal_stay_quiet(tmp_path, b1):
    """The result was sent by deploy.py itself (receiver released): chunks
    the pusher sent before it saw the result (say, resent after a timeout
    while the board verified, or redelivered after a reconnect) may still
    come seconds later, and are dropped quietly, as the receiver drops them
    after a result of its own -- not answered with "unknown transfer"
    errors once the push code idles."""
    stranger = Signer(str(tmp_path / "stranger"))
    sub, board = b1.sub, b1.board
    pkg = stranger.example("facts")     # signed by a key the board does not trust
    sha = hashlib.sha256(pkg).digest()
    tid, n = transfer_id(sha), (len(pkg) + 255) // 256
    assert n > 1

    def chunk(t, i, d):
        return _msg("chunk", t, i=i, d=d, h=hashlib.sha256(d).digest()[:8])
    # The pusher's side by hand, so nothing else (no poll) follows it.
    sub.publish(BASE + "deploy", _msg("offer", tid, o=1, size=len(pkg), sha256=sha,
                                      chunk=256, win=16, name="facts", version="1.0.0"))
    wait_for(lambda: [m for m in replies(sub, tid) if m["t"] == "want"], 30, "want")
    for i in range(n):
        sub.publish(BASE + "deploy", chunk(tid, i, pkg[i * 256:(i + 1) * 256]))
    res = wait_for(lambda: [m for m in replies(sub, tid) if m["t"] == "result"], 60,
                   "the refusal")[0]
    assert res["ok"] is False and "unknown key" in res["error"], res

    # A few board ticks later (a status every second)...
    def statuses():
        return len([1 for t, _ in list(sub.msgs) if t == BASE + "status"])
    k = statuses()
    wait_for(lambda: statuses() >= k + 3, 30, "three more statuses")
    # ...a late chunk of the refused push, then a probe: a chunk of a
    # transfer the board never heard of, which is answered ("unknown").
    sub.publish(BASE + "deploy", chunk(tid, 0, pkg[:256]))
    probe = "0" * 32
    sub.publish(BASE + "deploy", chunk(probe, 0, b"x"))
    wait_for(lambda: [m for m in replies(sub, probe) if m["t"] == "error"], 30,
             "the probe's answer")
    ts = [m["t"] for m in replies(sub, tid)]
    assert ts.count("result") == 1 and ts[ts.index("result") + 1:] == [], ts
    assert board.proc.poll() is None


def test_second_push_during_a_handover(b1):
    """A second push comes while the first's module is still starting (its
    receiver released, its proxy handover unanswered): it gets a receiver of
    its own, is verified too, and both pushers get their results once the
    proxy host comes."""
    op, sub, board = b1.op, b1.sub, b1.board
    s1 = Sender(op.example("facts"), chunk=1024, window=4, name="facts", version="1.0.0",
                timeout=3000)
    seen1 = [0]
    drive(s1, sub, seen1, lambda: s1.confirmed == s1.size, "facts: every chunk acked")
    board.wait_for("package facts@1.0.0 verified")
    s2 = Sender(op.example("counter"), chunk=1024, window=4, name="counter",
                version="1.0.0", timeout=3000)
    seen2 = [0]
    drive(s2, sub, seen2, lambda: s2.confirmed == s2.size, "counter: every chunk acked")
    board.wait_for("package counter@1.0.0 verified")
    assert s1.result is None and s2.result is None

    b1.proxy_host()
    drive(s1, sub, seen1, lambda: s1.result is not None, "facts: the result", timeout=90)
    drive(s2, sub, seen2, lambda: s2.result is not None, "counter: the result", timeout=90)
    assert s1.result[0] is True and "running" in s1.result[1], s1.result
    assert s2.result[0] is True and "running" in s2.result[1], s2.result
    for s in (s1, s2):
        assert [m["ok"] for m in replies(sub, s.id) if m["t"] == "result"] == [True]
        assert not [m for m in replies(sub, s.id) if m["t"] == "error"], replies(sub, s.id)
    assert board.proc.poll() is None
