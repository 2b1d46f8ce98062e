# The board's node runtime (MicroPython asyncio; docs/BOARDS.md).  Boots
# from aegis.json (written by `aegis flash`): Wi-Fi on real boards, MQTT
# with backoff (node/board/mqtt_async.py over the core codec), retained
# status with a last will, module pushes received chunk by chunk into
# flash and verified (node/board/deploy.py), the local bus, mesh events in
# with Dedup, module events out through a bounded outbox on flash, and a
# hardware watchdog fed by the loop.
import asyncio
import gc
import json
import sys
import time

from node.core import cbor, fleet as F
from node.core import envelope as E
from node.core.bus import Bus
from node.core.outbox import Outbox
from node.core import mqtt
from node.board.fsstore import FlashStore
from node.board.mqtt_async import MQTTLink, LinkDown
from node.board.ports import Ports
from node.board.proxy import ProxyEngine
from node.board import engine as ENG
from node.board.deploy import Deploys, transfer

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

_WIN = const(4)             # forwarded events awaiting PUBACK
_STATUS_MS = const(60000)   # status refresh; also sent on every change
_BUS_CACHE = const(32)      # topics whose matches the bus may cache
# The hardware watchdog cannot be stopped once armed, and `aegis flash`
# interrupts this loop to copy files: arm it only after this long, so a
# reset gives mpremote a window (node/flash.py resets the board first).
_WDT_GRACE_MS = const(15000)


def log(*a):
    print("aegis:", *a)


def wall_ms():
    try:
        return time.time_ns() // 1000000
    except AttributeError:
        return int(time.time() * 1000)


def parse_url(url):
    if url.startswith("mqtts://"):
        raise ValueError("mqtts:// is not supported on boards yet; use mqtt:// on a trusted network")
    if not url.startswith("mqtt://"):
        raise ValueError("mqtt url %r must look like mqtt://host:port" % url)
    hp = url[7:].split("/")[0]
    if ":" in hp:
        h, p = hp.rsplit(":", 1)
        return h, int(p)
    return hp, 1883


