"""One loaded version of a module: its wasm instance, ABI and counters.

A module has one active slot; during an install a second slot (the "B"
slot) is loaded and started beside it, and the host switches between two
events.  Slots never raise out of `deliver`: traps are counted and handed to
the host's rollback policy.
"""
from node.core import lifecycle as lc
from node.core.abi import Caps, HostABI
from node.engine import Trap


class Slot:
    def __init__(self, host, header, wasm, state, caps, abi_names, trap_policy):
        self.host = host
        self.header = header
        self.manifest = header.manifest
        self.name = header.name
        self.version = header.version
        self.label = "%s@%s" % (self.name, self.version)
        self.life = lc.Lifecycle(lc.VERIFIED)
        self.trap_policy = trap_policy
        self.events = 0
        self.traps = 0
        self.errors = 0
        self.dropped = 0
        self.last_error = ""
        limits = self.manifest["limits"]
        self.inst = None
        self.abi = HostABI(self.name, caps, state, self._mem, host.clock,
                           host.on_emit, host.on_log, host.on_call,
                           data_max=limits["data_max"])
        self.abi.slot = self
        self.abi.label = self.label
        self.inst = host.engine.load(wasm, self.abi.functions(abi_names))
        # Host calls fetch memory on every call (memory.grow makes old views
        # stale); hand the ABI the engine's fastest accessor.
        self.abi.mem = getattr(self.inst, "memory_getter", self.inst.memory)
        # A metered module gets limits.fuel for every call into it (out of
        # fuel is a trap); unmetered ones (allowed by node config) get None.
        self._budget = None
        if self.manifest.get("metered"):
            self._budget = self.inst.budget_setter(limits["fuel"])
        self.life.to(lc.LOADED)
        self._alloc = self.inst.find("aegis_alloc") if self.inst.has("aegis_event") else None
        self._event = self.inst.find("aegis_event") if self._alloc else None

    def _mem(self):
        return self.inst.memory()

    def start(self):
        """Run aegis_start; returns "" when started, else the reason."""
        self.life.to(lc.STARTING)
        if self.inst.has("aegis_start"):
            try:
                if self._budget:
                    self._budget()
                r = self.inst.call("aegis_start")
            except Trap as e:
                return "aegis_start trapped: %s" % e
            if r:
                return "aegis_start refused to start (returned %d)" % r
        return ""

    def stop(self):
        if self.inst.has("aegis_stop"):
            try:
                if self._budget:
                    self._budget()
                self.inst.call("aegis_stop")
            except Trap as e:
                self.host.log("warn", "aegis_stop trapped", module=self.label, error=str(e))

    def deliver(self, topic_b, data):
        """Hand one event to the module; returns False on a trap."""
        tl = len(topic_b)
        n = tl + len(data)
        budget = self._budget
        try:
            if budget:
                budget()
            p = self._alloc(n)
            if p <= 0:
                self.dropped += 1
                return True
            m = self.abi.mem()
            if p + n > len(m):
                self.dropped += 1
                self.last_error = "aegis_alloc returned a buffer outside memory"
                return True
            m[p:p + n] = topic_b + data
            if budget:
                budget()
            r = self._event(p, tl, p + tl, n - tl)
        except RuntimeError as e:  # pywasm3 raises RuntimeError on traps
            self.traps += 1
            self.last_error = "trap: %s" % str(e).replace("[trap] ", "")
            return False
        self.events += 1
        if r:
            self.errors += 1
        return True

    def info(self):
        return {
            "name": self.name,
            "version": self.version,
            "state": self.life.state,
            "reason": self.life.reason,
            "events": self.events,
            "traps": self.traps,
            "errors": self.errors,
            "dropped": self.dropped,
            "denied": self.abi.denied,
            "last_error": self.last_error,
            "subscribe": self.manifest["subscribe"],
            "emit": list(self.abi.caps.emit),
            "ports": sorted(self.abi.caps.ports),
            "metered": bool(self.manifest.get("metered")),
            "fuel": self.manifest["limits"]["fuel"] if self._budget else None,
        }


def caps_for(manifest, policy):
    caps = Caps(manifest["emit"], manifest["ports"])
    if policy:
        caps = caps.narrowed(policy.get("emit"), policy.get("ports"))
    return caps
