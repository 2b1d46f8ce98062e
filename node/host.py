"""The module host: installs signed packages into A/B slots, dispatches
events on the local bus, and rolls back misbehaving versions.

Single-threaded by design: the gateway's event loop calls `publish`,
`pump` and `install`; an install runs between two events, so a swap never
loses or doubles an event.  Module emits are queued, not delivered
re-entrantly, so a module never re-enters itself and emit chains are
bounded by the queue.
"""
import time
from collections import deque

from node.core import cbor, lifecycle as lc, package as pk
from node.core.bus import Bus, check_topic
from node.admission import Limits, admit, apply_rollback
from node.core.ring import Ring
from node.core.statelog import StateLog
from node.core import abi as A
from node.engine import EngineError, default_engine
from node.slot import Slot, caps_for

BLOCKED_KEPT = 32   # versions refused after a rollback, per module

QUEUE_MAX = 10000
SYS = "$aegis/"


class InstallError(Exception):
    pass


class Event:
    __slots__ = ("topic", "data", "src", "mod", "ts", "n")

    def __init__(self, topic, data, src, mod, ts):
        self.topic = topic
        self.data = data
        self.src = src
        self.mod = mod
        self.ts = ts
        self.n = 0

    def as_dict(self):
        return {"n": self.n, "topic": self.topic, "src": self.src,
                "mod": self.mod, "ts": self.ts, "data": self.data}


def wall_ms():
    return time.time_ns() // 1000000


class Module:
    """A module name: its active slot and what the store says about it."""

    def __init__(self, name):
        self.name = name
        self.active = None      # Slot serving events, or None
        self.previous = None    # version to roll back to
        self.blocked = []       # versions rolled back from: never installed again
        self.failed = []        # recent refused/rolled-back versions (info dicts)


