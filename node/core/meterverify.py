# Checking, before a node runs it, that a module said to be metered really
# is metered the way node/core/metering.py meters.
#
# Why: a metered module imports metering.usegas, and whoever can call usegas
# with any value can pass a negative amount and refill its budget; whoever
# can leave a loop without a charge can spin forever.  The package signature
# says who packed the module, not that `aegis pack` did the metering, so the
# node checks the shape itself:
#   - exactly one `metering` import, usegas (i32) -> (), a function;
#   - usegas is only ever called directly, never exported, put in a table,
#     taken with ref.func or made the start function;
#   - every call to it takes one of the three arguments the pass emits,
#     each non-negative by construction: a constant >= 0, `x >>u k` with
#     1 <= k <= 31 (bulk ops), or the memory.grow charge
#     `select(delta * P, 0, delta <=u M - memory.size)` with P <= 32767 and
#     M at least the memory's declared maximum (so delta * P fits an i32);
#   - every function body and every loop body starts with a charge > 0,
#     so each call and each iteration pays.
# The size of each charge is the packer's (signed) business.
#
# Portable (MicroPython too).

from node.core import wasmcode as wc
from node.core.metering import _imports, _sections
from node.core.wasmcode import MeteringError, Reader

_I32_CONST = 0x41
_LOCAL_GET = 0x20
_LOCAL_TEE = 0x22
_SELECT = 0x1B
_I32_SHR_U = 0x76
_I32_MUL = 0x6C
_I32_SUB = 0x6B
_I32_LE_U = 0x4D
_MEMORY_SIZE = 0x3F
_GROW_SHAPE = (_LOCAL_TEE, _LOCAL_GET, _I32_CONST, _I32_MUL, _I32_CONST, _LOCAL_GET,
               _I32_CONST, _MEMORY_SIZE, _I32_SUB, _I32_LE_U, _SELECT)


class VerifyError(MeteringError):
    pass


def verify(wasm):
    """Raise VerifyError unless `wasm` is metered as described above."""
    b = bytes(wasm)
    try:
        _verify(b)
    except VerifyError:
        raise
    except MeteringError as e:
        raise VerifyError("metered module is malformed: %s" % e)
    except (IndexError, KeyError, UnicodeError, OverflowError) as e:
        raise VerifyError("metered module is malformed (%s: %s)" % (type(e).__name__, e))


def _verify(b):
    secs = _sections(b)
    types = []
    func_types = []
    gas = None
    n_imp = 0
    mem_max = None
    body = {}
    for sid, start, end in secs:
        body[sid] = (start, end)
    if 1 in body:
        r = Reader(b, *body[1])
        for _ in range(r.count()):
            if r.byte() != 0x60:
                raise VerifyError("unsupported type form")
            params = [r.valtype() for _ in range(r.count())]
            results = [r.valtype() for _ in range(r.count())]
            types.append((params, results))
    if 2 in body:
        for mod, nm, kind, raw in _imports(b, *body[2]):
            t = Reader(raw, 0)
            t.name()
            t.name()
            t.byte()
            if mod == "metering":
                if gas is not None or nm != "usegas" or kind != 0:
                    raise VerifyError("module imports metering.%s: only one "
                                      "metering.usegas function is allowed" % nm)
                ti = t.u32()
                if ti >= len(types) or types[ti] != ([0x7F], []):
                    raise VerifyError("metering.usegas must be (i32) -> ()")
                gas = n_imp
            if kind == 0:
                n_imp += 1
            elif kind == 2:
                mem_max = _max(t.limits(), mem_max)
    if gas is None:
        raise VerifyError("module is not metered (no metering.usegas import)")
    if 3 in body:
        r = Reader(b, *body[3])
        for _ in range(r.count()):
            func_types.append(r.u32())
    if 5 in body:
        r = Reader(b, *body[5])
        for _ in range(r.count()):
            mem_max = _max(r.limits(), mem_max)
    if mem_max is None:
        mem_max = 65536
    nt = len(types)

    def no_gas_ref(f):
        if f == gas:
            raise VerifyError("metering.usegas may only be called directly")
        return f
    if 6 in body:
        r = Reader(b, *body[6])
        for _ in range(r.count()):
            r.valtype()
            r.byte()
            wc.read_const_expr(r, nt, no_gas_ref)
    if 7 in body:
        r = Reader(b, *body[7])
        for _ in range(r.count()):
            r.name()
            kind = r.byte()
            idx = r.u32()
            if kind == 0:
                no_gas_ref(idx)
    if 8 in body:
        no_gas_ref(Reader(b, *body[8]).u32())
    if 9 in body:
        r = Reader(b, *body[9])
        for _ in range(r.count()):
            _elem(r, nt, no_gas_ref)
    if 10 in body:
        r = Reader(b, *body[10])
        n = r.count()
        if n != len(func_types):
            raise VerifyError("code section has %d bodies for %d functions"
                              % (n, len(func_types)))
        for i in range(n):
            size = r.u32()
            if size > r.end - r.pos:
                raise VerifyError("function body %d runs past its section" % i)
            _body(b, r.pos, r.pos + size, nt, gas, mem_max, i)
            r.pos += size


