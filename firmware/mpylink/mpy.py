""".mpy v6 native-module files: the writer the linker uses and a reader
that checks one structurally (tests, `python -m mpylink check`).

Layout (py/persistentcode.c): 'M', 6, features = arch << 2 | 3 (| 0x40
when an arch-flags uint follows), small-int bits; the qstr table (slot 0
is the file name; a non-static qstr is len << 1, bytes, NUL); an empty
object table; one viper code block: (len << 3) | 2, the machine code,
scope flags (0x10 relocations, 0x40 bss), the bss size, then the
relocation stream, which ends with 0xff.
"""
ARCH_NUMBERS = {"x86": 1, "x64": 2, "armv6": 3, "armv6m": 4, "armv7m": 5, "armv7em": 6,
                "armv7emsp": 7, "armv7emdp": 8, "xtensa": 9, "xtensawin": 10, "rv32imc": 11}
FLAG_RELOC, FLAG_RODATA, FLAG_BSS = 0x10, 0x20, 0x40
KIND_VIPER = 2
SMALL_INT_BITS = 31
DEST = {"text": 0, "rodata": 1, "bss": 2}


class MpyError(Exception):
    pass


def uint(n):
    out = [n & 0x7f]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7f))
        n >>= 7
    return bytes(reversed(out))


def reloc_stream(relocs):
    """relocs: {word index: "text" | "bss" | op}.  Runs of text/bss words
    share one entry with a count."""
    out = bytearray()
    items = sorted(relocs.items())
    nxt = None
    i = 0
    while i < len(items):
        w, k = items[i]
        n = 1
        if k in DEST:
            while i + n < len(items) and items[i + n] == (w + n, k):
                n += 1
            op = DEST[k] * 2 + (n > 1)
        else:
            op = k
        if not 6 <= op < 0x7f and k not in DEST:
            raise MpyError("bad relocation op %r" % (k,))
        if w != nxt:
            out.append(op << 1 | 1)
            out += uint(w << 1)          # even: a text word
        else:
            out.append(op << 1)
        if k in DEST and n > 1:
            out += uint(n)
        nxt = w + n
        i += n
    out.append(0xff)
    return bytes(out)


def write(arch, qstrs, text, bss_size, relocs):
    feat = arch.number << 2 | 3
    out = bytearray(b"M\x06")
    out.append(feat | (0x40 if arch.flags is not None else 0))
    out.append(SMALL_INT_BITS)
    if arch.flags is not None:
        out += uint(arch.flags)
    out += uint(len(qstrs)) + uint(0)
    for q in qstrs:
        b = q.encode()
        out += uint(len(b) << 1) + b + b"\0"
    out += uint(len(text) << 3 | KIND_VIPER) + text
    flags = (FLAG_RELOC if relocs else 0) | (FLAG_BSS if bss_size else 0)
    out += uint(flags)
    if bss_size:
        out += uint(bss_size)
    if relocs:
        out += reloc_stream(relocs)
    return bytes(out)


class _R:
    def __init__(self, b):
        self.b, self.p = b, 0

    def byte(self):
        if self.p >= len(self.b):
            raise MpyError("truncated at byte %d" % self.p)
        self.p += 1
        return self.b[self.p - 1]

    def uint(self):
        n = 0
        while True:
            c = self.byte()
            n = (n << 7) | (c & 0x7f)
            if not c & 0x80:
                return n

    def take(self, n):
        if self.p + n > len(self.b):
            raise MpyError("truncated: %d bytes wanted at %d" % (n, self.p))
        self.p += n
        return self.b[self.p - n:self.p]


def read(blob, word=None):
    """Parse and check a native .mpy; returns a dict describing it.  Every
    relocation must fall inside the text block, word aligned."""
    r = _R(blob)
    if r.take(2) != b"M\x06":
        raise MpyError("not a .mpy v6 file")
    feat = r.byte()
    small = r.byte()
    if feat & 3 != 3:
        raise MpyError("native sub-version %d, the loader needs 3" % (feat & 3))
    num = (feat >> 2) & 0x2f
    arch = {v: k for k, v in ARCH_NUMBERS.items()}.get(num)
    if arch is None:
        raise MpyError("unknown arch number %d" % num)
    word = word or (8 if arch == "x64" else 4)
    arch_flags = r.uint() if feat & 0x40 else None
    nq, no = r.uint(), r.uint()
    qstrs = []
    for _ in range(nq):
        n = r.uint()
        if n & 1:
            qstrs.append(n >> 1)
        else:
            qstrs.append(r.take(n >> 1).decode())
            if r.byte() != 0:
                raise MpyError("qstr not NUL-terminated")
    if no:
        raise MpyError("a native module has no object table, found %d objects" % no)
    kl = r.uint()
    if kl & 3 != KIND_VIPER or kl & 4:
        raise MpyError("expected one viper code block without children")
    text_len = kl >> 3
    r.take(text_len)
    flags = r.uint()
    if flags & FLAG_RODATA:
        raise MpyError("separate rodata is not produced by mpylink")
    bss = r.uint() if flags & FLAG_BSS else 0
    relocs = {}
    if flags & FLAG_RELOC:
        addr = None
        while True:
            op = r.byte()
            if op == 0xff:
                break
            if op & 1:
                a = r.uint()
                if a & 1:
                    raise MpyError("relocation into rodata, which this module has none of")
                addr = a >> 1
            if addr is None:
                raise MpyError("relocation before any address")
            op >>= 1
            n = 1
            if op <= 5:
                if op & 1:
                    n = r.uint()
                kind = ("text", "rodata", "bss")[op >> 1]
                if kind == "rodata":
                    raise MpyError("relocation against rodata, which this module has none of")
                if kind == "bss" and not bss:
                    raise MpyError("relocation against bss, but bss is empty")
            else:
                kind = op
            for _ in range(n):
                if (addr + 1) * word > text_len:
                    raise MpyError("relocation at word %d outside the %d-byte text" % (addr, text_len))
                relocs[addr] = kind
                addr += 1
    if r.p != len(blob):
        raise MpyError("%d trailing bytes" % (len(blob) - r.p))
    return {"arch": arch, "arch_flags": arch_flags, "small_int_bits": small, "qstrs": qstrs,
            "text": text_len, "bss": bss, "relocs": relocs, "size": len(blob)}