class Board:
    def __init__(self, cfg):
        self.cfg = cfg
        self.id, self.fleet = cfg["node_id"], cfg["fleet"]
        self.chunk = int(cfg.get("chunk", 1024))
        st = self.store = FlashStore(cfg.get("store", "aegis"))
        self.keys = [bytes.fromhex(k) for k in cfg["trusted_keys"]]
        self.bus = Bus()
        self.seq = E.SeqCounter(st, "mesh/seq")
        self.outbox = Outbox(st, "outbox/", max_items=int(cfg.get("outbox_max", 200)),
                             max_bytes=int(cfg.get("outbox_bytes", 65536)),
                             seg_bytes=8192, max_record=8192)
        self.dedup = E.Dedup(window=256, max_sources=16)
        self.transfer = transfer    # for the engines: the same lazy loader
        self.deploys = Deploys(self)
        self.ports = Ports(cfg.get("ports"), self)
        self.native = None
        self.wdt = None         # machine.WDT on real boards, armed by the ticker
        self.wdt_ms = int(cfg.get("watchdog_ms", 0)) if sys.platform != "linux" else 0
        self.sta = None         # network.WLAN on real boards
        self.mods = {}          # name -> record (+ "state", "mode")
        self._pending = {}      # "name@version" -> record while it starts
        self.groups = list(cfg.get("mqtt", {}).get("groups", []))
        self.t_status = F.status_topic(self.fleet, self.id)
        self.t_deploy = [F.deploy_topic(self.fleet, self.id)] + \
            [F.group_topic(self.fleet, g) for g in self.groups]
        self.t_reply = F.reply_topic(self.fleet, self.id)
        self.ev_base = "aegis/%s/ev/%s/" % (self.fleet, self.id)
        self.ev_in = "aegis/%s/ev/" % self.fleet
        self.inflight = {}      # MQTT packet id -> outbox id
        self._sent_upto = -1
        self._flush_due = False
        self._status_at = None
        self._status_due = True
        self.heap_peak = 0
        self.status_ms = int(cfg.get("status_ms", _STATUS_MS))
        self.counts = {"forwarded": 0, "received": 0, "dups": 0, "own": 0,
                       "bad_envelopes": 0, "bad_messages": 0, "deploy_installed": 0,
                       "deploy_refused": 0}
        m = cfg.get("mqtt") or {}
        host, port = parse_url(m.get("url", "mqtt://127.0.0.1:1883"))
        self.link = MQTTLink(
            host, port, "aegis-%s-%s" % (self.fleet, self.id),
            subscriptions=[(t, 1) for t in self.t_deploy], clean_session=False, write_max=2048,
            keepalive=int(m.get("keepalive", 30)), username=m.get("username"),
            password=m.get("password"), max_inflight=8,
            max_packet=max(int(m.get("max_packet", 8192)), self.chunk + 1024),
            will=(self.t_status, self._status(False), 1, True),
            backoff_ms=(int(m.get("backoff_min_ms", 500)), int(m.get("backoff_max_ms", 30000))))
        self.proxy = ProxyEngine(self)
        self.link.subscribe(self.proxy.subscriptions())
        self._restore()

    # ---- clock --------------------------------------------------------
    def now(self):
        return self.link.now()

    # ---- modules ------------------------------------------------------
    def _restore(self):
        for name in self.store.list("mods/"):
            try:
                rec = cbor.loads(self.store.read(name) or b"")
                if type(rec) is not dict or self.store.size(rec["pkg"]) < 0:
                    raise ValueError("record or package missing")
            except (ValueError, KeyError) as e:
                log("dropping unreadable module record", name, repr(e))
                self.store.delete(name)
                continue
            self._activate(rec, "starting")
        for rec in list(self.mods.values()):
            self.run(rec, None)

    def _activate(self, rec, state):
        old = self.mods.get(rec["name"])
        if old is not None:
            self.bus.unsubscribe(old["name"])
        rec["state"] = state
        self.mods[rec["name"]] = rec
        for f in rec["sub"]:
            self.bus.subscribe(f, rec["name"])
        new = [(self.ev_in + "+/" + f, 1) for f in rec["sub"]]
        self.link.subscribe(new)
        self._status_due = True

    def run(self, rec, tid):
        eng = ENG.select(self, rec)
        rec["mode"] = eng.mode

        def done(ok, detail):
            self._started(rec, tid, ok, detail)
        eng.start(rec, done)

    def restarted(self, rec):
        return lambda ok, detail: self._started(rec, None, ok, detail)

    def _started(self, rec, tid, ok, detail):
        name = rec["name"]
        self._pending.pop("%s@%s" % (name, rec["v"]), None)
        cur = self.mods.get(name)
        if ok:
            if cur is not rec:
                if cur is not None and cur["pkg"] != rec["pkg"]:
                    self.store.delete(cur["pkg"])
                self.store.write("mods/%s.cbor" % name, cbor.dumps(
                    {k: rec[k] for k in ("name", "v", "pkg", "size", "sub", "emit", "ports", "tid")}))
                self._activate(rec, "running")
            rec["state"] = "running"
            self.counts["deploy_installed"] += tid is not None
            log("module %s@%s running (%s): %s" % (name, rec["v"], rec["mode"], detail))
        else:
            if cur is not rec:
                self.store.delete(rec["pkg"])
            else:
                rec["state"] = "error: " + str(detail)[:80]  # type: ignore[index]
            self.counts["deploy_refused"] += tid is not None
            log("module %s@%s not started: %s" % (name, rec["v"], detail))
        if tid is not None:
            self.deploys.finish(tid, ok, "%s (%s)" % (detail, rec["mode"]) if ok else detail)
        self._status_due = True

    def module(self, label):
        """The record of a running or starting module `name@version`."""
        if type(label) is not str or "@" not in label:
            return None
        name, v = label.split("@", 1)
        rec = self.mods.get(name)
        if rec is not None and rec["v"] == v:
            return rec
        return self._pending.get(label)

    # ---- events -------------------------------------------------------
    def emit(self, rec, topic, data):
        """A module's emit: checked against its manifest, then the local
        bus and the outbox (at-least-once to the mesh).  False if denied."""
        if type(topic) is not str or type(data) is not bytes:
            return False
        E.check_topic(topic)
        if topic[0] == "$" or not any(topic.startswith(p) for p in rec["emit"]):
            return False
        mod = "%s@%s" % (rec["name"], rec["v"])
        self._dispatch(topic, data, self.id, mod)
        self.outbox.push(E.encode(self.id, self.seq.take(), wall_ms(), topic, data, mod))
        self._flush_due = True
        self._send_more()
        return True

    def _dispatch(self, topic, data, src, mod):
        subs = self.bus.match(topic)
        if len(self.bus._cache) > _BUS_CACHE:
            self.bus._cache = {}
        engines = []
        for name in subs:
            rec = self.mods.get(name)
            if rec is None or rec.get("mode") is None:
                continue
            # A proxied module's own emits were already delivered on its host.
            if rec["mode"] == "proxy" and src == self.id and mod not in E.NOT_MODULES:
                continue
            eng = self.native if rec["mode"] == "native" else self.proxy
            if eng not in engines:
                engines.append(eng)
        for eng in engines:
            eng.deliver(topic, data, src, mod)  # type: ignore[union-attr]

    def _on_envelope(self, topic, payload):
        c = self.counts
        try:
            src, t = E.parse_ev_topic(self.fleet, topic)
            if src == self.id:
                c["own"] += 1
                return
            env = E.decode(bytes(payload), 8192)
            if env.src != src or env.topic != t or t[0] == "$":
                raise E.EnvelopeError("envelope does not match its topic")
        except (E.EnvelopeError, ValueError) as e:
            c["bad_envelopes"] += 1
            return
        if self.dedup.seen(env.src, env.seq):
            c["dups"] += 1
            return
        c["received"] += 1
        self._dispatch(t, env.data, env.src, env.mod)

    def _send_more(self):
        if not self.link.connected:
            return
        while len(self.inflight) < _WIN:
            nxt = self.outbox.peek(1, after=self._sent_upto)
            if not nxt:
                return
            i, rec = nxt[0]
            try:
                topic = self.ev_base + E.decode(rec).topic
            except E.EnvelopeError:
                self.outbox.ack(i)
                continue
            pid = self.link.publish(topic, rec, 1)
            if pid is None:
                return
            self.inflight[pid] = i
            self._sent_upto = i

    def _puback(self, pid):
        i = self.inflight.pop(pid, None)
        if i is not None:
            if self.outbox.ack(i):
                self.counts["forwarded"] += 1
            self._flush_due = True
            self._send_more()

    # ---- status -------------------------------------------------------
    def _status(self, online):
        mods = [{"name": r["name"], "version": r["v"], "state": r["state"],
                 "mode": r.get("mode", "")} for r in self.mods.values()] if online else []
        counts = {}
        if online:
            counts.update(self.counts)
            counts.update(self.proxy.stats())
            ob = self.outbox.stats()
            counts["outbox_len"], counts["outbox_dropped"] = ob["len"], ob["dropped"]
            counts["port_calls"] = self.ports.calls
            counts["deploy_bad_messages"] = self.deploys.bad_count()
            counts["dedup_dups"] = self.dedup.dups
            if hasattr(gc, "mem_alloc"):
                gc.collect()        # in use, not garbage waiting for a collection
                counts["heap"], counts["heap_peak"] = gc.mem_alloc(), self.heap_peak
        return F.encode_status(self.id, online, self.groups, mods, self.chunk, counts,
                               wall_ms(), {"mode": "proxy" if self.native is None else "native",
                                           "board": self.cfg.get("board", "?"),
                                           "ports": self.ports.names()})

    def _publish_status(self):
        if self.link.connected and self._status_due:
            self._status_due = False
            self._status_at = self.now()
            self.link.publish(self.t_status, self._status(True), 1, True)

    # ---- MQTT ---------------------------------------------------------
    def bad(self, what, e):
        self.counts["bad_messages"] += 1
        if self.counts["bad_messages"] <= 10:
            log("bad %s dropped: %r" % (what, e))

    def handle(self, msg):
        topic = msg.topic
        try:
            if topic.startswith(self.ev_in):
                self._on_envelope(topic, msg.payload)
            elif topic in self.t_deploy:
                self.deploys.on_message(msg.payload)
            else:
                self.proxy.on_message(topic, msg.payload)
        except Exception as e:      # one bad message must never stop the node
            self.bad(topic, e)
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
        msg.payload = None
        self.link.ack(msg)
        self._probe()

    def _probe(self):
        if self.cfg.get("heap_probe"):
            gc.collect()
            a = gc.mem_alloc()
            if a > self.heap_peak:
                self.heap_peak = a

    async def events(self):
        async for ev in self.link:
            t = type(ev)
            if t is mqtt.Message:
                self.handle(ev)
            elif t is mqtt.Published:
                self._puback(ev.packet_id)
            elif t is mqtt.Connected:
                log("connected to broker (session %s)" % ("kept" if ev.session_present else "new"))
                self._status_due = True
                self._publish_status()
                self.proxy.on_connect()
                self._send_more()
                self.deploys.out()
            elif t is LinkDown:
                log("link down:", ev.reason)

    async def ticker(self):
        t0 = self.now()
        n = 0
        while True:
            await asyncio.sleep(1)
            now = self.now()
            n += 1
            if self.wdt is not None:
                self.wdt.feed()
            elif self.wdt_ms and now - t0 >= _WDT_GRACE_MS:
                import machine
                self.wdt = machine.WDT(timeout=min(self.wdt_ms, 8000))
                log("watchdog armed (%d ms)" % min(self.wdt_ms, 8000))
            try:
                sta = self.sta
                if sta is not None and not sta.isconnected() and n % 10 == 0:
                    w = self.cfg.get("wifi") or {}
                    sta.connect(w.get("ssid"), w.get("password", ""))   # lost: rejoin
                self.proxy.tick(now)
                self.deploys.tick(now)
                if self._flush_due:     # outbox state: at most once a second
                    self._flush_due = False
                    self.outbox.flush()
                if self._status_at is None or now - self._status_at >= self.status_ms:
                    self._status_due = True
                self._publish_status()
                self._send_more()
            except Exception as e:
                self.bad("tick", e)
            self._probe()


