# Proxy execution, board side (docs/BOARDS.md "Proxy mode").  Stock
# MicroPython has no wasm3, so the board's modules run on a gateway's
# proxy host (node/proxy/), and the board serves what they reach for:
#
#   aegis/<fleet>/node/<board>/proxy/pkg        board -> host: transfer offer/chunk
#   aegis/<fleet>/node/<board>/proxy/pkg/reply  host -> board: want/ack/result
#   aegis/<fleet>/node/<board>/proxy/up         board -> host: {t:"ev"} QoS 1, {t:"res"} QoS 0,
#                                               {t:"stmt"} QoS 1 (signed rollback/removal)
#   aegis/<fleet>/node/<board>/proxy/down       host -> board: {t:"emit"} QoS 1, {t:"call"} QoS 0
#
# A verified package is handed over with the same chunked transfer as a
# push (read from flash chunk by chunk); the host verifies it again and
# runs it, and its `result` is the module's start.  Re-offering on every
# reconnect is cheap (an active package is answered at once) and keeps the
# host in step after either side restarts.
from node.core import cbor
from node.board.mqtt_async import getrandbits

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

_WIN = const(2)             # chunks in flight per handover (heap: each is a packet)
_MAX_EV = const(8192)       # event data sent up at most (the host's budget)


class ProxyEngine:
    mode = "proxy"

    def __init__(self, board):
        self.b = board
        # Topics: board.t_proxy (aegis/<fleet>/node/<board>/proxy/, which
        # runtime.py subscribes to) + "pkg", "pkg/reply", "up" or "down".
        self._tx = {}           # module name -> [Sender, done, rec]
        # QoS 1 is at-least-once on both legs: events up carry (boot, n) so
        # the host runs each once; emits down carry the host's, kept here.
        self._boot = getrandbits(30)
        self._n = 0
        self._seen = []         # recent (boot, n) of emits from the host
        self.counts = {"proxy_ev": 0, "proxy_ev_dropped": 0, "proxy_calls": 0,
                       "proxy_emits": 0, "proxy_denied": 0}

    def subscriptions(self):
        base = self.b.t_proxy
        return [(base + "down", 1), (base + "pkg/reply", 1)]

    # ---- handing packages to the host --------------------------------
    def start(self, rec, done):
        old = self._tx.pop(rec["name"], None)
        if old:
            old[1](False, "replaced by %s" % rec["v"])
        from node.core.transfer_send import Sender, StoreReader
        s = Sender(StoreReader(self.b.store, rec["pkg"]), chunk=self.b.chunk,
                     window=_WIN, name=rec["name"], version=rec["v"], timeout=3000,
                     max_retries=20)
        self._tx[rec["name"]] = [s, done, rec]
        self.tick(self.b.now())

    def statement(self, data):
        """Pass a signed rollback/removal statement the board accepted to
        the host (QoS 1, before any handover it implies): the host checks
        and applies it to its copy of the module itself."""
        self.b.link.publish(self.b.t_proxy + "up", cbor.dumps({"t": "stmt", "s": bytes(data)}), 1)

    def stop(self, name):
        """Module `name` was removed: a handover still in flight ends
        refused (its pusher is answered, its package deleted)."""
        t = self._tx.pop(name, None)
        if t is not None:
            t[1](False, "module %s removed" % name)

    def on_connect(self):
        now = self.b.now()
        for s, _, _ in self._tx.values():
            s.reconnected(now)
        for rec in self.b.mods.values():    # host restarted? re-offer: cheap
            if rec.get("mode") == "proxy" and rec["name"] not in self._tx:
                self.start(rec, self.b.restarted(rec))
        self.tick(now)

    def busy(self):
        return bool(self._tx)

    def tick(self, now):
        link = self.b.link
        for name in list(self._tx):
            s, done, _ = self._tx[name]
            if link.connected:
                for m in s.messages_to_send(now):
                    link.publish(self.b.t_proxy + "pkg", m, 1)
            while True:
                ev = s.next_event()
                if ev is None:
                    break
                if type(ev).__name__ == "Result":
                    del self._tx[name]
                    done(ev.ok, ev.detail)
                    break

    # ---- messages from the host --------------------------------------
    def on_message(self, topic, payload):
        base = self.b.t_proxy
        if topic == base + "pkg/reply":
            now = self.b.now()
            for s, _, _ in list(self._tx.values()):
                s.receive_data(payload, now)
            self.tick(now)
            return True
        if topic != base + "down":
            return False
        try:
            m = cbor.loads(bytes(payload))
            t = m.get("t")
            rec = self.b.module(m.get("mod"))
            if t == "call":
                port, cid = m.get("port"), m.get("id")
                if rec is None or port not in rec["ports"]:
                    self.counts["proxy_denied"] += 1
                    r = -2              # EPERM: the manifest does not grant it
                else:
                    self.counts["proxy_calls"] += 1
                    r = self.b.ports.call(port, m.get("d", b""))
                self.b.link.publish(base + "up", cbor.dumps({"t": "res", "id": cid, "r": r}), 0)
            elif t == "emit":
                key = (m.get("b"), m.get("n"))
                if key in self._seen:
                    return True         # a redelivery: already on the bus
                self._seen.append(key)
                del self._seen[:-32]
                if rec is None or not self.b.emit(rec, m["topic"], m["d"]):
                    self.counts["proxy_denied"] += 1
                else:
                    self.counts["proxy_emits"] += 1
        except Exception as e:      # hostile or broken message: drop, go on
            self.b.bad("proxy message", e)
        return True

    # ---- events for the proxied modules ------------------------------
    def deliver(self, topic, data, src, mod):
        if len(data) > _MAX_EV or not self.b.link.connected:
            self.counts["proxy_ev_dropped"] += 1
            return
        self._n += 1
        pid = self.b.link.publish(self.b.t_proxy + "up", cbor.dumps(
            {"t": "ev", "topic": topic, "d": data, "src": src, "mod": mod,
             "b": self._boot, "n": self._n}), 1)
        if pid is None:             # window full: bounded RAM beats queueing
            self.counts["proxy_ev_dropped"] += 1
        else:
            self.counts["proxy_ev"] += 1

    def stats(self):
        d = dict(self.counts)
        d["proxy_handovers"] = len(self._tx)
        return d