def _max(mx, cur):
    if mx is None:
        mx = 65536
    return mx if cur is None else max(mx, cur)


def _elem(r, nt, check):
    flag = r.u32()
    if flag > 7:
        raise VerifyError("bad element segment flag %d" % flag)
    if not flag & 1:
        if flag & 2:
            r.u32()
        wc.read_const_expr(r, nt, check)
    if flag & 3:
        r.byte()
    for _ in range(r.count()):
        if flag & 4:
            wc.read_const_expr(r, nt, check)
        else:
            check(r.u32())


def _const(b, pos):
    """Value of the i32.const whose opcode is at b[pos]."""
    return Reader(b, pos + 1).sleb(32)


def _body(b, start, end, nt, gas, mem_max, fi):
    r = Reader(b, start, end)
    for _ in range(r.count()):
        r.u32()
        r.valtype()
    hist = []            # (op, start offset, local/label arg) of recent instructions
    want_charge = 0      # 2: expect i32.const N > 0 next, 1: expect call usegas
    where = "function %d entry" % fi
    want_charge = 2
    while r.pos < end:
        ipos = r.pos
        op, arg, _ = wc.read_instr(r, nt)
        if want_charge == 2:
            if op != _I32_CONST or _const(b, ipos) <= 0:
                raise VerifyError("%s has no fuel charge" % where)
            want_charge = 1
        elif want_charge == 1:
            if op != wc.OP_CALL or arg != gas:
                raise VerifyError("%s has no fuel charge" % where)
            want_charge = 0
        if op == wc.OP_REF_FUNC and arg == gas:
            raise VerifyError("metering.usegas may only be called directly")
        if op == wc.OP_CALL and arg == gas:
            _check_arg(b, hist, mem_max, fi)
        elif op == wc.OP_LOOP:
            want_charge = 2
            where = "a loop in function %d" % fi
        if op in (_LOCAL_GET, _LOCAL_TEE):
            arg = Reader(b, ipos + 1).u32()
        hist.append((op, ipos, arg))
        if len(hist) > 12:
            del hist[0]
        if op == wc.OP_END and r.pos == end:
            return
    raise VerifyError("function %d has no end" % fi)


def _check_arg(b, hist, mem_max, fi):
    bad = VerifyError("function %d calls metering.usegas with an argument "
                      "that may be negative" % fi)
    if not hist:
        raise bad
    op, pos, _ = hist[-1]
    if op == _I32_CONST:
        if _const(b, pos) < 0:
            raise bad
        return
    if op == _I32_SHR_U:
        if len(hist) < 2 or hist[-2][0] != _I32_CONST or not 1 <= _const(b, hist[-2][1]) <= 31:
            raise bad
        return
    if op == _SELECT and len(hist) >= len(_GROW_SHAPE):
        seq = hist[-len(_GROW_SHAPE):]
        if tuple(x[0] for x in seq) != _GROW_SHAPE:
            raise bad
        t = seq[0][2]
        if seq[1][2] != t or seq[5][2] != t:
            raise bad
        page_cost = _const(b, seq[2][1])
        zero = _const(b, seq[4][1])
        m = _const(b, seq[6][1])
        if not 0 <= page_cost <= 32767 or zero != 0 or not mem_max <= m <= 65536:
            raise bad
        return
    raise bad