def wifi_up(cfg):
    import network
    w = cfg.get("wifi") or {}
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        log("joining Wi-Fi", w.get("ssid"))
        sta.connect(w.get("ssid"), w.get("password", ""))
        t0 = time.ticks_ms()
        while not sta.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < 30000:
            time.sleep_ms(200)
    log("Wi-Fi", "up %s" % (sta.ifconfig()[0],) if sta.isconnected() else "not up yet")
    if sta.isconnected():
        try:                        # envelope timestamps want a real clock
            import ntptime
            ntptime.settime()
        except Exception as e:      # no NTP: timestamps count from the board's epoch
            log("no NTP time:", repr(e))
    return sta


async def amain(cfg):
    sta = wifi_up(cfg) if cfg.get("wifi") and sys.platform != "linux" else None
    if hasattr(gc, "threshold"):
        gc.threshold(16384)     # collect early: keep the heap small and unfragmented
    b = Board(cfg)
    b.sta = sta
    gc.collect()
    log("node %s (%s) booted, heap %d bytes in use, %d modules"
        % (b.id, cfg.get("board", "?"), gc.mem_alloc() if hasattr(gc, "mem_alloc") else -1,
           len(b.mods)))
    asyncio.create_task(b.link.run())
    asyncio.create_task(b.ticker())
    await b.events()


def main(cfg_path="aegis.json"):
    with open(cfg_path) as f:
        cfg = json.load(f)
    for k in ("node_id", "fleet", "trusted_keys"):
        if k not in cfg:
            raise ValueError("%s: missing %r (re-run aegis flash)" % (cfg_path, k))
    while True:
        try:
            asyncio.run(amain(cfg))
        except KeyboardInterrupt:
            raise
        except Exception as e:      # last resort: log, pause, start over
            log("runtime crashed, restarting:", repr(e))
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
            time.sleep(2)
