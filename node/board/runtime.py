# The board's node runtime (MicroPython asyncio; docs/BOARDS.md).  Boots
# from aegis.json (written by `aegis flash`): Wi-Fi on real boards, MQTT
# with backoff (node/board/mqtt_async.py over the core codec), retained
# status with a last will, module pushes received chunk by chunk into
# flash and verified (node/board/deploy.py), the local bus, mesh events in
# with Dedup, module events out through a bounded outbox on flash
# (node/board/events.py), and a hardware watchdog fed by the loop.
import asyncio
import gc
import json
import sys
import time

# Only what an idle board needs is imported here; the event code (events.py,
# envelope, bus, outbox), ports, proxy, engines, push code and Wi-Fi come
# with their first use (Board.__getattr__ below; docs/BOARDS.md "Heap
# budget").  What it always needs is loaded with it, but bound to a name
# only where used: each module global is a slot in this module's dict for
# as long as the board runs.
import node.core.cbor
import node.core.mqtt
import node.board.fsstore
import node.board.mqtt_async
from node.core import fleet as F

from micropython import const    # the board runs this file on MicroPython only

_STATUS_MS = const(60000)   # status refresh; also sent on every change
# The hardware watchdog cannot be stopped once armed, and `aegis flash`
# interrupts this loop to copy files: arm it only after this long, so a
# reset gives mpremote a window (node/flash.py resets the board first).
_WDT_GRACE_MS = const(15000)


def log(*a):
    print("aegis:", *a)


def read_json(path):
    """The JSON object in file `path`, or {} (none there, or unreadable)."""
    try:
        with open(path) as f:
            v = json.load(f)
        return v if type(v) is dict else {}
    except (OSError, ValueError):
        return {}


def wall_ms():
    try:
        return time.time_ns() // 1000000
    except AttributeError:
        return int(time.time() * 1000)


