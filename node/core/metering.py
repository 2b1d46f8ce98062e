# Fuel metering: a wasm binary rewriter that makes a module pay for the
# work it does, so that a call that never returns can be stopped.
#
# Why: wasm3 cannot be interrupted from outside and pywasm3 holds the GIL
# while wasm runs, so one module stuck in a loop would hang the whole node.
# wasm3 (through pywasm3) meters exactly the modules that import
# `metering.usegas(i32)`: each call adds its argument to the module's gas
# counter and traps "Out of gas" past `module.gasLimit`.  This pass adds
# that import and a charge at function entry and at the start of every loop
# body, each covering all the code up to the next such point, so the charge
# is paid *before* the code runs.  See docs/METERING.md.
#
# Portable (MicroPython too): plain functions, no typing, no I/O.

from node.core import wasmcode as wc
from node.core.wasmcode import MeteringError, Reader, uleb

# wasm3 adds usegas(n) to gasUsed as n / 10000: gasLimit is in these units.
GAS_UNIT = 10000
# Fuel for one call, so that a call that never returns is stopped within
# about 100 ms (2-core VM, pywasm3 0.5.0): the slowest fuel/time mix we
# measured, a tight `(loop (br 0))` (5 fuel per turn with BLOCK_COST),
# burns ~4e8 fuel/s, so it is stopped after ~50 ms: a 2x margin.  Checked
# by tests/test_metering_wasm3.py::test_default_fuel_stops_a_spin_quickly.
DEFAULT_FUEL = 20000000

# Pseudo-opcode for cost_fn: a `call` to an imported (host) function, which
# crosses into Python and costs far more than a call between wasm functions.
OP_CALL_HOST = wc.OP_CALL_HOST
# Bulk memory/table operations pay a dynamic 1 fuel per 2**BULK_SHIFT
# elements (bytes), read from their length operand just before they run.
BULK_SHIFT = 6
# memory.grow pays PAGE_COST per requested page when the request is within
# the memory's maximum (else it fails cheaply and pays only its static
# cost), on top of its static cost: wasm3 takes
# ~40 us per page grown here (zeroing, page faults), ~16000 fuel's worth.
PAGE_COST = 20000
# Added to every charge: the usegas call is itself the most expensive thing
# in a short loop body, and without it a tight loop would run ~10x longer
# per unit of fuel than straight-line code.
BLOCK_COST = 4

# Host functions cost far more than wasm code: each call crosses into
# Python and does real work there.  Priced per import from what each ABI v1
# function takes on a gateway here (~1 us = 500 fuel: a spin of DEFAULT_FUEL
# takes ~40 ms), so that a loop of host calls is stopped in about the same
# time as a loop of plain code: emit copies its data and queues an event,
# state_set appends to the state log, log writes a JSON line.  `call` is
# priced for its own work; the port adapter's time is bounded by the
# adapter (timeouts), not by fuel.  Other imports: DEFAULT_COSTS[OP_CALL_HOST].
HOST_COSTS = {"aegis.emit": 2000, "aegis.state_set": 2000, "aegis.state_get": 1500,
              "aegis.log": 10000, "aegis.now_ms": 300, "aegis.call": 2000}

_DYN_BULK = (wc.OP_MEMORY_INIT, wc.OP_MEMORY_COPY, wc.OP_MEMORY_FILL,
             wc.OP_TABLE_INIT, wc.OP_TABLE_COPY, wc.OP_TABLE_FILL,
             wc.OP_TABLE_GROW)

# Static costs by opcode; anything else is 1.  Block markers cost nothing
# (wasm3 resolves them at compile time); calls set up a frame.
DEFAULT_COSTS = {wc.OP_BLOCK: 0, wc.OP_LOOP: 0, wc.OP_END: 0, wc.OP_ELSE: 0,
                 wc.OP_CALL: 5, wc.OP_CALL_INDIRECT: 10, OP_CALL_HOST: 1000,
                 wc.OP_MEMORY_GROW: 5000}
