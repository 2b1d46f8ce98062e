# wasm3 on the board itself: the engine interface of node/engine/ (load,
# has, find, call, memory, budget_setter) over the `wasm3` native module
# that `make firmware` builds (firmware/wasm3mod.c) and `aegis flash`
# copies to the board as lib/wasm3.mpy.  Same wasm3 (pywasm3 0.5.0's
# sources), same traps (RuntimeError "[trap] ..."), same metering
# (metering.usegas against a per-call budget) as a gateway.
#
# Memory: mem_limit (bytes, 0 = none) caps what wasm3 allocates for linear
# memory, so a module that needs less than its declared 64 KiB page runs in
# less (an access past the cap traps as out of bounds).  memory_need()
# says how much a module touches before it runs: its data segments and its
# C stack (the initial value of the __stack_pointer global).
import wasm3

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

_PAGE = const(65536)
STACK_BYTES = const(32768)      # wasm3's value stack (the gateway uses 64 KiB)


class EngineError(Exception):
    """wasm3 refused the module (invalid wasm, link failure)."""


class Trap(RuntimeError):
    """A wasm trap: unreachable, out-of-bounds access, out of gas..."""


def _msg(e):
    s = str(e)
    return s[7:] if s.startswith("[trap] ") else s


class NativeInstance:
    def __init__(self, wasm, imports, stack, mem_limit):
        try:
            self.rt = rt = wasm3.load(wasm, stack, mem_limit)
        except RuntimeError as e:
            raise EngineError("wasm3 refused the module: %s" % _msg(e))
        for name, (sig, fn) in imports.items():
            try:
                wasm3.link(rt, "aegis", name, sig, fn)
            except RuntimeError as e:
                raise EngineError("cannot link aegis.%s: %s" % (name, _msg(e)))
        self._funcs = {}
        self.memory_getter = lambda: wasm3.memory(rt)

    def find(self, name):
        f = self._funcs.get(name)
        if f is None:
            f = wasm3.find(self.rt, name)
            if f is None:
                return None
            self._funcs[name] = f
        return f

    def has(self, name):
        return self.find(name) is not None

    def call(self, name, *args):
        f = self.find(name)
        if f is None:
            raise EngineError("module has no export %r" % name)
        try:
            return f(*args)
        except RuntimeError as e:
            raise Trap(_msg(e))

    def memory(self):
        return wasm3.memory(self.rt)

    def budget_setter(self, fuel):
        rt = self.rt
        return lambda: wasm3.set_gas(rt, fuel)

    def gas_used(self):
        return wasm3.gas_used(self.rt)


class NativeEngine:
    name = "wasm3-native"

    def __init__(self, stack=STACK_BYTES, mem_limit=0):
        self.stack = stack
        self.mem_limit = mem_limit

    def load(self, wasm, imports, mem_limit=None):
        return NativeInstance(wasm, imports, self.stack,
                              self.mem_limit if mem_limit is None else mem_limit)


def _uleb(b, p):
    n = s = 0
    while True:
        c = b[p]
        p += 1
        n |= (c & 0x7f) << s
        s += 7
        if c < 0x80:
            return n, p


def _sleb(b, p):
    n = s = 0
    while True:
        c = b[p]
        p += 1
        n |= (c & 0x7f) << s
        s += 7
        if c < 0x80:
            if c & 0x40:
                n -= 1 << s
            return n, p


def _name(b, p):
    n, p = _uleb(b, p)
    return bytes(b[p:p + n]).decode(), p + n


def imported_functions(wasm, module="aegis"):
    """Names of the functions `wasm` imports from `module` (a small reader:
    node.core.wasmparse would cost a board ~6 KiB of heap)."""
    b = memoryview(wasm)
    p, out = 8, []
    try:
        while p < len(b):
            sid = b[p]
            size, p = _uleb(b, p + 1)
            if sid == 2:
                n, q = _uleb(b, p)
                for _ in range(n):
                    mod, q = _name(b, q)
                    nm, q = _name(b, q)
                    kind = b[q]
                    q += 1
                    if kind == 0:
                        _, q = _uleb(b, q)
                        if mod == module:
                            out.append(nm)
                    elif kind == 1:             # table: reftype, limits
                        q += 1
                        lim = b[q]
                        _, q = _uleb(b, q + 1)
                        if lim & 1:
                            _, q = _uleb(b, q)
                    elif kind == 2:             # memory: limits
                        lim = b[q]
                        _, q = _uleb(b, q + 1)
                        if lim & 1:
                            _, q = _uleb(b, q)
                    else:                       # global: type, mutability
                        q += 2
                return out
            p += size
    except (IndexError, UnicodeError):
        raise ValueError("malformed wasm import section")
    return out


def memory_need(wasm):
    """(declared initial bytes, bytes touched before running): the end of
    the highest active data segment or the initial __stack_pointer (the
    first mutable i32 global), whichever is higher; None when an offset is
    not a constant.  Raises ValueError on malformed input."""
    b = memoryview(wasm)
    if bytes(b[:8]) != b"\x00asm\x01\x00\x00\x00":
        raise ValueError("not a wasm module")
    p, declared, touched = 8, 0, 0
    try:
        while p < len(b):
            sid = b[p]
            size, p = _uleb(b, p + 1)
            end = p + size
            if sid == 5:
                n, q = _uleb(b, p)
                if n:
                    flag = b[q]
                    declared, q = _uleb(b, q + 1)
                    declared *= _PAGE
            elif sid == 6:
                n, q = _uleb(b, p)
                if n:
                    typ, mut, op = b[q], b[q + 1], b[q + 2]
                    if typ == 0x7f and mut == 1 and op == 0x41:
                        touched = max(touched, _sleb(b, q + 3)[0])
            elif sid == 11:
                n, q = _uleb(b, p)
                for _ in range(n):
                    flag, q = _uleb(b, q)
                    if flag == 1:           # passive: copied only when asked
                        ln, q = _uleb(b, q)
                        q += ln
                        continue
                    if flag == 2:
                        _, q = _uleb(b, q)
                    if b[q] != 0x41:
                        return declared, None
                    off, q = _sleb(b, q + 1)
                    if b[q] != 0x0b:
                        return declared, None
                    ln, q = _uleb(b, q + 1)
                    touched = max(touched, off + ln)
                    q += ln
            p = end
    except IndexError:
        raise ValueError("truncated wasm module")
    return declared, touched
