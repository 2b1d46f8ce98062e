"""Gateway-to-gateway event mesh over QUIC links.

Each peer has a persisted Outbox (`quic/out/<key>/` on the gateway store):
`addr-<host>_<port>` for a peer from `[quic] peers` (this side connects,
reconnecting with backoff), `node-<node id>` for a gateway that connected
to us.  One mesh stream per link carries envelopes both ways
(node/core/quicwire.py MeshStream: ev with the outbox id, ack after
delivery), so every event is delivered at least once and the receiver's
Dedup makes it once.

Envelope, dedup and loop rules are the MQTT ones (docs/MESH.md), extended
for point-to-point links, which have no broker to fan out: an envelope
accepted from one link (new to Dedup) is relayed to every *other* link,
never back to the peer it came from nor to its origin; a repeat is never
relayed, so a ring of links cannot loop.  When the gateway is on MQTT too,
the two transports share one SeqCounter and one Dedup (the MQTT
forwarder's), envelopes from QUIC are published under their origin's MQTT
tree and envelopes from MQTT are relayed to the QUIC peers: one bridge,
no duplicates.
"""
import asyncio
import time

from node.core import envelope as E, forwarding as FW
from node.core.bus import TopicError, matches
from node.core.outbox import Outbox, OutboxError
from node.core.quicwire import Acked, Ev, MeshStream
from node.quic import driver

FLUSH_S = 0.05
PING_S = 1.0            # ping an idle-looking link this often; 3 misses = dead
STALL_S = 30.0          # full window and no ack this long: the peer is stuck
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
MAX_INBOUND = 64        # inbound peers with an outbox
SEND_BUFFER = 1 << 20   # don't queue more than this in QUIC for one peer


def _key_addr(host, port):
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in host)
    return "addr-%s_%d" % (safe, port)


class Peer:
    def __init__(self, mesh, key, addr=None, node=None):
        self.key, self.addr, self.node = key, addr, node
        self.outbox = Outbox(mesh.gw.store, prefix="quic/out/%s/" % key,
                             max_items=mesh.cfg.outbox_max, max_bytes=mesh.cfg.outbox_bytes)
        self.link = self.stream = None
        self.ms = MeshStream(mesh.cfg.window)
        self.sent_upto = -1
        self.state = "down" if addr is None else "connecting"
        self.since = time.time()
        self.connects = self.resumed = 0
        self.last_error = None
        self.ticket = None
        self.last_ack = time.monotonic()
        self.closed_ev = asyncio.Event()
        self.dropped_logged = self.outbox.dropped

    def stats(self):
        return {"peer": self.key, "addr": "%s:%d" % self.addr if self.addr else None,
                "dir": "out" if self.addr else "in", "node": self.node, "state": self.state,
                "since": round(self.since, 3), "connects": self.connects,
                "resumed": self.resumed, "outbox": len(self.outbox),
                "outbox_dropped": self.outbox.dropped, "inflight": self.ms.inflight(),
                "sent": self.ms.sent, "received": self.ms.received,
                "last_error": self.last_error}


class _MeshHandler:
    def __init__(self, mesh, peer, link):
        self.mesh, self.peer, self.link = mesh, peer, link

    def on_frame(self, payload):
        self.mesh._frame(self.peer, self.link, payload)

    def on_close(self, why):
        pass        # link_closed() does the bookkeeping