class Board:
    def __init__(self, cfg, slot="a"):
        self.cfg = cfg
        # The runtime slot booted (firmware/rtboot.py): the status's
        # `runtime` map {v, slot, failed: {v, error} (an update that fell
        # back), trial (not confirmed yet: node/board/rtslot.py)}.  An
        # update asks for a restart at restart_at (node/board/rtupdate.py).
        slot = "b" if slot == "b" else "a"
        mark = read_json("rtboot.json")
        self.rt = {"v": read_json(("rt_b/" if slot == "b" else "") + "rt.json").get("v", "?"),
                   "slot": slot}
        if mark.get("failed"):
            self.rt["failed"] = mark["failed"]
        if mark.get("state") == "trial" and mark.get("slot") == slot:
            self.rt["trial"] = True
        self.restart_at = None
        self.restart_why = None
        self.stopping = False
        self.main = asyncio.current_task()  # built in amain(): its task ends on a restart
        self.id, self.fleet = cfg["node_id"], cfg["fleet"]
        self.chunk = int(cfg.get("chunk", 1024))
        from node.board.fsstore import FlashStore
        self.store = FlashStore(cfg.get("store", "aegis"))
        self.keys = [bytes.fromhex(k) for k in cfg["trusted_keys"]]
        # Loaded on first use (__getattr__ below): a board without modules
        # needs no bus, outbox, ports, proxy or push code in its heap.
        self.parts = {}  # type: dict
        self._deploy_bad = 0    # bad deploy messages of unloaded Deploys
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
        # mqtt://host[:1883] or mqtts://host[:8883]
        url = m.get("url", "mqtt://127.0.0.1:1883")
        tls = url.startswith("mqtts://")
        if not tls and not url.startswith("mqtt://"):
            raise ValueError("mqtt url %r must look like mqtt://host:port or mqtts://host:port" % url)
        host = url[8 if tls else 7:].split("/")[0]
        port = 8883 if tls else 1883
        if ":" in host:
            host, port = host.rsplit(":", 1)
        if tls and not m.get("ca"):
            raise ValueError("mqtts:// on a board needs [mqtt] ca (re-run aegis flash)")
        self.link_errors = {}   # LinkDown kind -> count; last reason in status
        self.link_error = None
        self._link_logged = None
        from node.board.mqtt_async import MQTTLink
        # max_events: reading stops at 4 messages not handled yet; more
        # wait in the TCP stack, outside the heap (up to max_packet each).
        self.link = MQTTLink(
            host, int(port), "aegis-%s-%s" % (self.fleet, self.id),
            tls=(m["ca"], m.get("cert"), m.get("key")) if tls else None,
            subscriptions=[(t, 1) for t in self.t_deploy], clean_session=False, write_max=2048,
            keepalive=int(m.get("keepalive", 30)), username=m.get("username"),
            password=m.get("password"), max_inflight=8, max_events=4,
            max_packet=max(int(m.get("max_packet", 8192)), self.chunk + 1024),
            will=(self.t_status, self._status(False), 1, True),
            backoff_ms=(int(m.get("backoff_min_ms", 500)), int(m.get("backoff_max_ms", 30000))))
        self.now = self.link.now    # the clock (monotonic ms) for the core and engines
        # The proxy's topics (node/board/proxy.py); a message on them loads it.
        self.t_proxy = "aegis/%s/node/%s/proxy/" % (self.fleet, self.id)
        self.link.subscribe([(self.t_proxy + "down", 1), (self.t_proxy + "pkg/reply", 1)])
        if self.store.list("outbox/seg-"):
            self.outbox     # events of an earlier run still to forward
        self._restore()

    # ---- parts loaded on first use ------------------------------------
    def __getattr__(self, k):
        # b.bus, b.seq, b.outbox, b.dedup, b.ports, b.proxy, b.deploys: built
        # on first use into b.parts[name]; b.parts.get(name) asks without
        # loading.  One lookup hook rather than seven properties and their
        # attributes: fewer objects and names in the heap.
        if k not in ("bus", "seq", "outbox", "dedup", "ports", "proxy", "deploys"):
            raise AttributeError(k)
        v = self.parts.get(k)
        if v is None:
            if k == "bus":
                from node.core.bus import Bus
                v = Bus()
            elif k == "seq" or k == "dedup":
                from node.core import envelope as E
                v = E.SeqCounter(self.store, "mesh/seq") if k == "seq" else \
                    E.Dedup(window=256, max_sources=16)
            elif k == "outbox":
                from node.core.outbox import Outbox
                c = self.cfg
                v = Outbox(self.store, "outbox/", max_items=int(c.get("outbox_max", 200)),
                           max_bytes=int(c.get("outbox_bytes", 65536)),
                           seg_bytes=8192, max_record=8192)
            elif k == "ports":
                from node.board.ports import Ports
                v = Ports(self.cfg.get("ports"), self)
            elif k == "proxy":
                from node.board.proxy import ProxyEngine
                v = ProxyEngine(self)
            else:
                from node.board.deploy import Deploys
                v = Deploys(self)
            self.parts[k] = v
        return v

    # ---- modules ------------------------------------------------------
    def _restore(self):
        from node.core import cbor
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
        # Packages no record names: a reset cut a removal or a switch short.
        keep = [r["pkg"] for r in self.mods.values()] + [r.get("prev") for r in self.mods.values()]
        for p in self.store.list("pkgs/"):
            if p not in keep:
                self.store.delete(p)
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
        from node.board import engine as ENG
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
                from node.board.deploy import switched
                switched(self, cur, rec)    # record on flash; previous kept for rollback
                self._activate(rec, "running")
            rec["state"] = "running"
            self.counts["deploy_installed"] += tid is not None
            log("module %s@%s running (%s): %s" % (name, rec["v"], rec["mode"], detail))
        else:
            if cur is not rec:
                if not rec.get("rb_from"):  # a rollback target stays: it is cur's previous
                    self.store.delete(rec["pkg"])
            else:
                rec["state"] = "error: " + str(detail)[:80]  # type: ignore[index]
            self.counts["deploy_refused"] += tid is not None
            log("module %s@%s not started: %s" % (name, rec["v"], detail))
        if tid is not None:
            self.deploys.finish(tid, ok, "%s (%s)" % (detail, rec["mode"]) if ok else detail,
                                "%s@%s" % (name, rec["v"]))
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

    # ---- events (node/board/events.py, loaded with the first module) ----
    def emit(self, rec, topic, data):
        """A module's emit (the engines call it); False if its manifest denies it."""
        from node.board import events
        return events.emit(self, rec, topic, data)

    def _send_more(self):
        # What is due out: the retained status (on a change, on connect,
        # every status_ms), then outbox events while the QoS 1 window has
        # room (node/board/events.py).
        if self.link.connected:
            if self._status_due:
                self._status_due = False
                self._status_at = self.now()
                self.link.publish(self.t_status, self._status(True), 1, True)
            if "outbox" in self.parts:
                from node.board import events
                events.send_more(self)

    # ---- status -------------------------------------------------------
    def _status(self, online):
        mods = [{"name": r["name"], "version": r["v"], "state": r["state"],
                 "mode": r.get("mode", "")} for r in self.mods.values()] if online else []
        counts = {}
        if online:
            counts.update(self.counts)
            p = self.parts     # only what is loaded
            if "proxy" in p:
                counts.update(p["proxy"].stats())
            ob = p["outbox"].stats() if "outbox" in p else {"len": 0, "dropped": 0}
            counts["outbox_len"], counts["outbox_dropped"] = ob["len"], ob["dropped"]
            counts["port_calls"] = p["ports"].calls if "ports" in p else 0
            counts["deploy_bad_messages"] = self._deploy_bad + (
                p["deploys"].bad_count() if "deploys" in p else 0)
            counts["dedup_dups"] = p["dedup"].dups if "dedup" in p else 0
            if hasattr(gc, "mem_alloc"):
                gc.collect()        # in use, not garbage waiting for a collection
                counts["heap"], counts["heap_peak"] = gc.mem_alloc(), self.heap_peak
        return F.encode_status(self.id, online, self.groups, mods, self.chunk, counts,
                               wall_ms(), {"mode": "proxy" if self.native is None else "native",
                                           "board": self.cfg.get("board", "?"),
                                           "ports": sorted(self.cfg.get("ports") or {}),
                                           "runtime": self.rt,
                                           # as a gateway's: why the link last went down
                                           "mqtt": {"errors": self.link_errors,
                                                    "last_error": self.link_error}})

    # ---- MQTT ---------------------------------------------------------
    def bad(self, what, e):
        self.counts["bad_messages"] += 1
        if self.counts["bad_messages"] <= 10:
            log("bad %s dropped: %r" % (what, e))

    def _probe(self):
        if self.cfg.get("heap_probe"):
            gc.collect()
            a = gc.mem_alloc()
            if a > self.heap_peak:
                self.heap_peak = a

    async def events(self):
        from node.core.mqtt import Message, Published, Connected
        from node.board.mqtt_async import LinkDown
        async for ev in self.link:
            t = type(ev)
            if t is Message:
                topic = ev.topic
                try:
                    if ev.payload is None:      # over max_packet, skipped by the codec
                        self.bad(topic, "over max_packet %d" % self.link.client.max_packet)
                    elif topic.startswith(self.ev_in):
                        from node.board import events
                        events.on_envelope(self, topic, ev.payload)
                    elif topic in self.t_deploy:
                        self.deploys.on_message(ev.payload)
                    elif topic.startswith(self.t_proxy):
                        self.proxy.on_message(topic, ev.payload)
                except Exception as e:      # one bad message must never stop the node
                    self.bad(topic, e)
                    if hasattr(sys, "print_exception"):
                        sys.print_exception(e)
                ev.payload = None
                self.link.ack(ev)
                self._probe()
            elif t is Published:       # an event out acked (events.send_more)
                i = self.inflight.pop(ev.packet_id, None)
                if i is not None:
                    if self.outbox.ack(i):
                        self.counts["forwarded"] += 1
                    self._flush_due = True
                    self._send_more()
            elif t is Connected:
                log("connected to broker (session %s)" % ("kept" if ev.session_present else "new"))
                if self.rt.get("trial"):    # online with this runtime: keep it
                    from node.board import rtslot
                    rtslot.confirm(self.rt)
                    del sys.modules["node.board.rtslot"], rtslot    # needed once:
                    delattr(sys.modules["node.board"], "rtslot")    # unloaded again
                self._status_due = True
                self._send_more()           # the status first, then outbox events
                p = self.parts.get("proxy")
                if p is not None:
                    p.on_connect()
                p = self.parts.get("deploys")
                if p is not None:
                    p.out()
            elif t is LinkDown:
                # One log line per new reason, then one a minute while it
                # lasts: a broker refusing our TLS files must not flood the console.
                k = ev.kind
                self.link_errors[k] = self.link_errors.get(k, 0) + 1
                self.link_error = ev.reason
                now = self.now()
                last = self._link_logged
                if last is None or last[0] != ev.reason or now - last[1] >= 60000:
                    self._link_logged = (ev.reason, now)
                    log("link down (%s, %d times):" % (k, self.link_errors[k]), ev.reason)

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
            # A restart ends amain() with "restart": firmware/main.py resets
            # the board, or re-imports from the slot the marker now names
            # (Unix port).  A slot on trial not online in time is failed
            # first (the next boot falls back); an update restarts once its
            # answer was acked.
            why = None
            confirm_s = int(self.cfg.get("runtime_confirm_s", 120))
            if self.stopping:
                pass
            elif self.rt.get("trial") and now - t0 >= confirm_s * 1000:
                why = "not online within %d s" % confirm_s
                from node.board import rtslot
                rtslot.failed(self.rt["slot"], why)
            elif self.restart_at is not None and now >= self.restart_at and (
                    not self.link.client.inflight() or now - self.restart_at > 10000):
                why = self.restart_why
            if why is not None:
                self.stopping = True
                log("restarting:", why)
                if self.main is not None:
                    self.main.cancel()
            try:
                sta = self.sta
                if sta is not None and not sta.isconnected() and n % 10 == 0:
                    w = self.cfg.get("wifi") or {}
                    sta.connect(w.get("ssid"), w.get("password", ""))   # lost: rejoin
                p = self.parts.get("proxy")
                if p is not None:
                    p.tick(now)
                d = self.parts.get("deploys")
                if d is not None:
                    d.tick(now)
                    # Once a push is over (its transfer code already unloaded
                    # after 30 idle s, deploy.py) the push code itself goes
                    # too, until the next.
                    if d.rx is None and not d.ended and not d.stmts and not self._pending and \
                            "node.core.transfer" not in sys.modules:
                        self._deploy_bad += d.bad
                        del self.parts["deploys"]
                        d = None
                        from node.board.deploy import unload
                        unload("node.board.deploy")
                if self._flush_due:     # outbox state: at most once a second
                    self._flush_due = False
                    self.outbox.flush()
                if self._status_at is None or now - self._status_at >= self.status_ms:
                    self._status_due = True
                self._send_more()
            except Exception as e:
                self.bad("tick", e)
            self._probe()


