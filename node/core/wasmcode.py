# The wasm binary reader and instruction decoder used by the metering pass
# (metering.py).  Kept apart from wasmparse.py because that one only needs
# the module header sections, while metering has to walk every instruction.
# The input is hostile: every read is bounds-checked, every count limited,
# and every failure is a MeteringError (never IndexError & co), so callers
# can tell "bad module" from "bug".  Portable: runs on MicroPython too.

from node.core import wasmparse

MAX_COUNT = 100000      # entries in one vector (types, imports, functions...)
MAX_DEPTH = 10000       # nesting of blocks inside one function
MAX_LOCALS = 50000      # declared locals of one function (wasm3 has its own cap)

# Block type / value type bytes of the MVP, reference types and SIMD (the
# last is accepted as a *type* only so that a clear error comes from the
# opcode instead).
VALTYPES = (0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F)
BLOCK_EMPTY = 0x40

# Control opcodes the metering pass looks at.
OP_UNREACHABLE = 0x00
OP_BLOCK = 0x02
OP_LOOP = 0x03
OP_IF = 0x04
OP_ELSE = 0x05
OP_END = 0x0B
OP_BR = 0x0C
OP_BR_IF = 0x0D
OP_BR_TABLE = 0x0E
OP_RETURN = 0x0F
OP_CALL = 0x10
OP_CALL_INDIRECT = 0x11
OP_REF_FUNC = 0xD2
OP_MEMORY_GROW = 0x40
# Not an opcode: the cost key of a `call` to an imported (host) function.
OP_CALL_HOST = 0x10010
# 0xFC-prefixed opcodes are reported as 0xFC00 | sub-opcode.
OP_MEMORY_INIT = 0xFC08
OP_MEMORY_COPY = 0xFC0A
OP_MEMORY_FILL = 0xFC0B
OP_TABLE_INIT = 0xFC0C
OP_TABLE_COPY = 0xFC0E
OP_TABLE_GROW = 0xFC0F
OP_TABLE_FILL = 0xFC11

# Immediate shapes of the one-byte opcodes (anything absent is refused).
_NONE, _BT, _U32, _U32X2, _BRT, _MEMARG, _BYTE, _S32, _S64, _F4, _F8, _SELT = range(12)
_IMM = {0x00: _NONE, 0x01: _NONE, 0x02: _BT, 0x03: _BT, 0x04: _BT,
        0x05: _NONE, 0x0B: _NONE, 0x0C: _U32, 0x0D: _U32, 0x0E: _BRT,
        0x0F: _NONE, 0x10: _U32, 0x11: _U32X2, 0x1A: _NONE, 0x1B: _NONE,
        0x1C: _SELT, 0x20: _U32, 0x21: _U32, 0x22: _U32, 0x23: _U32,
        0x24: _U32, 0x25: _U32, 0x26: _U32, 0x3F: _BYTE, 0x40: _BYTE,
        0x41: _S32, 0x42: _S64, 0x43: _F4, 0x44: _F8, 0xD0: _BYTE,
        0xD1: _NONE, 0xD2: _U32}
for _op in range(0x28, 0x3F):
    _IMM[_op] = _MEMARG
for _op in range(0x45, 0xC5):   # numeric ops, incl. sign-extension 0xC0-0xC4
    _IMM[_op] = _NONE
# 0xFC sub-opcodes: 0-7 saturating truncation, 8-17 bulk memory / tables.
_FC_IMM = {0: _NONE, 1: _NONE, 2: _NONE, 3: _NONE, 4: _NONE, 5: _NONE,
           6: _NONE, 7: _NONE, 8: _U32X2, 9: _U32, 10: _U32X2, 11: _U32,
           12: _U32X2, 13: _U32, 14: _U32X2, 15: _U32, 16: _U32, 17: _U32}
# Refused with a name, so the error says which feature is unsupported.
_REFUSED = {0xFD: "SIMD", 0xFE: "threads/atomics", 0x06: "exceptions",
            0x07: "exceptions", 0x08: "exceptions", 0x09: "exceptions",
            0x0A: "exceptions", 0x18: "exceptions", 0x19: "exceptions",
            0x1F: "exceptions", 0x12: "tail calls", 0x13: "tail calls",
            0x14: "typed function references", 0x15: "typed function references",
            0xFB: "GC"}


class MeteringError(ValueError):
    pass