class ModuleHost:
    def __init__(self, store, node_id, verifiers, engine=None, clock=wall_ms,
                 logger=None, max_traps=3, trap_window_ms=10000,
                 policy=None, ring_size=1000, allow_downgrade=False, limits=None):
        self.store = store
        self.node_id = node_id
        self.verifiers = verifiers
        self.engine = engine or default_engine()
        self.clock = clock
        self.logger = logger
        self.max_traps = max_traps
        self.trap_window_ms = trap_window_ms
        self.policy = policy or {}
        self.limits = limits or Limits()    # node bounds; deny unmetered by default
        self.bus = Bus()
        self.ring = Ring(ring_size)
        self.queue = deque((), QUEUE_MAX)
        self.modules = {}
        self.ports = {}         # port name -> adapter(host, data) -> bytes | int
        self.taps = []          # callables(event) seeing every event
        self.on_change = None   # callable() after a module's active version changed
        self.states = {}        # module name -> StateLog (shared by versions)
        self.counts = {"events": 0, "queue_full": 0, "rollbacks": 0}
        self._pending_rollback = []
        self._valid = set()     # topics already checked by publish

    # ---- logging and system events ------------------------------------
    def log(self, level, msg, **kw):
        if self.logger:
            self.logger(level, msg, **kw)

    def _sys(self, what, **info):
        self.publish(SYS + what, cbor.dumps(info), src=self.node_id, mod="")

    def _module_event(self, name, what, **info):
        """`$aegis/module/<name>/<what>`; anything but a refusal changed
        what runs, which the node's status (on_change) reports."""
        self._sys("module/%s/%s" % (name, what), **info)
        if what != "refused" and self.on_change is not None:
            self.on_change()

    # ---- callbacks from HostABI ----------------------------------------
    def on_emit(self, abi, topic, data):
        q = self.queue
        if len(q) >= QUEUE_MAX:
            self.counts["queue_full"] += 1
            return A.ELIMIT
        q.append(Event(topic, data, self.node_id, abi.label, self.clock()))
        return A.OK

    def on_log(self, abi, level, text):
        lv = ("debug", "info", "warn", "error")[level] if 0 <= level <= 3 else "info"
        self.log(lv, text, module=abi.slot.label)

    def on_call(self, abi, port, data):
        ad = self.ports.get(port)
        if ad is None:
            return A.ENOENT
        try:
            return ad(self, data)
        except Exception as e:  # an adapter bug must not reach the module
            self.log("warn", "port adapter failed", port=port, error=repr(e))
            return A.EIO

    # ---- events ---------------------------------------------------------
    def publish(self, topic, data, src=None, mod=""):
        """Queue an event from outside (CLI, mesh).  Raises TopicError."""
        if topic not in self._valid:
            if not topic.startswith(SYS):
                check_topic(topic)
            if len(self._valid) > 4096:
                self._valid = set()
            self._valid.add(topic)
        if len(self.queue) >= QUEUE_MAX:
            self.counts["queue_full"] += 1
            raise OverflowError("event queue full (%d)" % QUEUE_MAX)
        if type(data) is not bytes:
            data = bytes(data)
        self.queue.append(Event(topic, data, src or self.node_id, mod, self.clock()))

    def pump(self, max_events=10000, max_s=None):
        """Deliver queued events; returns how many were handled.  With
        `max_s` (time-sliced, as the gateway runs it) it returns early once
        that much time has passed or after a module trapped (a trap may have
        cost a whole fuel budget), so the caller's event loop gets to run
        between expensive events."""
        q = self.queue
        ring = self.ring
        rbuf = ring._buf
        cap = ring.cap
        nxt = ring.next
        bus = self.bus
        match = bus.match
        cache = bus._cache
        taps = self.taps
        n = 0
        deadline = time.perf_counter() + max_s if max_s else None
        trapped = False
        # The hottest loop of the node: locals only, the ring written inline,
        # the bus's match cache read directly.
        while q and n < max_events:
            ev = q.popleft()
            ev.n = nxt
            rbuf[nxt % cap] = ev
            nxt += 1
            subs = cache.get(ev.topic)
            if subs is None:
                subs = match(ev.topic)
                cache = bus._cache
            if subs:
                tb = ev.topic.encode()
                data = ev.data
                for slot in subs:
                    if not slot.deliver(tb, data):
                        self._trapped(slot)
                        trapped = True
            for t in taps:
                t(ev)
            n += 1
            if self._pending_rollback:
                ring.next = nxt
                self._do_rollbacks()
                cache = bus._cache  # subscriptions changed
            if deadline and (trapped or (subs and time.perf_counter() > deadline)):
                break
        ring.next = nxt
        self.counts["events"] += n
        return n

    def _trapped(self, slot):
        self.log("warn", "module trapped", module=slot.label, error=slot.last_error)
        if slot.trap_policy.record(self.clock()) and slot not in self._pending_rollback:
            self._pending_rollback.append(slot)

    # ---- install / rollback -------------------------------------------
    def _verify(self, data, checked=None):
        try:
            return admit(data, self.verifiers, self.limits, checked)
        except ValueError as e:
            raise InstallError(str(e))

    def _state(self, name, manifest):
        st = self.states.get(name)
        if st is None:
            st = self.states[name] = StateLog(self.store, name)
        st.max_bytes = manifest["limits"]["state_max"]
        return st

    def _load(self, hdr, wasm, names):
        policy = caps_for(hdr.manifest, self.policy)
        tp = lc.TrapPolicy(self.max_traps, self.trap_window_ms)
        try:
            return Slot(self, hdr, wasm, self._state(hdr.name, hdr.manifest),
                        policy, names, tp)
        except EngineError as e:
            raise InstallError(str(e))

    def install(self, data, rollback=False, stored=None, checked=None):
        """Verify, load and start a package, then switch to it.
        Returns a result dict; raises InstallError with a clear reason.
        stored: the store object `data` was read from, already durable (a
        finished push): it is moved into place instead of written again.
        checked: admission.check_head() of its first bytes, done earlier."""
        hdr, wasm, names = self._verify(data, checked)
        mod = self.modules.get(hdr.name)
        cur = mod.active if mod else None
        if cur is not None:
            old_v, new_v = pk.parse_version(cur.version), pk.parse_version(hdr.version)
            if new_v == old_v:
                return {"name": hdr.name, "version": hdr.version,
                        "state": cur.life.state, "changed": False}
            if new_v < old_v and not rollback:
                raise InstallError("%s@%s is older than the active %s; refusing a downgrade "
                                   "(use an explicit rollback)" % (hdr.name, hdr.version, cur.version))
        if mod and hdr.version in mod.blocked and not rollback:
            raise InstallError("%s@%s was rolled back on this node; refusing to install it "
                               "again (publish a newer version)" % (hdr.name, hdr.version))
        return self._activate(data, hdr, wasm, names, cur, stored)

    def rollback(self, statement, package=None):
        """Apply a signed rollback statement (node/core/rollback.py)."""
        try:
            return apply_rollback(self, statement, package)
        except InstallError:
            raise
        except ValueError as e:
            raise InstallError(str(e))

    def block_version(self, name, version):
        mod = self.modules.get(name)
        if mod is not None and version not in mod.blocked:
            self._block(mod, version)
            self._persist(mod)

    @staticmethod
    def _block(mod, version):
        """Refuse `version` of `mod` from now on (a replay of a version
        that was rolled back must not come back); keeps the newest few."""
        if version not in mod.blocked:
            mod.blocked = (mod.blocked + [version])[-BLOCKED_KEPT:]
        if mod.previous == version:
            mod.previous = None         # never an automatic rollback target

    def _activate(self, data, hdr, wasm, names, cur, stored=None):
        t0 = time.perf_counter()
        slot = self._load(hdr, wasm, names)
        # Persist the package before it can become active, so a crash after
        # the switch always finds the bytes it needs.  A stored (fsynced)
        # object is renamed into place: the store's atomic rename leaves
        # either no package or the whole one, and nothing is written twice.
        dest = "packages/%s/%s.pkg" % (hdr.name, hdr.version)
        if stored is not None:
            self.store.sync(stored)     # may wait for a background fsync
            self.store.rename(stored, dest)
        else:
            self.store.write(dest, bytes(data))
        state = self.states[hdr.name]
        snapshot = dict(state.data)
        why = slot.start()
        if why:
            # A refused start must leave the running version's state as it was.
            state.restore(snapshot)
            slot.life.to(lc.FAILED, why)
            self._note_failed(hdr.name, slot)
            self.log("warn", "start refused", module=slot.label, reason=why)
            self._module_event(hdr.name, "refused", version=hdr.version, reason=why)
            raise InstallError("%s: %s; %s" % (slot.label, why,
                               "still running %s" % cur.version if cur else "not started"))
        self._switch(hdr.name, slot)
        ms = (time.perf_counter() - t0) * 1000
        self.log("info", "module active", module=slot.label, swap_ms=round(ms, 2),
                 replaced=cur.version if cur else None)
        self._module_event(hdr.name, "active", version=hdr.version,
                  replaced=cur.version if cur else None)
        return {"name": hdr.name, "version": hdr.version, "state": slot.life.state,
                "changed": True, "replaced": cur.version if cur else None,
                "swap_ms": ms}

    def _switch(self, name, slot):
        mod = self.modules.get(name)
        if mod is None:
            mod = self.modules[name] = Module(name)
        old = mod.active
        if old is not None:
            old.life.to(lc.DRAINING, "replaced by %s" % slot.version)
            self.bus.unsubscribe(old)
        slot.life.to(lc.RUNNING)
        for f in slot.manifest["subscribe"]:
            self.bus.subscribe(f, slot)
        mod.active = slot
        if old is not None:
            mod.previous = old.version
            old.stop()
            old.life.to(lc.STOPPED)
        self._persist(mod)
        self.states[name].flush()

    def _persist(self, mod):
        rec = {"active": mod.active.version if mod.active else None,
               "previous": mod.previous, "blocked": mod.blocked}
        self.store.write("modules/%s.cbor" % mod.name, cbor.dumps(rec))

    def _note_failed(self, name, slot):
        mod = self.modules.get(name)
        if mod is None:
            mod = self.modules[name] = Module(name)
        mod.failed = (mod.failed + [slot.info()])[-4:]

    def _do_rollbacks(self):
        todo, self._pending_rollback = self._pending_rollback, []
        for slot in todo:
            mod = self.modules.get(slot.name)
            if mod is None or mod.active is not slot:
                continue
            self._roll_back(mod, slot, "trapped %d times within %d ms"
                            % (self.max_traps, self.trap_window_ms))

    def _roll_back(self, mod, slot, why):
        self.counts["rollbacks"] += 1
        self.bus.unsubscribe(slot)
        prev = None
        if mod.previous:
            try:
                prev = self._load_stored(mod.name, mod.previous)
                r = prev.start()
                if r:
                    raise InstallError(r)
            except (InstallError, ValueError) as e:
                self.log("error", "rollback target unusable", module=mod.name,
                         version=mod.previous, error=str(e))
                prev = None
        slot.life.to(lc.ROLLED_BACK if prev else lc.FAILED, why)
        slot.stop()
        self._note_failed(mod.name, slot)
        if prev is None:
            mod.active = None
            mod.failed[-1]["state"] = lc.FAILED
            self._persist(mod)
            self.log("error", "module failed, nothing to roll back to", module=slot.label, reason=why)
            self._module_event(mod.name, "failed", version=slot.version, reason=why)
            return
        prev.life.to(lc.RUNNING)
        for f in prev.manifest["subscribe"]:
            self.bus.subscribe(f, prev)
        mod.active = prev
        mod.previous = None
        self._block(mod, slot.version)
        self._persist(mod)
        self.log("warn", "rolled back", module=mod.name, bad=slot.version,
                 restored=prev.version, reason=why)
        self._module_event(mod.name, "rolled_back", version=slot.version,
                  restored=prev.version, reason=why)

    def _load_stored(self, name, version):
        data = self.store.read("packages/%s/%s.pkg" % (name, version))
        if data is None:
            raise InstallError("package %s@%s missing from the store" % (name, version))
        hdr, wasm, names = self._verify(data)
        if hdr.name != name or hdr.version != version:
            raise InstallError("stored package %s@%s holds %s@%s"
                               % (name, version, hdr.name, hdr.version))
        return self._load(hdr, wasm, names)

    def restore(self):
        """Bring back the active versions recorded in the store (boot)."""
        for obj in self.store.list("modules/"):
            if not obj.endswith(".cbor"):
                continue
            try:
                rec = cbor.loads(self.store.read(obj) or b"")
                name = obj[len("modules/"):-len(".cbor")]
                pk.check_name(name)
            except ValueError as e:
                self.log("error", "unreadable module record", object=obj, error=str(e))
                continue
            mod = self.modules[name] = Module(name)
            mod.previous = rec.get("previous")
            bl = rec.get("blocked")
            mod.blocked = [v for v in bl if type(v) is str] if type(bl) is list else []
            for v in (rec.get("active"), rec.get("previous")):
                if not v:
                    continue
                try:
                    slot = self._load_stored(name, v)
                    why = slot.start()
                    if why:
                        raise InstallError(why)
                except (InstallError, ValueError) as e:
                    self.log("error", "cannot restore module", module=name,
                             version=v, error=str(e))
                    continue
                slot.life.to(lc.RUNNING)
                for f in slot.manifest["subscribe"]:
                    self.bus.subscribe(f, slot)
                mod.active = slot
                if v != rec.get("active"):
                    mod.previous = None
                    self._persist(mod)
                self.log("info", "module restored", module=slot.label)
                break

    def remove(self, name):
        mod = self.modules.get(name)
        if mod is None or mod.active is None:
            raise InstallError("no module named %r is installed" % name)
        slot = mod.active
        slot.life.to(lc.DRAINING, "removed")
        self.bus.unsubscribe(slot)
        slot.stop()
        slot.life.to(lc.STOPPED, "removed")
        del self.modules[name]
        self.store.delete("modules/%s.cbor" % name)
        self._module_event(name, "removed", version=slot.version)

    # ---- introspection ---------------------------------------------------
    def module_list(self):
        out = []
        for name in sorted(self.modules):
            mod = self.modules[name]
            if mod.active is not None:
                d = mod.active.info()
                d["previous"] = mod.previous
                out.append(d)
            for f in mod.failed:
                if mod.active is None or f["version"] != mod.active.version:
                    out.append(dict(f))
        return out

    def flush(self):
        for st in self.states.values():
            st.flush()
