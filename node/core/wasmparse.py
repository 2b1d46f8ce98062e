# Just enough of the wasm binary format to check a module before running
# it: its imports (with signatures), exports and memory limits.  Input is
# hostile: every read is bounds-checked and every count limited.

SECTION_TYPE = 1
SECTION_IMPORT = 2
SECTION_FUNCTION = 3
SECTION_MEMORY = 5
SECTION_EXPORT = 7

KIND_FUNC = 0
KIND_TABLE = 1
KIND_MEMORY = 2
KIND_GLOBAL = 3

VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64",
            0x7B: "v128", 0x70: "funcref", 0x6F: "externref"}
_MAX_COUNT = 100000
# Section order rank (datacount 12 sits between elem 9 and code 10).
_ORDER = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10,
          12: 11, 10: 12, 11: 13}


class WasmError(ValueError):
    pass


class Reader:
    """Bounds-checked reads of wasm bytes b[pos:end]. Every failure raises
    `Error` (WasmError here; wasmcode.Reader raises MeteringError), never
    IndexError & co, so callers can tell "bad module" from "bug"."""
    Error = WasmError
    MAX_COUNT = _MAX_COUNT

    def __init__(self, b, pos=0, end=None):
        self.b = b
        self.pos = pos
        self.end = len(b) if end is None else end

    def byte(self):
        if self.pos >= self.end:
            raise self.Error("unexpected end of wasm data at %d" % self.pos)
        v = self.b[self.pos]
        self.pos += 1
        return v

    def u32(self):
        result = 0
        shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 28:
                raise self.Error("LEB128 u32 too long at %d" % self.pos)
        if result > 0xFFFFFFFF:
            raise self.Error("LEB128 u32 out of range at %d" % self.pos)
        return result

    def count(self):
        n = self.u32()
        # Every entry takes at least one byte: a larger count is a lie.
        if n > self.MAX_COUNT or n > self.end - self.pos:
            raise self.Error("count %d larger than its section" % n)
        return n

    def bytes(self, n):
        if n > self.end - self.pos:
            raise self.Error("unexpected end of wasm data at %d" % self.pos)
        v = bytes(self.b[self.pos:self.pos + n])
        self.pos += n
        return v

    def name(self):
        raw = self.bytes(self.u32())
        try:
            return raw.decode()
        except UnicodeError:
            raise self.Error("name is not valid UTF-8")

    def limits(self):
        flag = self.byte()
        if flag not in (0, 1, 2, 3):
            raise WasmError("bad limits flag %d" % flag)
        lo = self.u32()
        hi = self.u32() if flag & 1 else None
        return lo, hi


class ModuleInfo:
    def __init__(self):
        self.types = []     # [(params tuple, results tuple)]
        self.imports = []   # [(module, name, kind, detail)]
        self.exports = {}   # name -> (kind, index)
        self.memory = None  # (min, max or None) of the defined memory
        self.func_types = []  # type index of each defined function
        self.n_func_imports = 0

    def func_sig(self, func_index):
        """(params, results) of a function by its index space position."""
        if func_index < self.n_func_imports:
            k = 0
            for _, _, kind, detail in self.imports:
                if kind == KIND_FUNC:
                    if k == func_index:
                        return self.types[detail]
                    k += 1
        i = func_index - self.n_func_imports
        if 0 <= i < len(self.func_types):
            return self.types[self.func_types[i]]
        raise WasmError("function index %d out of range" % func_index)


def _valtype(r):
    t = r.byte()
    if t not in VALTYPES:
        raise WasmError("unknown value type 0x%02x" % t)
    return VALTYPES[t]


def parse(b):
    """Parse wasm bytes into a ModuleInfo, or raise WasmError."""
    if len(b) < 8 or bytes(b[:4]) != b"\x00asm":
        raise WasmError("not a wasm module (bad magic)")
    if bytes(b[4:8]) != b"\x01\x00\x00\x00":
        raise WasmError("unsupported wasm version")
    info = ModuleInfo()
    r = Reader(b, 8)
    last = 0
    while r.pos < r.end:
        sid = r.byte()
        size = r.u32()
        if size > r.end - r.pos:
            raise WasmError("section %d runs past the end" % sid)
        s = Reader(b, r.pos, r.pos + size)
        r.pos += size
        if sid == 0:
            continue  # custom section
        rank = _ORDER.get(sid)
        if rank is None:
            raise WasmError("unknown section id %d" % sid)
        if rank <= last:
            raise WasmError("section %d duplicated or out of order" % sid)
        last = rank
        if sid == SECTION_TYPE:
            for _ in range(s.count()):
                if s.byte() != 0x60:
                    raise WasmError("bad function type form")
                params = tuple(_valtype(s) for _ in range(s.count()))
                results = tuple(_valtype(s) for _ in range(s.count()))
                info.types.append((params, results))
        elif sid == SECTION_IMPORT:
            for _ in range(s.count()):
                mod = s.name()
                nm = s.name()
                kind = s.byte()
                if kind == KIND_FUNC:
                    ti = s.u32()
                    if ti >= len(info.types):
                        raise WasmError("import %s.%s has a bad type index" % (mod, nm))
                    info.n_func_imports += 1
                    detail = ti
                elif kind == KIND_TABLE:
                    s.byte()
                    detail = s.limits()
                elif kind == KIND_MEMORY:
                    detail = s.limits()
                elif kind == KIND_GLOBAL:
                    detail = (_valtype(s), s.byte())
                else:
                    raise WasmError("bad import kind %d" % kind)
                info.imports.append((mod, nm, kind, detail))
        elif sid == SECTION_FUNCTION:
            for _ in range(s.count()):
                ti = s.u32()
                if ti >= len(info.types):
                    raise WasmError("function has a bad type index")
                info.func_types.append(ti)
        elif sid == SECTION_MEMORY:
            n = s.count()
            if n > 1:
                raise WasmError("more than one memory")
            if n:
                info.memory = s.limits()
        elif sid == SECTION_EXPORT:
            for _ in range(s.count()):
                nm = s.name()
                kind = s.byte()
                idx = s.u32()
                if nm in info.exports:
                    raise WasmError("duplicate export %r" % nm)
                info.exports[nm] = (kind, idx)
        else:
            continue
        if s.pos != s.end:
            raise WasmError("section %d has trailing bytes" % sid)
    return info
