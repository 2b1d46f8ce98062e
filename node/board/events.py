# Module events on a board (docs/BOARDS.md "What runs on the board"): a
# module's emit checked against its manifest, the local bus, mesh envelopes
# in with Dedup, and events out to the mesh through the outbox on flash
# with a small QoS 1 window.  Imported by node/board/runtime.py on first
# use only, with the envelope code: a board without modules loads neither
# (docs/BOARDS.md "Heap budget").
from node.core import envelope as E
from node.board.runtime import wall_ms

from micropython import const     # board only, never imported on CPython

_WIN = const(4)             # forwarded events awaiting PUBACK
_BUS_CACHE = const(32)      # topics whose matches the bus may cache


def emit(b, rec, topic, data):
    """A module's emit on board b: checked against its manifest, then the
    local bus and the outbox (at-least-once to the mesh).  False if denied."""
    if type(topic) is not str or type(data) is not bytes:
        return False
    E.check_topic(topic)
    if topic[0] == "$" or not any(topic.startswith(p) for p in rec["emit"]):
        return False
    mod = "%s@%s" % (rec["name"], rec["v"])
    dispatch(b, topic, data, b.id, mod)
    b.outbox.push(E.encode(b.id, b.seq.take(), wall_ms(), topic, data, mod))
    b._flush_due = True
    send_more(b)
    return True


def dispatch(b, topic, data, src, mod):
    """An event to the engines of the modules subscribed to it, once each."""
    bus = b.bus
    subs = bus.match(topic)
    if len(bus._cache) > _BUS_CACHE:
        bus._cache = {}
    engines = []
    for name in subs:
        rec = b.mods.get(name)
        if rec is None or rec.get("mode") is None:
            continue
        # A proxied module's own emits were already delivered on its host.
        if rec["mode"] == "proxy" and src == b.id and mod not in E.NOT_MODULES:
            continue
        eng = b.native if rec["mode"] == "native" else b.proxy
        if eng not in engines:
            engines.append(eng)
    for eng in engines:
        eng.deliver(topic, data, src, mod)


def on_envelope(b, topic, payload):
    """A mesh event from another node: checked, deduplicated, dispatched."""
    c = b.counts
    try:
        src, t = E.parse_ev_topic(b.fleet, topic)
        if src == b.id:
            c["own"] += 1
            return
        env = E.decode(bytes(payload), 8192)
        if env.src != src or env.topic != t or t[0] == "$":
            raise E.EnvelopeError("envelope does not match its topic")
    except (E.EnvelopeError, ValueError):
        c["bad_envelopes"] += 1
        return
    if b.dedup.seen(env.src, env.seq):
        c["dups"] += 1
        return
    c["received"] += 1
    dispatch(b, t, env.data, env.src, env.mod)


def send_more(b):
    """Publish outbox records after the last one sent while the window has
    room; each stays in the outbox until its PUBACK (Board.events)."""
    if not b.link.connected:
        return
    ob, inflight = b.outbox, b.inflight
    while len(inflight) < _WIN:
        nxt = ob.peek(1, after=b._sent_upto)
        if not nxt:
            return
        i, rec = nxt[0]
        try:
            topic = b.ev_base + E.decode(rec).topic
        except E.EnvelopeError:
            ob.ack(i)
            continue
        pid = b.link.publish(topic, rec, 1)
        if pid is None:
            return
        inflight[pid] = i
        b._sent_upto = i
