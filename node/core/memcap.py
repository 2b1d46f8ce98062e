# Memory limit: give a module's memory a declared maximum of at most
# `limits.memory_pages`, so that memory.grow past the limit fails (returns
# -1, as the wasm spec says for a grow beyond the maximum) instead of taking
# the node's memory.  wasm3 honours the declared maximum.
#
# `aegis pack` caps the module before metering it (the metering pass then
# prices memory.grow against the same maximum), and the node caps again
# whatever it loads, so a package packed by other means is bounded too.
#
# Portable (MicroPython too).
from node.core.metering import _sections
from node.core.wasmcode import MeteringError, Reader, uleb


class MemoryLimitError(MeteringError):
    pass


def cap_memory(wasm, pages):
    """`wasm` with every defined memory's maximum lowered to `pages`
    (bytes; unchanged when already within).  Raises MemoryLimitError when
    a memory's minimum is over the limit or it is shared."""
    b = bytes(wasm)
    _sections(b)            # refuses malformed / unsupported section layouts
    r = Reader(b, 8)
    while r.pos < r.end:
        head = r.pos
        sid = r.byte()
        size = r.u32()
        start, end = r.pos, r.pos + size
        r.pos = end
        if sid != 5:
            continue
        m = Reader(b, start, end)
        n = m.count()
        out = bytearray(uleb(n))
        changed = False
        for _ in range(n):
            flag = m.byte()
            if flag > 1:
                raise MemoryLimitError("shared or 64-bit memories are not supported")
            lo = m.u32()
            hi = m.u32() if flag else None
            if lo > pages:
                raise MemoryLimitError("module needs %d memory pages, its limit is %d"
                                       % (lo, pages))
            if hi is None or hi > pages:
                hi = pages
                changed = True
            out += b"\x01" + uleb(lo) + uleb(hi)
        if m.pos != end:
            raise MemoryLimitError("memory section has trailing bytes")
        if not changed:
            return b
        return b[:head] + b"\x05" + uleb(len(out)) + bytes(out) + b[end:]
    return b


def memory_max(wasm):
    """Declared maximum pages of the first defined memory (None: none)."""
    b = bytes(wasm)
    for sid, start, end in _sections(b):
        if sid == 5:
            r = Reader(b, start, end)
            if r.count():
                flag = r.byte()
                r.u32()
                return r.u32() if flag & 1 else None
    return None
