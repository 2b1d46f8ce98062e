# Native execution, board side: modules run in wasm3 on the board itself
# (the `wasm3` native module from firmware/, node/board/native_engine.py),
# behind the engine seam of node/board/engine.py.  Same ABI v1 (node.core.abi),
# same fuel metering and limits as a gateway; a module's emits go through
# board.emit (checked against its manifest), its calls to board.ports, its
# state to a StateLog on flash.
#
# A module that cannot run natively (unmetered: a spin would hang the
# board; more linear memory than the native budget; wasm3 refusing it or
# running out of heap) is handed to proxy mode instead, and its record says
# so ("mode": "proxy"), as does the status.  One that fails the checks a
# gateway's admission makes (ABI imports, metering, memory cap) is refused.
import gc
import os
import sys

from node.core import abi as A
from node.core import package as pk
from node.core.statelog import StateLog

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

_EMITS_PER_CALL = const(16)     # queued emits per call, then AEGIS_ELIMIT
_LOG_MAX = const(120)
_HEADROOM = const(8192)         # linear memory above a module's static footprint
_OVERHEAD = const(12288)        # wasm3 environment, runtime and compiler state (measured)
NATIVE_MEM = 49152              # linear memory budget per module (board cfg "native_mem")
NATIVE_STACK = 8192             # wasm3 value stack per module (board cfg "native_stack")


_MIN_FREE = const(40960)        # heap that must stay free once wasm3 is loaded
_said = False


# Ports whose loader puts native machine code outside the GC heap (unix:
# mmap'd executable pages; esp32: IRAM through MP_PLAT_COMMIT_EXEC).
_CODE_OUTSIDE_HEAP = ("linux", "darwin", "esp32")


def _mpy_size():
    for d in sys.path:
        try:
            return os.stat((d or ".") + "/wasm3.mpy")[6]
        except OSError:
            pass
    return 0


def available():
    """True when the `wasm3` native module imports and leaves room: on rp2
    its machine code is loaded into the GC heap (~82 KB on a Pico W), so a
    board that cannot afford it stays in proxy mode rather than starve its
    runtime.  The check costs nothing once wasm3 is loaded."""
    global _said
    if "node.board.native_engine" in sys.modules:
        return True
    size = _mpy_size()
    if not size and "wasm3" not in sys.modules:
        return False
    code = 0 if sys.platform in _CODE_OUTSIDE_HEAP else size
    gc.collect()
    if gc.mem_free() < code + _MIN_FREE:
        if not _said:
            _said = True
            print("aegis: native mode off: %d bytes of heap free, wasm3 needs %d"
                  % (gc.mem_free(), code + _MIN_FREE))
        return False
    try:
        _ne()
    except (ImportError, ValueError):   # ValueError: wasm3.mpy not for this firmware
        return False
    return True


def _ne():
    # Imported only once available() said yes: it imports wasm3.
    from node.board import native_engine
    return native_engine


class _NotNative(Exception):
    """This module runs in proxy mode instead; the message says why."""


def _wall_ms():
    import time
    try:
        return time.time_ns() // 1000000
    except AttributeError:
        return int(time.time() * 1000)


