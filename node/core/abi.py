# Host ABI v1: what each host function means, over a memory accessor and a
# capability set.  The engine links these methods as the wasm imports of
# module "aegis"; a module gets only the functions it imports, and every
# call is checked against the capabilities of its signed manifest (narrowed
# by the node's policy).  Host functions never raise into wasm: every
# problem is an error code (see docs/ABI.md).
from node.core.bus import check_topic, TopicError
from node.core.statelog import StateError

OK = 0
ENOENT = -1
EPERM = -2
EINVAL = -3
E2BIG = -4
EIO = -5
ELIMIT = -6

# name -> (wasm params, wasm results, pywasm3-style signature)
IMPORTS = {
    "emit": (("i32",) * 4, ("i32",), "i(iiii)"),
    "log": (("i32",) * 3, (), "v(iii)"),
    "now_ms": ((), ("i64",), "I()"),
    "state_get": (("i32",) * 4, ("i32",), "i(iiii)"),
    "state_set": (("i32",) * 4, ("i32",), "i(iiii)"),
    "call": (("i32",) * 6, ("i32",), "i(iiiiii)"),
}
LOG_MAX = 1024
PORT_OUT_MAX = 1 << 20


class Caps:
    """What a module may do: emit prefixes and ports (deny by default)."""

    def __init__(self, emit=(), ports=()):
        self.emit = tuple(emit)
        self.ports = frozenset(ports)

    def narrowed(self, policy_emit=None, policy_ports=None):
        """Intersect with a node policy (None: the policy does not narrow)."""
        emit = self.emit
        if policy_emit is not None:
            # Keep a manifest prefix only if some policy prefix covers it.
            emit = tuple(p for p in emit
                         if any(p.startswith(q) for q in policy_emit))
        ports = self.ports
        if policy_ports is not None:
            ports = ports & frozenset(policy_ports)
        return Caps(emit, ports)

    def may_emit(self, topic):
        for p in self.emit:
            if topic.startswith(p):
                return True
        return False


class HostABI:
    """The host functions for one module instance.

    mem()                 -> current linear memory (re-fetched every call:
                             a memory.grow makes old views stale)
    clock()               -> wall-clock ms
    on_emit(abi, topic, data) -> error code (the host queues the event)
    on_log(abi, level, text)
    on_call(abi, port, data) -> bytes | negative error code
    """

    def __init__(self, name, caps, state, mem, clock, on_emit, on_log,
                 on_call, data_max=65536):
        self.name = name
        self.caps = caps
        self.state = state
        self.mem = mem
        self.clock = clock
        self.on_emit = on_emit
        self.on_log = on_log
        self.on_call = on_call
        self.data_max = data_max
        self._topics = {}  # raw topic -> str, or error code; bounded
        self.denied = 0

    def _slice(self, m, p, n):
        if p < 0 or n < 0 or p + n > len(m):
            return None
        return bytes(m[p:p + n])

    def _topic(self, tb):
        t = self._topics.get(tb)
        if t is not None:
            return t
        try:
            t = tb.decode()
            check_topic(t)
            if not self.caps.may_emit(t):
                t = EPERM
        except (UnicodeError, TopicError):
            t = EINVAL
        if len(self._topics) > 1024:
            self._topics = {}
        self._topics[tb] = t
        return t

    def emit(self, tp, tl, dp, dl):
        m = self.mem()
        n = len(m)
        if tp < 0 or tl <= 0 or tl > 255 or dp < 0 or dl < 0 \
                or tp + tl > n or dp + dl > n:
            return EINVAL
        if dl > self.data_max:
            return E2BIG
        t = self._topics.get(bytes(m[tp:tp + tl]))
        if type(t) is not str:
            t = self._topic(bytes(m[tp:tp + tl]))
            if type(t) is int:
                if t == EPERM:
                    self.denied += 1
                return t
        return self.on_emit(self, t, bytes(m[dp:dp + dl]))

    def log(self, level, p, n):
        m = self.mem()
        b = self._slice(m, p, min(n, LOG_MAX)) if n >= 0 else None
        if b is None:
            return
        try:
            text = b.decode()
        except UnicodeError:
            text = repr(b)
        self.on_log(self, level, text)

    def now_ms(self):
        return self.clock()

    def state_get(self, kp, kl, bp, cap):
        m = self.mem()
        key = self._slice(m, kp, kl)
        if key is None or kl == 0 or cap < 0 or bp < 0 or bp + cap > len(m):
            return EINVAL
        v = self.state.get(key)
        if v is None:
            return ENOENT
        if len(v) <= cap:
            m[bp:bp + len(v)] = v
        return len(v)

    def state_set(self, kp, kl, vp, vl):
        m = self.mem()
        key = self._slice(m, kp, kl)
        if key is None or kl == 0:
            return EINVAL
        try:
            if vl < 0:
                self.state.delete(key)
                return OK
            val = self._slice(m, vp, vl)
            if val is None:
                return EINVAL
            self.state.set(key, val)
        except StateError:
            return E2BIG
        return OK

    def call(self, pp, pl, ip, il, op, cap):
        m = self.mem()
        pb = self._slice(m, pp, pl)
        data = self._slice(m, ip, il)
        if pb is None or data is None or cap < 0 or op < 0 or op + cap > len(m):
            return EINVAL
        try:
            port = pb.decode()
        except UnicodeError:
            return EINVAL
        if port not in self.caps.ports:
            self.denied += 1
            return EPERM
        out = self.on_call(self, port, data)
        if type(out) is int:
            return out
        if len(out) > PORT_OUT_MAX:
            return E2BIG
        m = self.mem()  # the adapter ran Python code: re-fetch
        if len(out) <= cap:
            m[op:op + len(out)] = out
        return len(out)

    def functions(self, imported):
        """{name: (signature, callable)} for the imported ABI names."""
        out = {}
        for nm in imported:
            out[nm] = (IMPORTS[nm][2], getattr(self, nm))
        return out
