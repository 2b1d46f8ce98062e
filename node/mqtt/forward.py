"""Event forwarding: module events -> outbox -> MQTT (QoS 1), and mesh
envelopes -> local subscribers.  Runs on the gateway's event loop thread.

Loop rule (docs/MESH.md): only events this node's own modules raised go
out.  Events delivered from the mesh are published on the host with the
origin's `src`, which is never our node id, so the tap recognises them
without any marking; envelopes carrying our own `src` are dropped on the
way in (they came back through a bridge).
"""
import time

from node.core import envelope as E
from node.core.bus import TopicError, matches
from node.core.outbox import Outbox, OutboxError

NOT_MODULES = ("", "cli", "mesh")
STALL_S = 30.0      # in flight without any PUBACK this long: resend from head
FLUSH_S = 0.05      # outbox fsync at most this often (appends reach the OS at once)


class Forwarder:
    def __init__(self, gw, link, mcfg):
        self.gw, self.link, self.log = gw, link, gw.log
        self.host, self.node_id, self.fleet = gw.host, gw.cfg.node_id, gw.cfg.fleet
        self.forward = mcfg.forward
        self.accept = mcfg.accept
        self.outbox = Outbox(gw.store, prefix="outbox/", max_items=mcfg.outbox_max,
                             max_bytes=mcfg.outbox_bytes)
        self.seq = E.SeqCounter(gw.store, "mesh/seq")
        self.dedup = E.Dedup()
        self.window = mcfg.inflight
        self._inflight = {}     # MQTT mid -> outbox id
        self._sent_upto = -1    # highest outbox id handed to paho
        self._last_ack = time.monotonic()
        self._dropped_logged = self.outbox.dropped
        self._dirty = False
        self._flush_at = None   # loop timer of the pending outbox flush
        self._fresh = {}        # outbox id -> (mqtt topic, record), not yet sent
        self._ev_base = E.ev_topic(self.fleet, self.node_id, "x")[:-1]
        self.counts = {"forwarded": 0, "received": 0, "dups": 0, "own": 0,
                       "bad_envelopes": 0, "not_accepted": 0}
        if len(self.outbox):
            self.log("info", "outbox restored", pending=len(self.outbox),
                     dropped=self.outbox.dropped)

    # ---- outgoing -----------------------------------------------------
    def tap(self, ev):
        """host tap: called for every event, inside host.pump()."""
        if ev.src != self.node_id or ev.mod in NOT_MODULES or ev.topic.startswith("$"):
            return
        if self.forward is not None and not any(matches(f, ev.topic) for f in self.forward):
            return
        try:
            rec = E.encode(self.node_id, self.seq.take(), ev.ts, ev.topic, ev.data, ev.mod)
            i = self.outbox.push(rec)
        except (E.EnvelopeError, OutboxError) as e:
            self.log("warn", "event not forwarded", topic=ev.topic, mod=ev.mod, error=str(e))
            return
        # Fresh records go out from RAM; the store copy is for restarts.
        if len(self._fresh) < 4 * self.window:
            self._fresh[i] = (self._ev_base + ev.topic, rec)
        self._dirty = True

    def after_pump(self):
        """After a batch of events: fill the send window now, and flush the
        outbox soon.  Appends are already in the OS (they survive kill -9);
        the flush (fsync + ack state) is what a power cut needs, and one
        per FLUSH_S bounds its cost when events arrive one at a time."""
        if self._dirty:
            self._dirty = False
            if self._flush_at is None:
                self._flush_at = self.gw.loop.call_later(FLUSH_S, self.flush)
            if self.outbox.dropped != self._dropped_logged:
                self._fresh.clear()     # some of them may be the dropped ones
                self.log("warn", "outbox full: dropped oldest events",
                         dropped=self.outbox.dropped - self._dropped_logged,
                         dropped_total=self.outbox.dropped, limit=self.outbox.max_items)
                self._dropped_logged = self.outbox.dropped
        self.send_more()

    def flush(self):
        self._flush_at = None
        self.outbox.flush()

    def send_more(self):
        if not self.link.connected:
            return
        room = self.window - len(self._inflight)
        if room <= 0:
            if time.monotonic() - self._last_ack > STALL_S:
                self.log("warn", "no PUBACK for %ds; resending the outbox" % STALL_S,
                         inflight=len(self._inflight))
                self.resend_all()
            return
        nxt = self._sent_upto + 1
        if nxt in self._fresh:
            todo = []
            while nxt in self._fresh and len(todo) < room:
                todo.append((nxt,) + self._fresh.pop(nxt))
                nxt += 1
        else:
            self._fresh.clear()     # after a restart/drop/resend: the store is the truth
            todo = self._from_store(room)
        for i, topic, rec in todo:
            mid = self.link.publish(topic, rec, qos=1)
            if mid is None:
                break
            if not self._inflight:
                self._last_ack = time.monotonic()
            self._inflight[mid] = i
            self._sent_upto = i

    def _from_store(self, room):
        out = []
        for i, rec in self.outbox.peek(room, after=self._sent_upto):
            try:
                out.append((i, E.ev_topic(self.fleet, self.node_id, E.decode(rec).topic), rec))
            except E.EnvelopeError as e:  # cannot happen for what we wrote
                self.log("error", "unreadable outbox record dropped", id=i, error=str(e))
                self.outbox.ack(i)
        return out

    def on_puback(self, mid):
        i = self._inflight.pop(mid, None)
        if i is None:
            return
        self._last_ack = time.monotonic()
        if self.outbox.ack(i):
            self.counts["forwarded"] += 1
        self._dirty_acks()

    def _dirty_acks(self):
        # Coalesce: many PUBACKs cost one state write per FLUSH_S.
        if self._flush_at is None:
            self._flush_at = self.gw.loop.call_later(FLUSH_S, self.flush)
        self.send_more()

    def resend_all(self):
        """Forget what paho holds and start again from the oldest unacked
        record (duplicates are fine: receivers run Dedup)."""
        self._inflight.clear()
        self._sent_upto = -1
        self.send_more()

    def on_connect(self):
        # paho itself resends its unacked QoS 1 messages, in order, after a
        # reconnect; we only need to continue after them.  After a gateway
        # restart _inflight is empty and the outbox starts at its head.
        self.send_more()

    # ---- incoming -----------------------------------------------------
    def subscriptions(self):
        base = "aegis/%s/ev/+/" % self.fleet
        return [base + f for f in (self.accept if self.accept is not None else ["#"])]

    def on_envelope(self, mqtt_topic, payload):
        c = self.counts
        try:
            src, topic = E.parse_ev_topic(self.fleet, mqtt_topic)
            if src == self.node_id:
                c["own"] += 1           # our own event, back through a bridge
                return
            env = E.decode(payload)
            if env.src != src or env.topic != topic:
                raise E.EnvelopeError("envelope says %s/%s but arrived on %s"
                                      % (env.src, env.topic, mqtt_topic))
            if topic.startswith("$"):
                raise E.EnvelopeError("topic %r is reserved" % topic)
        except E.EnvelopeError as e:
            c["bad_envelopes"] += 1
            self._warn("bad envelope dropped", mqtt_topic=mqtt_topic, error=str(e),
                       bytes=len(payload))
            return
        if self.accept is not None and not any(matches(f, topic) for f in self.accept):
            c["not_accepted"] += 1
            return
        if self.dedup.seen(env.src, env.seq):
            c["dups"] += 1
            return
        try:
            self.host.publish(topic, env.data, src=env.src, mod=env.mod)
        except (TopicError, OverflowError) as e:
            c["bad_envelopes"] += 1
            self._warn("mesh event refused", src=env.src, topic=topic, error=str(e))
            return
        c["received"] += 1
        self.gw.kick()

    def _warn(self, msg, **kw):
        # A flood of garbage must not become a flood of log lines: log the
        # first few, then one line per 1000 (the count is in status).
        n = self.counts["bad_envelopes"]
        if n <= 20 or n % 1000 == 0:
            self.log("warn", msg, total=n, **kw)

    def stats(self):
        d = dict(self.counts)
        d.update({"outbox_" + k: v for k, v in self.outbox.stats().items()})
        d["inflight"] = len(self._inflight)
        d["dedup_dups"], d["dedup_too_old"] = self.dedup.dups, self.dedup.too_old
        return d