class _Module:
    """One native instance: its ABI host, queued emits, counters."""

    def __init__(self, eng, rec):
        b = eng.b
        st = b.store
        head = st.read_at(rec["pkg"], 0, 12)
        n = int.from_bytes(head[8:12], "big") if len(head) == 12 else 0
        hdr = pk.parse_header(head + st.read_at(rec["pkg"], 12, n))
        m = hdr.manifest
        if not m.get("metered"):
            raise _NotNative("not metered (a board cannot stop an unmetered spin)")
        wasm = st.read_at(rec["pkg"], hdr.wasm_offset, m["size"])
        # A gateway's admission (node/admission.py) on the board's copy,
        # minus what would put the metering pass on the board: ABI v1
        # imports and the manifest's memory pages are checked here (and
        # the pages enforced through wasm3's memory cap below); that the
        # code is metered the way `aegis pack` meters (meterverify) is
        # taken from the signed manifest plus its metering.usegas import.
        # A failure is a refusal (ValueError), not a reason to try proxy.
        from node.core import imports
        lim = m["limits"]
        info, names = imports.check_module(wasm, lim["memory_pages"], True)
        if not any(mod == "metering" for mod, _, _, _ in info.imports):
            raise imports.AbiError("manifest says metered, but the module does not import "
                                   "metering.usegas")
        NE = _ne()
        declared, touched = NE.memory_need(wasm)
        budget = int(b.cfg.get("native_mem", NATIVE_MEM))
        declared = min(declared, lim["memory_pages"] * 65536)
        cap = declared
        if declared > budget:
            # Memory below the declared pages (wasm3's memoryLimit): what
            # the module touches before it runs (data, C stack) plus room.
            # memory.size still says the declared pages, so a module with an
            # allocator sized by it may trap: traps are counted, not fatal.
            cap = ((touched or 0) + _HEADROOM + 4095) // 4096 * 4096
            if touched is None or cap > budget:
                raise _NotNative("needs %s bytes of linear memory, native budget %d"
                                 % ("?" if touched is None else cap, budget))
        self.rec, self.eng, self.label = rec, eng, "%s@%s" % (rec["name"], rec["v"])
        self.queue = []
        self.traps = self.events = self.errors = 0
        self.last_error = ""
        self.abi = A.HostABI(rec["name"], A.Caps(rec["emit"], rec["ports"]),
                             StateLog(st, rec["name"]), None, _wall_ms,
                             self._emit, self._log, self._call, data_max=lim["data_max"])
        try:
            self.inst = eng.wasm3.load(wasm, self.abi.functions(names),
                                       mem_limit=cap)
        except MemoryError:
            gc.collect()
            raise _NotNative("not enough heap for wasm3 (%d bytes free, needs about %d)"
                             % (gc.mem_free(), len(wasm) * 8 + cap + eng.stack + _OVERHEAD))
        except NE.EngineError as e:
            raise _NotNative(str(e))
        self.abi.mem = self.inst.memory_getter
        self.budget = self.inst.budget_setter(lim["fuel"])
        self.alloc = self.inst.find("aegis_alloc")
        self.event = self.inst.find("aegis_event")

    # ---- host callbacks ------------------------------------------------
    def _emit(self, abi, topic, data):
        if len(self.queue) >= _EMITS_PER_CALL:
            return A.ELIMIT
        self.queue.append((topic, data))
        return A.OK

    def _log(self, abi, level, text):
        print("aegis: [%s] %s" % (self.label, text[:_LOG_MAX]))

    def _call(self, abi, port, data):
        return self.eng.b.ports.call(port, data)

    # ---- calls into the module -----------------------------------------
    def _flush(self):
        q, self.queue = self.queue, []
        for topic, data in q:       # after the handler: a module never re-enters itself
            if self.eng.b.emit(self.rec, topic, data):
                self.eng.counts["native_emits"] += 1
            else:
                self.eng.counts["native_denied"] += 1

    def run(self, export):
        """Run a no-argument export (aegis_start/stop); (ok, detail)."""
        if not self.inst.has(export):
            return True, ""
        try:
            self.budget()
            r = self.inst.call(export)
        except _ne().Trap as e:
            self.queue = []
            return False, "%s trapped: %s" % (export, e)
        self._flush()
        if r:
            return False, "%s returned %d" % (export, r)
        return True, ""

    def deliver(self, topic_b, data):
        if self.alloc is None or self.event is None:
            return
        n = len(topic_b) + len(data)
        try:
            self.budget()
            p = self.alloc(n)
            m = self.inst.memory()
            if p <= 0 or m is None or p + n > len(m):
                self.eng.counts["native_dropped"] += 1
                return
            m[p:p + n] = topic_b + data
            self.budget()
            r = self.event(p, len(topic_b), p + len(topic_b), len(data))
        except RuntimeError as e:       # a trap: count it, drop its emits
            self.traps += 1
            self.eng.counts["native_traps"] += 1
            self.last_error = str(e)[:80]
            self.queue = []
            return
        self.events += 1
        self.errors += r != 0
        self._flush()


class NativeEngine:
    mode = "native"

    def __init__(self, board):
        if not available():
            raise ImportError("wasm3 native module not available")
        self.b = board
        self.stack = int(board.cfg.get("native_stack", NATIVE_STACK))
        self.wasm3 = _ne().NativeEngine(stack=self.stack)
        self.mods = {}          # module name -> _Module
        self.counts = {"native_ev": 0, "native_emits": 0, "native_denied": 0,
                       "native_traps": 0, "native_dropped": 0, "native_fallbacks": 0}

    def subscriptions(self):
        return []

    def on_connect(self):
        pass

    def on_message(self, topic, msg):
        return False

    def tick(self, now):
        pass

    def start(self, rec, done):
        gc.collect()
        try:
            mod = _Module(self, rec)
        except (_NotNative, MemoryError) as e:
            # Runs on the gateway instead: the record and the status say so.
            self.counts["native_fallbacks"] += 1
            gc.collect()
            print("aegis: %s@%s runs in proxy mode: %s" % (rec["name"], rec["v"], e))
            rec["mode"] = "proxy"
            self.b.proxy.start(rec, done)
            return
        except ValueError as e:         # refused: bad package, ABI, metering
            gc.collect()
            done(False, str(e))
            return
        ok, detail = mod.run("aegis_start")
        if not ok:
            done(False, detail)
            return
        old = self.mods.get(rec["name"])
        self.mods[rec["name"]] = mod
        if old is not None:
            old.run("aegis_stop")
        gc.collect()
        done(True, "native wasm3, %d bytes heap free" % gc.mem_free())

    def stop(self, name):
        """Module `name` was removed (node/board/deploy.py remove())."""
        m = self.mods.pop(name, None)
        if m is not None:
            m.run("aegis_stop")
            gc.collect()

    def deliver(self, topic, data, src, mod):
        tb = topic.encode()
        for name in self.b.bus.match(topic):
            m = self.mods.get(name)
            rec = self.b.mods.get(name)
            if m is None or rec is None or rec.get("mode") != "native" or m.rec is not rec:
                continue
            self.counts["native_ev"] += 1
            m.deliver(tb, data)

    def stats(self):
        return dict(self.counts)