for _op in _DYN_BULK:
    DEFAULT_COSTS[_op] = 10


def default_cost(op):
    return DEFAULT_COSTS.get(op, 1)


_MAX_CHARGE = 0x7FFFFFFF
# Custom sections that name functions or point into code: they would lie
# after the rewrite, so they are dropped (debuggers lose names; wasm3's
# backtraces show indices).
_DROP_CUSTOM = ("name", "linking", "sourceMappingURL", "external_debug_info")
_DROP_PREFIX = (".debug", "reloc.")
# Section order rank (datacount 12 between elem 9 and code 10; tag 13 is
# refused below).
_ORDER = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 7, 7: 8, 8: 9, 9: 10,
          12: 11, 10: 12, 11: 13}
_HEADER = b"\x00asm\x01\x00\x00\x00"


def set_budget(module, fuel):
    """Give a pywasm3 Module `fuel` for its next call.  pywasm3 0.5.0
    resets gasUsed when gasLimit is set; a build that does not is handled
    by the second assignment (then the limit is relative to what was used)."""
    module.gasLimit = fuel / GAS_UNIT
    used = module.gasUsed
    if used:
        module.gasLimit = used + fuel / GAS_UNIT


def _sections(b):
    if len(b) < 8 or b[:4] != _HEADER[:4]:
        raise MeteringError("not a wasm module (bad magic)")
    if b[4:8] != _HEADER[4:]:
        raise MeteringError("unsupported wasm version")
    r = Reader(b, 8)
    out = []
    last = 0
    while r.pos < r.end:
        sid = r.byte()
        size = r.u32()
        if size > r.end - r.pos:
            raise MeteringError("section %d runs past the end" % sid)
        if sid == 13:
            raise MeteringError("tag section (exceptions) is not supported")
        if sid:
            rank = _ORDER.get(sid)
            if rank is None:
                raise MeteringError("unknown section id %d" % sid)
            if rank <= last:
                raise MeteringError("section %d duplicated or out of order" % sid)
            last = rank
        out.append((sid, r.pos, r.pos + size))
        r.pos += size
    return out


def _imports(b, start, end):
    """[(module, name, kind, raw bytes)] of the import section."""
    r = Reader(b, start, end)
    out = []
    for _ in range(r.count()):
        p = r.pos
        mod = r.name()
        nm = r.name()
        kind = r.byte()
        if kind == 0:
            r.u32()
        elif kind == 1:
            r.valtype()
            r.limits()
        elif kind == 2:
            r.limits()
        elif kind == 3:
            r.valtype()
            r.byte()
        elif kind == 4:
            raise MeteringError("tag imports (exceptions) are not supported")
        else:
            raise MeteringError("bad import kind %d" % kind)
        out.append((mod, nm, kind, b[p:r.pos]))
    _done(r, 2)
    return out


def _done(r, sid):
    if r.pos != r.end:
        raise MeteringError("section %d has trailing bytes" % sid)


def is_metered(wasm):
    """True when the module imports metering.usegas (raises MeteringError
    on a malformed header or import section)."""
    b = bytes(wasm)
    for sid, start, end in _sections(b):
        if sid == 2:
            for mod, nm, kind, _ in _imports(b, start, end):
                if mod == "metering" and nm == "usegas":
                    return True
    return False


def instrument(wasm, cost_fn=None):
    """Return the metered version of the module `wasm` (bytes).

    cost_fn(op) -> int >= 0 (or None for the default) gives the static cost
    of an opcode: one-byte opcodes as their value, 0xFC-prefixed ones as
    0xFC00 | sub-opcode, and OP_CALL_HOST for a call to an import.  Raises
    MeteringError for anything malformed, unsupported or already metered."""
    b = bytes(wasm)
    try:
        return _Rewriter(b, cost_fn).run()
    except MeteringError:
        raise
    except (IndexError, KeyError, UnicodeError, OverflowError) as e:
        # A safety net for hostile input: a bug here must still read as
        # "refused", never as a crash of the packer or the node.
        raise MeteringError("malformed module (%s: %s)" % (type(e).__name__, e))


