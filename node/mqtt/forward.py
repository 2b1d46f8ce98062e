"""Event forwarding: module events -> outbox -> MQTT (QoS 1), and mesh
envelopes -> local subscribers.  Runs on the gateway's event loop thread.

Loop rule (docs/MESH.md): only events this node's own modules raised go
out.  Events delivered from the mesh are published on the host with the
origin's `src`, which is never our node id, so the tap recognises them
without any marking; envelopes carrying our own `src` are dropped on the
way in (they came back through a bridge).
"""
import collections
import time

from node.core import cbor
from node.core import envelope as E, forwarding as FW
from node.core.bus import TopicError, matches
from node.core.mqttwire import MQTTError
from node.core.outbox import Outbox, OutboxError

STALL_S = 30.0      # in flight without any PUBACK this long: resend from head
FLUSH_S = 0.05      # outbox fsync at most this often (appends reach the OS at once)
DEDUP_SAVE_S = 1.0  # dedup windows persisted at most this often while envelopes arrive
DEDUP_NAME = "mesh/dedup"
BATCH_MAX = 1000    # events a tap holds before appending them to the outbox
RAM_BYTES = 8 << 20  # unsent records also kept in RAM (beyond: read back from the store)


class Forwarder:
    """Events out: tap() encodes each event this node's modules raise;
    after_pump() appends the batch to the outbox in one write and publishes
    from RAM with up to `inflight` unacked; PUBACKs ack outbox records; the
    outbox is flushed (fsync + ack state) at most every FLUSH_S.  After a
    gateway restart, a drop or a resend, records are read back from the
    outbox on the store, which is the truth."""

    def __init__(self, gw, link, mcfg):
        self.gw, self.link, self.log = gw, link, gw.log
        self.host, self.node_id, self.fleet = gw.host, gw.cfg.node_id, gw.cfg.fleet
        self.forward = mcfg.forward
        self.accept = mcfg.accept
        self.outbox = Outbox(gw.store, prefix="outbox/", max_items=mcfg.outbox_max,
                             max_bytes=mcfg.outbox_bytes)
        self.seq = E.SeqCounter(gw.store, "mesh/seq")
        self.dedup = FW.SavedDedup()
        self._dedup_at = None   # loop timer of the pending dedup save
        self._load_dedup()
        self.window = mcfg.inflight
        self._inflight = {}     # MQTT mid -> outbox id
        self._sent_upto = -1    # highest outbox id handed to the link
        self._last_ack = time.monotonic()
        self._dropped_logged = self.outbox.dropped
        self._flush_at = None   # loop timer of the pending outbox flush
        self._flushing = None   # future of the flush running on a worker thread
        self._flush_again = False
        self._batch = []        # (topic, record) encoded by tap, not yet in the outbox
        # Unsent records in id order, all ids > _sent_upto and consecutive
        # (id, mqtt topic, record); _ram_bytes bounds it.
        self._ram = collections.deque()
        self._ram_bytes = 0
        self._ev_base = FW.ev_topic(self.fleet, self.node_id, "x")[:-1]
        self._forward_ok = {}   # topic -> bool, the forward filter's verdict
        self._checked = set()   # (topic, mod) pairs E.encode accepted
        self.bridge = None      # node.quic.mesh.Mesh when [quic] bridges to this link
        self.counts = {"forwarded": 0, "received": 0, "dups": 0, "own": 0, "too_big": 0,
                       "bad_envelopes": 0, "not_accepted": 0}
        if len(self.outbox):
            self.log("info", "outbox restored", pending=len(self.outbox),
                     dropped=self.outbox.dropped)

    # ---- outgoing -----------------------------------------------------
    def tap(self, ev):
        """host tap: called for every event, inside host.pump()."""
        if not FW.is_own_module_event(ev, self.node_id):
            return
        ok = True
        if self.forward is not None:
            ok = self._forward_ok.get(ev.topic)
            if ok is None:
                ok = any(matches(f, ev.topic) for f in self.forward)
                if len(self._forward_ok) < 4096:
                    self._forward_ok[ev.topic] = ok
        if not ok and self.bridge is None:
            return
        try:
            rec = self._encode(self.seq.take(), ev.ts, ev.topic, ev.data, ev.mod)
        except E.EnvelopeError as e:
            self.log("warn", "event not forwarded", topic=ev.topic, mod=ev.mod, error=str(e))
            return
        if self.bridge is not None:
            self.bridge.own(rec, ev.topic)      # encoded once for both transports
        if not ok:
            return
        self._batch.append((self._ev_base + ev.topic, rec))
        if len(self._batch) >= BATCH_MAX:
            self._commit()

    def _encode(self, seq, ts, topic, data, mod):
        """E.encode for our own events, validating each (topic, mod) once:
        the host already checked both when the module emitted, and a busy
        node repeats a few topics.  Same bytes as E.encode (tested)."""
        if (topic, mod) in self._checked and type(data) is bytes \
                and len(data) <= E.MAX_DATA and type(seq) is int and type(ts) is int \
                and 0 <= seq <= E.MAX_INT \
                and 0 <= ts <= E.MAX_INT:
            return cbor.dumps({"src": self.node_id, "seq": seq, "ts": ts, "topic": topic,
                               "data": data, "mod": mod})
        rec = E.encode(self.node_id, seq, ts, topic, data, mod)
        if len(self._checked) < 4096:
            self._checked.add((topic, mod))
        return rec

    def publish_foreign(self, env, rec):
        """An envelope from another transport (QUIC), new to our Dedup:
        out on MQTT under its origin's tree, through the same outbox."""
        self._batch.append((FW.ev_topic(self.fleet, env.src, env.topic), rec))
        self.gw.kick()      # the pump's after_pump() commits and sends it

    def _commit(self):
        """Append the tapped batch to the outbox: one store append (a
        batch is what one pump produced, so this costs no latency)."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            first = self.outbox.push_many([r for _, r in batch])
        except OutboxError:         # a record over the outbox's own limits:
            for topic, rec in batch:    # keep the others, name the culprit
                try:
                    self._keep(self.outbox.push(rec), topic, rec)
                except OutboxError as e:
                    self.log("warn", "event not forwarded", mqtt_topic=topic, error=str(e))
        else:
            for k, (topic, rec) in enumerate(batch):
                self._keep(first + k, topic, rec)
        if self._flush_at is None:
            self._flush_at = self.gw.loop.call_later(FLUSH_S, self.flush)
        if self.outbox.dropped != self._dropped_logged:
            self._ram.clear()       # some of them may be the dropped ones
            self._ram_bytes = 0
            self.log("warn", "outbox full: dropped oldest events",
                     dropped=self.outbox.dropped - self._dropped_logged,
                     dropped_total=self.outbox.dropped, limit=self.outbox.max_items)
            self._dropped_logged = self.outbox.dropped

    def _keep(self, i, topic, rec):
        # Only a gap-free run after what was sent can be sent from RAM.
        nxt = self._ram[-1][0] + 1 if self._ram else self._sent_upto + 1
        if i == nxt and self._ram_bytes + len(rec) <= RAM_BYTES:
            self._ram.append((i, topic, rec))
            self._ram_bytes += len(rec)

    def after_pump(self):
        """After a batch of events: into the outbox, then fill the send
        window.  Appends are in the OS at once (they survive kill -9); the
        flush (fsync + ack state) is what a power cut needs, and one per
        FLUSH_S bounds its cost."""
        self._commit()
        self.send_more()

    def flush(self):
        """Outbox flush with its fsyncs on a worker thread: the loop keeps
        taking PUBACKs and events meanwhile (a flush costs 1-2 ms of disk
        wait).  One at a time; what changes meanwhile goes in the next."""
        self._flush_at = None
        if self._flushing is not None:
            self._flush_again = True
            return
        seg, state = self.outbox.flush_plan()
        if seg is None and state is None:
            return
        fut = self.gw.loop.run_in_executor(None, self.outbox.flush_write, seg, state)
        self._flushing = fut
        fut.add_done_callback(self._flushed)

    def _flushed(self, fut):
        self._flushing = None
        err = None if fut.cancelled() else fut.exception()
        if err is not None:
            self.outbox.dirty()
            self.log("error", "outbox flush failed; retrying", error=repr(err))
        if self._flush_again or err is not None:
            self._flush_again = False
            if self._flush_at is None:
                self._flush_at = self.gw.loop.call_later(FLUSH_S, self.flush)

    # ---- dedup windows across restarts ---------------------------------
    # Without them a restarted gateway would deliver, once more, duplicates
    # of envelopes it had already handed to its modules (a bridge or a
    # QoS 1 redelivery).  Saved at most every DEDUP_SAVE_S: a crash can
    # only forget the last second, and delivery stays at-least-once.
    def _load_dedup(self):
        raw = self.gw.store.read(DEDUP_NAME)
        if raw is None:
            return
        try:
            n = self.dedup.loads(raw)
        except E.EnvelopeError as e:
            self.log("warn", "dedup state dropped, starting fresh", error=str(e))
            return
        self.log("info", "dedup state restored", sources=n)

    def save_dedup(self):
        self._dedup_at = None
        try:
            self.gw.store.write(DEDUP_NAME, self.dedup.dumps())
        except OSError as e:    # disk full: keep serving, the windows stay in RAM
            self.log("warn", "dedup state not saved", error=str(e))

    async def close(self):
        """Gateway stop: the last flush, after any still running."""
        if self._dedup_at is not None:
            self._dedup_at.cancel()
            self.save_dedup()
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._flushing is not None:
            try:
                await self._flushing
            except Exception:
                self.outbox.dirty()
        self.outbox.flush()

    def send_more(self):
        if not self.link.connected:
            return
        # Our window, and the link's (the broker's Receive Maximum may be lower).
        room = min(self.window - len(self._inflight), self.link.room())
        if room <= 0:
            if time.monotonic() - self._last_ack > STALL_S:
                self.log("warn", "no PUBACK for %ds; resending the outbox" % STALL_S,
                         inflight=len(self._inflight))
                self.resend_all()
            return
        ram = self._ram
        if ram and ram[0][0] == self._sent_upto + 1:
            todo = [ram.popleft() for _ in range(min(room, len(ram)))]
            self._ram_bytes -= sum(len(r) for _, _, r in todo)
        else:
            ram.clear()             # after a restart/drop/resend: the store is the truth
            self._ram_bytes = 0
            todo = self._from_store(room)
        if todo and not self._inflight:
            self._last_ack = time.monotonic()
        publish, inflight = self.link.publish, self._inflight
        for k, (i, topic, rec) in enumerate(todo):
            try:
                mid = publish(topic, rec, qos=1)
            except MQTTError as e:
                # The broker would drop the connection over it, again and
                # again: drop this one record (counted), not the stream.
                self.counts["too_big"] += 1
                self.log("warn", "event not forwarded", mqtt_topic=topic, error=str(e))
                self.outbox.ack(i)
                self._sent_upto = i
                continue
            if mid is None:
                # Link down: the rest goes back to the front of the line.
                for item in reversed(todo[k:]):
                    ram.appendleft(item)
                    self._ram_bytes += len(item[2])
                break
            inflight[mid] = i
            self._sent_upto = i

    def _from_store(self, room):
        out = []
        for i, rec in self.outbox.peek(room, after=self._sent_upto):
            try:
                env = E.decode(rec)     # src: ours, or a bridged origin's
                out.append((i, FW.ev_topic(self.fleet, env.src, env.topic), rec))
            except E.EnvelopeError as e:  # cannot happen for what we wrote
                self.log("error", "unreadable outbox record dropped", id=i, error=str(e))
                self.outbox.ack(i)
        return out

    def on_puback(self, mids):
        """PUBACKs (a list of MQTT message ids, as the link batches them)."""
        acked = 0
        for mid in mids:
            i = self._inflight.pop(mid, None)
            if i is not None and self.outbox.ack(i):
                acked += 1
        if acked:
            self.counts["forwarded"] += acked
            self._last_ack = time.monotonic()
            # Coalesce: many PUBACKs cost one state write per FLUSH_S.
            if self._flush_at is None:
                self._flush_at = self.gw.loop.call_later(FLUSH_S, self.flush)
        self.send_more()

    def resend_all(self):
        """Forget what the link holds and start again from the oldest unacked
        record (duplicates are fine: receivers run Dedup)."""
        self._inflight.clear()
        self._sent_upto = -1
        self._ram.clear()
        self._ram_bytes = 0
        self.send_more()

    def on_connect(self):
        # The link itself resends its unacked QoS 1 messages, in order, after
        # a reconnect; we only need to continue after them.  After a gateway
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
        if self._dedup_at is None:
            self._dedup_at = self.gw.loop.call_later(DEDUP_SAVE_S, self.save_dedup)
        try:
            self.host.publish(topic, env.data, src=env.src, mod=env.mod)
        except (TopicError, OverflowError) as e:
            c["bad_envelopes"] += 1
            self._warn("mesh event refused", src=env.src, topic=topic, error=str(e))
            return
        c["received"] += 1
        if self.bridge is not None:
            self.bridge.relayed(env, payload)
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