async def amain(cfg, slot="a"):
    sta = None
    if cfg.get("wifi") and sys.platform != "linux":
        from node.board.wifi import wifi_up    # real boards only
        sta = wifi_up(cfg)
    if hasattr(gc, "threshold"):
        gc.threshold(16384)     # collect early: keep the heap small and unfragmented
    b = Board(cfg, slot)
    b.sta = sta
    gc.collect()
    log("node %s (%s) booted runtime %s from slot %s, heap %d bytes in use, %d modules"
        % (b.id, cfg.get("board", "?"), b.rt["v"], b.rt["slot"],
           gc.mem_alloc() if hasattr(gc, "mem_alloc") else -1, len(b.mods)))
    asyncio.create_task(b.link.run())
    asyncio.create_task(b.ticker())
    try:
        await b.events()
    except asyncio.CancelledError:
        if not b.stopping:
            raise
        b.outbox.flush()
        await b.link.stop()         # DISCONNECT: the broker drops the will
        return "restart"


def main(path="aegis.json", slot="a"):
    """Runs until a restart is asked for ("restart", firmware/main.py)."""
    with open(path) as f:
        cfg = json.load(f)
    for k in ("node_id", "fleet", "trusted_keys"):
        if k not in cfg:
            raise ValueError("%s: missing %r (re-run aegis flash)" % (path, k))
    while True:
        try:
            if hasattr(asyncio, "new_event_loop"):
                asyncio.new_event_loop()    # no task of a crashed run lingers
            if asyncio.run(amain(cfg, slot)) == "restart":
                return "restart"
        except KeyboardInterrupt:
            raise
        except Exception as e:      # last resort: log, pause, start over
            log("runtime crashed, restarting:", repr(e))
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
            # A runtime on trial that crashes goes back to the previous one.
            from node.board import rtslot
            if rtslot.failed(slot, "crashed: %r" % (e,)):
                return "restart"
            time.sleep(2)