class _Rewriter:
    def __init__(self, b, cost_fn):
        self.b = b
        self.cost_fn = cost_fn
        self.types = []          # raw bytes of each function type
        self.n_params = []       # parameter count of each type
        self.func_types = []     # type index of each defined function
        self.n_imp = 0           # imported functions
        self.imp_names = []      # "module.name" of each imported function
        self.imports = []
        self._costs = {}
        self.bulk_shift = BULK_SHIFT
        self.page_cost = PAGE_COST
        self.block_cost = BLOCK_COST
        self.mem_max = 65536     # pages; the declared maximum if there is one

    def cost(self, op):
        c = self._costs.get(op)
        if c is None:
            c = self.cost_fn(op) if self.cost_fn is not None else None
            if c is None:
                c = default_cost(op)
            if not isinstance(c, int) or c < 0 or c > _MAX_CHARGE:
                raise MeteringError("cost_fn gave %r for opcode 0x%x" % (c, op))
            self._costs[op] = c
        return c

    def host_cost(self, f):
        """Cost of a call to imported function f: cost_fn(OP_CALL_HOST) when
        it gives one, else HOST_COSTS by name, else the default."""
        if self.cost_fn is not None and self.cost_fn(OP_CALL_HOST) is not None:
            return self.cost(OP_CALL_HOST)
        c = HOST_COSTS.get(self.imp_names[f])
        return self.cost(OP_CALL_HOST) if c is None else c

    def remap(self, f):
        """New index of function f: usegas is the last import, so every
        defined function moves up by one."""
        if f >= self.n_total:
            raise MeteringError("function index %d out of range" % f)
        return f if f < self.n_imp else f + 1

    def run(self):
        b = self.b
        secs = _sections(b)
        for sid, start, end in secs:
            if sid == 1:
                self.parse_types(start, end)
            elif sid == 2:
                self.imports = _imports(b, start, end)
            elif sid == 3:
                r = Reader(b, start, end)
                for _ in range(r.count()):
                    t = r.u32()
                    if t >= len(self.types):
                        raise MeteringError("function has a bad type index %d" % t)
                    self.func_types.append(t)
                _done(r, 3)
        for mod, nm, kind, raw in self.imports:
            if mod == "metering":
                # Refused, not metered again: a module that can call usegas
                # itself can pass a negative amount and refill its budget.
                raise MeteringError("module already imports metering.%s" % nm)
            if kind == 0:
                t = Reader(raw, 0)
                t.name()
                t.name()
                t.byte()
                if t.u32() >= len(self.types):
                    raise MeteringError("import %s.%s has a bad type index" % (mod, nm))
                self.n_imp += 1
                self.imp_names.append(mod + "." + nm)
            elif kind == 2:
                t = Reader(raw, 0)
                t.name()
                t.name()
                t.byte()
                self.set_mem_max(t.limits())
        self.n_total = self.n_imp + len(self.func_types)
        self.gas_type = self.find_gas_type()
        self.gas_idx = self.n_imp
        out = [_HEADER]
        head_done = False
        saw_code = False
        for sid, start, end in secs:
            if sid == 0:
                if self.keep_custom(start, end):
                    out.append(_section(0, b[start:end]))
                continue
            if not head_done and _ORDER[sid] > 2:
                out.append(self.type_section())
                out.append(self.import_section())
                head_done = True
            if sid == 1 or sid == 2:
                continue
            if sid == 10:
                saw_code = True
            out.append(_section(sid, self.section(sid, start, end)))
        if not head_done:
            out.append(self.type_section())
            out.append(self.import_section())
        if self.func_types and not saw_code:
            raise MeteringError("functions declared but no code section")
        return b"".join(out)

    def parse_types(self, start, end):
        r = Reader(self.b, start, end)
        for _ in range(r.count()):
            p = r.pos
            form = r.byte()
            if form != 0x60:
                raise MeteringError("unsupported type form 0x%02x (GC?)" % form)
            n = r.count()
            for _ in range(n):
                r.valtype()
            for _ in range(r.count()):
                r.valtype()
            self.types.append(self.b[p:r.pos])
            self.n_params.append(n)
        _done(r, 1)

    def set_mem_max(self, mx):
        if mx is not None:
            self.mem_max = min(mx, 65536)

    def find_gas_type(self):
        want = b"\x60\x01\x7f\x00"
        for i, t in enumerate(self.types):
            if t == want:
                return i
        self.types.append(want)
        self.n_params.append(1)
        return len(self.types) - 1

    def type_section(self):
        return _section(1, uleb(len(self.types)) + b"".join(self.types))

    def import_section(self):
        entry = (uleb(8) + b"metering" + uleb(6) + b"usegas" + b"\x00"
                 + uleb(self.gas_type))
        # usegas goes after every other import: only defined functions
        # shift, and imported function indices stay put.
        raws = [raw for _, _, _, raw in self.imports]
        last_func = -1
        for i, imp in enumerate(self.imports):
            if imp[2] == 0:
                last_func = i
        raws.insert(last_func + 1, entry)
        return _section(2, uleb(len(raws)) + b"".join(raws))

    def keep_custom(self, start, end):
        nm = Reader(self.b, start, end).name()
        if nm in _DROP_CUSTOM:
            return False
        for p in _DROP_PREFIX:
            if nm.startswith(p):
                return False
        return True

    def section(self, sid, start, end):
        """The payload of section sid, rewritten where it holds function
        indices, and fully parsed (so malformed input is refused) elsewhere."""
        b = self.b
        r = Reader(b, start, end)
        nt = len(self.types)
        out = bytearray()
        if sid == 3 or sid == 12:
            return b[start:end]                 # parsed above / one u32
        if sid == 4:
            for _ in range(r.count()):
                r.valtype()
                r.limits()
        elif sid == 5:
            for _ in range(r.count()):
                self.set_mem_max(r.limits())
        elif sid == 6:
            n = r.count()
            out += uleb(n)
            for _ in range(n):
                p = r.pos
                r.valtype()
                r.byte()
                out += b[p:r.pos]
                out += wc.read_const_expr(r, nt, self.remap)
        elif sid == 7:
            n = r.count()
            out += uleb(n)
            for _ in range(n):
                p = r.pos
                r.name()
                kind = r.byte()
                if kind > 3:
                    raise MeteringError("bad export kind %d" % kind)
                out += b[p:r.pos]
                idx = r.u32()
                out += uleb(self.remap(idx) if kind == 0 else idx)
        elif sid == 8:
            out += uleb(self.remap(r.u32()))
        elif sid == 9:
            n = r.count()
            out += uleb(n)
            for _ in range(n):
                out += self.elem_segment(r)
        elif sid == 10:
            out += wc.rewrite_code(self, r)
        elif sid == 11:
            for _ in range(r.count()):
                flag = r.u32()
                if flag > 2:
                    raise MeteringError("bad data segment flag %d" % flag)
                if flag == 2:
                    r.u32()
                if flag != 1:
                    wc.read_const_expr(r, nt, self.remap)
                r.bytes(r.u32())
        _done(r, sid)
        return bytes(out) if out else b[start:end]

    def elem_segment(self, r):
        b = self.b
        nt = len(self.types)
        flag = r.u32()
        if flag > 7:
            raise MeteringError("bad element segment flag %d" % flag)
        out = bytearray(uleb(flag))
        if not flag & 1:                        # active: table, offset
            if flag & 2:
                out += uleb(r.u32())
            out += wc.read_const_expr(r, nt, self.remap)
        if flag & 3:                            # elemkind / reftype byte
            out.append(r.byte())
        n = r.count()
        out += uleb(n)
        for _ in range(n):
            if flag & 4:
                out += wc.read_const_expr(r, nt, self.remap)
            else:
                out += uleb(self.remap(r.u32()))
        return out


def _section(sid, payload):
    return bytes([sid]) + uleb(len(payload)) + payload