class Mesh:
    def __init__(self, node, gw, cfg):
        self.node, self.gw, self.cfg, self.log = node, gw, cfg, gw.log
        self.me = gw.cfg.node_id
        self.fwd = gw.mesh.fwd if gw.mesh is not None else None     # MQTT bridge
        if self.fwd is not None:
            self.seq, self.dedup = self.fwd.seq, self.fwd.dedup
        else:
            self.seq, self.dedup = E.SeqCounter(gw.store, "mesh/seq"), E.Dedup()
        self.peers = {}
        for host, port in cfg.peers:
            k = _key_addr(host, port)
            self.peers[k] = Peer(self, k, addr=(host, port))
        for name in gw.store.list("quic/out/node-"):
            k = name.split("/")[2]
            if k not in self.peers and len(self.peers) < MAX_INBOUND + len(cfg.peers):
                self.peers[k] = Peer(self, k, node=k[5:])
        self.counts = {"received": 0, "dups": 0, "own": 0, "bad_envelopes": 0,
                       "not_accepted": 0, "relayed": 0, "forwarded": 0, "to_mqtt": 0}
        self._tasks = []
        self._flush_at = None
        self._send_at = None
        self._stopping = False

    # ---- start / stop ---------------------------------------------------
    def start(self):
        if self.fwd is not None:
            self.fwd.bridge = self       # its tap hands us each envelope it encodes
        else:
            self.gw.host.taps.append(self.tap)
        for p in self.peers.values():
            if len(p.outbox):
                self.log("info", "quic outbox restored", peer=p.key, pending=len(p.outbox))
            if p.addr is not None:
                self._tasks.append(asyncio.ensure_future(self._dial(p)))

    async def stop(self):
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for p in self.peers.values():
            if p.link is not None:
                p.link.close(error_code=driver.ERR_SHUTDOWN, reason_phrase="gateway stopping")
        self.flush()

    # ---- outgoing: own events and relays --------------------------------
    def tap(self, ev):
        """host tap (QUIC-only gateway): this node's module events."""
        if not FW.is_own_module_event(ev, self.me):
            return
        try:
            rec = E.encode(self.me, self.seq.take(), ev.ts, ev.topic, ev.data, ev.mod)
        except E.EnvelopeError as e:
            self.log("warn", "event not forwarded", topic=ev.topic, mod=ev.mod, error=str(e))
            return
        self.own(rec, ev.topic)

    def own(self, rec, topic):
        """An envelope of our own module's event (from tap, or from the MQTT
        forwarder, which encoded it once for both transports)."""
        if self.cfg.forward is not None and not any(matches(f, topic) for f in self.cfg.forward):
            return
        self._enqueue(rec, None, None)

    def relayed(self, env, rec):
        """An envelope the MQTT forwarder accepted (new to the shared Dedup)."""
        self._enqueue(rec, env.src, None)

    def _enqueue(self, rec, origin, from_node):
        """Queue rec for every peer but the origin and the one it came
        from; returns how many outboxes took it."""
        n = 0
        for p in self.peers.values():
            if p.node is not None and p.node in (origin, from_node):
                continue
            try:
                p.outbox.push(rec)
            except OutboxError as e:
                self.log("warn", "event not queued for peer", peer=p.key, error=str(e))
                continue
            n += 1
            if p.outbox.dropped != p.dropped_logged:
                self.log("warn", "quic outbox full: dropped oldest events", peer=p.key,
                         dropped=p.outbox.dropped - p.dropped_logged, limit=p.outbox.max_items)
                p.dropped_logged = p.outbox.dropped
        if n:
            self._soon()
        return n

    def _soon(self):
        loop = self.gw.loop
        if self._send_at is None:
            self._send_at = loop.call_soon(self._send_all)
        if self._flush_at is None:
            self._flush_at = loop.call_later(FLUSH_S, self.flush)

    def flush(self):
        self._flush_at = None
        for p in self.peers.values():
            p.outbox.flush()

    def _send_all(self):
        self._send_at = None
        for p in self.peers.values():
            self._send(p)

    def _send(self, p):
        s = p.stream
        if s is None or p.link is None or p.link.closed:
            return
        room = p.ms.room()
        if room <= 0:
            if time.monotonic() - p.last_ack > STALL_S:
                p.link.abort("peer %s acknowledged no event for %ds with %d in flight"
                             % (p.node, STALL_S, p.ms.inflight()), driver.ERR_SLOW)
            return
        if s.buffered() > SEND_BUFFER:
            return
        if not p.ms.inflight():
            p.last_ack = time.monotonic()
        try:
            for i, rec in p.outbox.peek(room, after=p.sent_upto):
                s.send(p.ms.send(i, rec))
                p.sent_upto = i
        except driver.LinkClosed:
            pass

    # ---- incoming ---------------------------------------------------------
    def _frame(self, p, link, payload):
        for item in p.ms.receive(payload):     # FrameError closes the link
            if isinstance(item, Ev):
                self._deliver(p, link, item.rec)
                p.ms.ack(item.i)
            elif isinstance(item, Acked):
                p.last_ack = time.monotonic()
                for i in item.ids:
                    if p.outbox.ack(i):
                        self.counts["forwarded"] += 1
                self._soon()
        for m in p.ms.messages_to_send():
            try:
                p.stream.send(m)
            except driver.LinkClosed:
                return

    def _deliver(self, p, link, rec):
        c = self.counts
        try:
            env = E.decode(rec)
            if env.topic.startswith("$"):
                raise E.EnvelopeError("topic %r is reserved" % env.topic)
        except E.EnvelopeError as e:
            c["bad_envelopes"] += 1
            n = c["bad_envelopes"]
            if n <= 20 or n % 1000 == 0:
                self.log("warn", "bad envelope dropped", transport="quic", peer=link.peer,
                         error=str(e), total=n)
            return
        if env.src == self.me:
            c["own"] += 1
            return
        if self.cfg.accept is not None and not any(matches(f, env.topic) for f in self.cfg.accept):
            c["not_accepted"] += 1
            return
        if self.dedup.seen(env.src, env.seq):
            c["dups"] += 1
            return
        try:
            self.gw.host.publish(env.topic, env.data, src=env.src, mod=env.mod)
        except (TopicError, OverflowError) as e:
            c["bad_envelopes"] += 1
            self.log("warn", "mesh event refused", src=env.src, topic=env.topic, error=str(e))
            return
        c["received"] += 1
        self.gw.kick()
        c["relayed"] += self._enqueue(rec, env.src, link.peer)
        if self.fwd is not None:
            self.fwd.publish_foreign(env, rec)
            c["to_mqtt"] += 1

    # ---- links --------------------------------------------------------------
    def accept_stream(self, link, stream):
        """A peer gateway opened a mesh stream to us."""
        if link.peer == self.me:
            link.abort("a peer presents this node's own id %s" % self.me)
            return None
        k = "node-" + link.peer
        p = self.peers.get(k)
        if p is None:
            if sum(1 for q in self.peers.values() if q.addr is None) >= MAX_INBOUND:
                self.log("warn", "too many inbound mesh peers; refused", peer=link.peer)
                return None
            p = self.peers[k] = Peer(self, k, node=link.peer)
        if p.link is not None and p.link is not link:
            p.link.abort("replaced by a new connection from %s" % link.peer)
        self._attach(p, link, stream)
        return _MeshHandler(self, p, link)

    def _attach(self, p, link, stream):
        p.link, p.stream, p.node = link, stream, link.peer
        p.ms.reset()
        p.sent_upto = -1
        p.state, p.since, p.last_error = "up", time.time(), None
        p.connects += 1
        p.resumed += link.resumed
        p.closed_ev.clear()
        self.log("info", "quic peer up", peer=p.key, remote=link.peer, addr=link._addr(),
                 resumed=link.resumed, outbox=len(p.outbox))
        self._soon()

    def link_closed(self, link, why):
        for p in self.peers.values():
            if p.link is link:
                p.link = p.stream = None
                p.ms.reset()
                p.sent_upto = -1
                p.state = "connecting" if p.addr else "down"
                p.since, p.last_error = time.time(), why
                p.closed_ev.set()
                if not self._stopping:
                    self.log("warn", "quic peer down", peer=p.key, remote=p.node, reason=why,
                             outbox=len(p.outbox))

    async def _dial(self, p):
        host, port = p.addr
        fails = 0
        while not self._stopping:
            p.state = "connecting"
            try:
                link = await driver.connect(
                    host, port, self.node.files, app=self.node, log=self.log, ticket=p.ticket,
                    on_ticket=lambda t: setattr(p, "ticket", t), timeout=3.0,
                    idle_timeout=self.cfg.idle_timeout)
            except (OSError, asyncio.TimeoutError, driver.LinkClosed) as e:
                why = str(e) or type(e).__name__
                p.state, p.last_error = "down", why
                if fails == 0 or fails % 20 == 0:
                    self.log("warn", "quic peer unreachable; retrying", peer=p.key, reason=why,
                             attempts=fails + 1)
                await asyncio.sleep(BACKOFF[min(fails, len(BACKOFF) - 1)])
                fails += 1
                continue
            if link.peer == self.me:
                link.abort("peer %s:%d is this node" % (host, port))
                p.last_error = "peer is this node"
                await asyncio.sleep(BACKOFF[-1])
                continue
            fails = 0
            try:
                self._attach(p, link, link.open_stream("mesh", _MeshHandler(self, p, link)))
            except driver.LinkClosed:
                continue
            await self._watch(p, link)
            await driver.close_link(link)
            await asyncio.sleep(BACKOFF[0])

    async def _watch(self, p, link):
        """Until the link dies: ping it so a vanished peer is noticed."""
        while not link.closed:
            try:
                await asyncio.wait_for(p.closed_ev.wait(), PING_S)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.wait_for(link.ping(), 3 * PING_S)
            except (asyncio.TimeoutError, ConnectionError):
                if not link.closed:
                    link.abort("peer did not answer a ping for %.0fs" % (3 * PING_S))

    def tick(self):
        self._send_all()

    def stats(self):
        d = dict(self.counts)
        d["peers"] = [p.stats() for p in self.peers.values()]
        return d