class Reader(wasmparse.Reader):
    """wasmparse's bounds-checked reader, raising MeteringError, plus the
    signed LEB128 that instruction immediates need."""
    Error = MeteringError
    MAX_COUNT = MAX_COUNT

    def sleb(self, bits):
        """A signed LEB128 of at most `bits` bits; returns its value."""
        result = 0
        shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= ((bits + 6) // 7) * 7:
                raise MeteringError("LEB128 s%d too long at %d" % (bits, self.pos))
        if b & 0x40:
            result -= 1 << shift
        return result

    def limits(self):
        # Unlike wasmparse's, returns only the maximum (the metering pass
        # needs no minimum).
        flag = self.byte()
        if flag > 3:
            raise MeteringError("unsupported limits flag %d" % flag)
        self.u32()
        return self.u32() if flag & 1 else None

    def valtype(self):
        t = self.byte()
        if t not in VALTYPES:
            raise MeteringError("unknown value type 0x%02x" % t)
        return t


def uleb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def read_blocktype(r, n_types):
    """Skip a block type: 0x40, a value type, or an s33 type index
    (multi-value blocks with params and results)."""
    b = r.b[r.pos] if r.pos < r.end else None
    if b is None:
        raise MeteringError("unexpected end of wasm data at %d" % r.pos)
    if b == BLOCK_EMPTY or b in VALTYPES:
        r.pos += 1
        return
    idx = r.sleb(33)
    if idx < 0 or idx >= n_types:
        raise MeteringError("block type index %d out of range" % idx)


def read_instr(r, n_types):
    """Decode one instruction at r.pos.  Returns (op, arg, arg_pos): op is
    the opcode (0xFC00|sub for the 0xFC prefix); arg is the function index
    of call/ref.func or the label of br/br_if (else None), and arg_pos the
    byte offset where that index starts, so the caller can re-encode it."""
    op = r.byte()
    shape = _IMM.get(op)
    if shape is None:
        if op == 0xFC:
            sub = r.u32()
            shape = _FC_IMM.get(sub)
            if shape is None:
                raise MeteringError("unknown opcode 0xfc %d" % sub)
            op = 0xFC00 | sub
        elif op in _REFUSED:
            raise MeteringError("opcode 0x%02x (%s) is not supported by the "
                                "metering pass" % (op, _REFUSED[op]))
        else:
            raise MeteringError("unknown opcode 0x%02x at %d" % (op, r.pos - 1))
    arg = None
    arg_pos = r.pos
    if shape == _NONE:
        pass
    elif shape == _U32:
        arg = r.u32()
    elif shape == _BT:
        read_blocktype(r, n_types)
    elif shape == _U32X2:
        arg = r.u32()
        r.u32()
    elif shape == _BRT:
        for _ in range(r.count()):
            r.u32()
        r.u32()
    elif shape == _MEMARG:
        align = r.u32()
        if align & 0x40:    # multi-memory: a memory index follows
            r.u32()
        r.u32()
    elif shape == _BYTE:
        r.byte()
    elif shape == _S32:
        r.sleb(32)
    elif shape == _S64:
        r.sleb(64)
    elif shape == _F4:
        r.bytes(4)
    elif shape == _F8:
        r.bytes(8)
    elif shape == _SELT:
        for _ in range(r.count()):
            r.valtype()
    return op, arg, arg_pos


# Opcodes allowed in constant expressions (global inits, segment offsets,
# element items): MVP, reference types and extended-const arithmetic.
_CONST_OPS = (0x41, 0x42, 0x43, 0x44, 0x23, 0xD0, OP_REF_FUNC,
              0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E)


def read_const_expr(r, n_types, remap):
    """Read a constant expression up to its `end`; returns its bytes with
    ref.func indices passed through remap(index)."""
    out = bytearray()
    start = first = r.pos
    while True:
        if r.pos - first > 65536:
            raise MeteringError("constant expression too long")
        op, arg, arg_pos = read_instr(r, n_types)
        if op == OP_END:
            out += r.b[start:r.pos]
            return bytes(out)
        if op not in _CONST_OPS:
            raise MeteringError("opcode 0x%02x not allowed in a constant "
                                "expression" % op)
        if op == OP_REF_FUNC:
            out += r.b[start:arg_pos]
            out += uleb(remap(arg))
            start = r.pos


# ---------------------------------------------------------------- code
_DYN_BULK = (OP_MEMORY_INIT, OP_MEMORY_COPY, OP_MEMORY_FILL, OP_TABLE_INIT,
             OP_TABLE_COPY, OP_TABLE_FILL, OP_TABLE_GROW)


def _charge(amount, gas_idx):
    """`i32.const n; call usegas`, split so each n is a positive i32."""
    out = bytearray()
    while amount > 0:
        n = min(amount, 0x7FFFFFFF)
        out += b"\x41" + sleb(n) + b"\x10" + uleb(gas_idx)
        amount -= n
    return bytes(out)


def rewrite_code(rw, r):
    """Rewrite the code section read by r.  rw is metering's _Rewriter:
    it gives cost(op), remap(f), the function types and the usegas index."""
    n = r.count()
    if n != len(rw.func_types):
        raise MeteringError("code section has %d bodies for %d functions"
                            % (n, len(rw.func_types)))
    out = bytearray(uleb(n))
    for i in range(n):
        size = r.u32()
        if size > r.end - r.pos:
            raise MeteringError("function body %d runs past its section" % i)
        body = _rewrite_body(rw, r.b, r.pos, r.pos + size,
                             rw.n_params[rw.func_types[i]])
        out += uleb(len(body)) + body
        r.pos += size
    return out


def _rewrite_body(rw, b, start, end, n_params):
    """One function body with a charge at function entry and at the start
    of every loop body, and nowhere else (but the dynamic charges of
    memory.grow and bulk operations, inline just before them).

    Why that is enough: without a loop, code runs forward only, so each
    instruction of a region -- the function body or a loop body, not
    counting the loops nested in it -- runs at most once per entry into the
    region; every back edge re-enters a loop body, and every call enters a
    function body, each paying again.  The charge of a region is the sum
    of the costs of all its instructions (both arms of an if, code after a
    br_if exit, dead code), paid before any of them runs: metering errs
    toward charging too much, never too little, and a call into wasm3's
    usegas happens once per call and once per loop iteration."""
    r = Reader(b, start, end)
    groups = r.count()
    gpos = r.pos
    n_locals = 0
    for _ in range(groups):
        n_locals += r.u32()
        r.valtype()
        if n_locals > MAX_LOCALS:
            raise MeteringError("function declares more than %d locals" % MAX_LOCALS)
    locals_raw = b[gpos:r.pos]
    tmp = n_params + n_locals       # index of the scratch local, if needed
    gas = rw.gas_idx
    n_types = len(rw.types)
    chunks = []
    stack = []                      # open block/loop/if(/else) opcodes
    # Charge regions: the function body and each loop body, each without
    # the loops nested in it.  [chunk index of its charge, cost so far].
    regions = [[0, 0]]
    chunks.append(b"")
    uses_tmp = False
    while True:
        ipos = r.pos
        op, arg, arg_pos = read_instr(r, n_types)
        key = op
        if op == OP_CALL or op == OP_REF_FUNC:
            if op == OP_CALL and arg < rw.n_imp:
                key = OP_CALL_HOST
            chunk = b[ipos:arg_pos] + uleb(rw.remap(arg))
        else:
            chunk = b[ipos:r.pos]
        regions[-1][1] += rw.host_cost(arg) if key == OP_CALL_HOST else rw.cost(key)
        if op in _DYN_BULK:
            # len is on top of the stack: keep it, charge len >> shift.
            uses_tmp = True
            t = uleb(tmp)
            chunks.append(b"\x22" + t + b"\x20" + t + b"\x41" + sleb(rw.bulk_shift)
                          + b"\x76\x10" + uleb(gas))
        elif op == OP_MEMORY_GROW:
            # delta on top.  Charge delta * page_cost when the grow can
            # succeed (delta <= max - memory.size), else nothing: a refused
            # grow is cheap and must keep returning -1, not run out of gas.
            # delta <= 65536 there, so the product fits a positive i32.
            uses_tmp = True
            t = uleb(tmp)
            chunks.append(b"\x22" + t + b"\x20" + t + b"\x41" + sleb(rw.page_cost)
                          + b"\x6c\x41\x00\x20" + t + b"\x41" + sleb(rw.mem_max)
                          + b"\x3f\x00\x6b\x4d\x1b\x10" + uleb(gas))
        chunks.append(chunk)
        if op == OP_BR or op == OP_BR_IF:
            if arg > len(stack):
                raise MeteringError("branch to label %d at depth %d" % (arg, len(stack)))
        if op == OP_BLOCK or op == OP_LOOP or op == OP_IF:
            stack.append(op)
            if len(stack) > MAX_DEPTH:
                raise MeteringError("blocks nested deeper than %d" % MAX_DEPTH)
            if op == OP_LOOP:
                regions.append([len(chunks), 0])
                chunks.append(b"")
        elif op == OP_ELSE:
            if not stack or stack[-1] != OP_IF:
                raise MeteringError("else without if")
            stack[-1] = OP_ELSE
        elif op == OP_END:
            if not stack or stack[-1] == OP_LOOP:
                # A region is complete: its charge, paid on entering it,
                # covers everything in it (the charge's own call included).
                seg, cost = regions.pop()
                chunks[seg] = _charge(max(cost + rw.block_cost, 1), gas)
            if not stack:
                break               # the function's own end
            stack.pop()
    if r.pos != end:
        raise MeteringError("bytes after the end of a function body")
    if uses_tmp:
        if tmp >= 0xFFFFFFFF:
            raise MeteringError("no room for a scratch local")
        head = uleb(groups + 1) + locals_raw + b"\x01\x7f"
    else:
        head = uleb(groups) + locals_raw
    return head + b"".join(chunks)
