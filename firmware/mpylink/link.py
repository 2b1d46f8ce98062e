"""Link ELF relocatable objects into a MicroPython .mpy v6 native module.

The module is one viper code block: text = [the section holding mpy_init,
which must start at offset 0 (the loader calls text+0)] + the rest of the
code + read-only data + the GOT; bss is allocated apart by the loader.
Only sections reachable from mpy_init are kept.  Writable initialised data
cannot be held (the loader has nowhere to put it), nor can a PC-relative
reference to bss: both are refused with the symbol and file named.
"""
import struct

from . import mpy
from .arch import ARCHS
from .elf import Archive, LinkError, Object

__all__ = ["link", "LinkError"]

ENTRY = "mpy_init"
# Loader values (py/persistentcode.c mp_native_relocate).
SPECIAL = {"mp_native_qstr_table": 6, "mp_native_obj_table": 7, "mp_fun_table": 8}
# Objects that static data takes the address of, found at these indexes of
# mp_fun_table (py/nativeglue.h: type_type is entry 73).  firmware/wasm3mod.c
# checks the indexes it uses with _Static_assert against the headers built with.
FUN_TABLE_OBJS = ["mp_type_type", "mp_type_str", "mp_type_list", "mp_type_dict",
                  "mp_type_fun_builtin_0", "mp_type_fun_builtin_1", "mp_type_fun_builtin_2",
                  "mp_type_fun_builtin_3", "mp_type_fun_builtin_var", "mp_type_Exception",
                  "mp_stream_read_obj", "mp_stream_readinto_obj",
                  "mp_stream_unbuffered_readline_obj", "mp_stream_write_obj"]
FUN_TABLE_FIRST = 73
MAX_ALIGN = 16          # what the loader's allocation guarantees at least


def _align(n, a):
    return (n + a - 1) & ~(a - 1)


class _Ctx:
    def __init__(self, arch):
        self.arch = arch
        self.word = arch.word
        self.text = bytearray()
        self.relocs = {}        # word index -> "text" | "bss" | op number
        self.got = {}           # target -> offset in text
        self.got_base = None
        self.hi20 = {}

    def put_word(self, P, v):
        struct.pack_into("<Q" if self.word == 8 else "<I", self.text, P,
                         v & ((1 << (8 * self.word)) - 1))

    def word_reloc(self, P, kind):
        self.relocs[P // self.word] = kind

    def got_entry(self, T):
        return self.got[T]


class _Linker:
    def __init__(self, arch, obj_paths, lib_paths):
        self.arch = ARCHS[arch]
        self.objects = []
        for p in obj_paths:
            with open(p, "rb") as f:
                self.objects.append(Object(p.rsplit("/", 1)[-1], f.read()))
        for o in self.objects:
            if o.machine != self.arch.machine:
                raise LinkError("%s is %s, not %s" % (o.name, o.machine, self.arch.machine))
        self.archives = [Archive(p) for p in lib_paths]
        self.globals = {}
        self.from_archives = []
        for o in self.objects:
            self._add_globals(o)

    def _add_globals(self, o):
        for s in o.globals():
            old = self.globals.get(s.name)
            if old is not None and old.bind == "STB_GLOBAL" and s.bind == "STB_GLOBAL":
                raise LinkError("symbol %s defined twice: %s and %s" % (s.name, old.obj.name, o.name))
            if old is None or old.bind == "STB_WEAK":
                self.globals[s.name] = s

    def definition(self, sym):
        """The defining Symbol, or None for a loader value; loads archive
        members on demand.  Raises for an undefined symbol."""
        if sym.section is not None:
            return sym
        if not sym.name:
            return None         # the null symbol: hints such as R_RISCV_RELAX
        d = self.globals.get(sym.name)
        if d is not None:
            return d
        if sym.name in SPECIAL or sym.name in FUN_TABLE_OBJS or sym.name == "_GLOBAL_OFFSET_TABLE_":
            return None
        for a in self.archives:
            m = a.member_for(sym.name)
            if m is not None:
                self._add_globals(m)
                self.from_archives.append(m)
                return self.globals[sym.name]
        raise _Undefined(sym)

    def mark_live(self):
        entry = self.globals.get(ENTRY)
        if entry is None:
            raise LinkError("no %s function: the loader starts a native module there" % ENTRY)
        undefined = {}
        work = [entry.section]
        entry.section.live = True
        while work:
            sec = work.pop()
            for r in sec.relocs:
                try:
                    d = self.definition(r.sym)
                except _Undefined as u:
                    undefined.setdefault(u.sym.name, set()).add(sec.obj.name)
                    continue
                if d is not None and d.section is not None and not d.section.live:
                    d.section.live = True
                    work.append(d.section)
        if undefined:
            raise LinkError("undefined symbols: " + "; ".join(
                "%s (used by %s)" % (n, ", ".join(sorted(f))) for n, f in sorted(undefined.items())))
        self.live = [s for o in self.objects + self.from_archives for s in o.sections.values()
                     if s.live]
        self.entry = entry

    def check_live(self):
        for s in self.live:
            if s.kind == "data" and s.size:
                names = [y.name for y in s.obj.symbols if y.section is s and y.name != s.name]
                raise LinkError("%s: writable initialised data in %s (%s): a native module "
                                "cannot hold it; make it const, or zero-initialised (bss)"
                                % (s.obj.name, s.name, ", ".join(names) or "anonymous"))
            if s.kind == "tls":
                raise LinkError("%s: thread-local data in %s is not supported" % (s.obj.name, s.name))

    def target(self, ctx, sym):
        d = self.definition(sym)
        if d is None:
            if not sym.name:
                return ("none", 0)
            if sym.name == "_GLOBAL_OFFSET_TABLE_":
                return ("text", ctx.got_base)
            if sym.name in SPECIAL:
                return ("op", SPECIAL[sym.name])
            return ("op", 9 + FUN_TABLE_FIRST + FUN_TABLE_OBJS.index(sym.name))
        if d.section is None:
            raise LinkError("absolute symbol %s is not supported" % d.name)
        return ("bss" if d.section.kind == "bss" else "text", d.section.addr + d.value)

    def layout(self, ctx):
        text = [self.entry.section] + [s for s in self.live if s.kind == "text"
                                       and s is not self.entry.section]
        ro = [s for s in self.live if s.kind in ("rodata", "data")]
        bss = [s for s in self.live if s.kind == "bss"]
        if self.entry.value & ~1:
            raise LinkError("%s does not start its section (build with -ffunction-sections)" % ENTRY)
        pos = 0
        for s in text + ro:
            if s.align > MAX_ALIGN:
                raise LinkError("%s: section %s wants %d-byte alignment (max %d)"
                                % (s.obj.name, s.name, s.align, MAX_ALIGN))
            pos = _align(pos, s.align)
            s.addr = pos
            ctx.text[len(ctx.text):] = bytes(pos - len(ctx.text)) + bytes(s.data)
            pos += s.size
        self.code_size = sum(s.size for s in text)
        self.rodata_size = sum(s.size for s in ro)
        bpos = 0
        for s in bss:
            bpos = _align(bpos, s.align)
            s.addr = bpos
            bpos += s.size
        self.bss_size = _align(bpos, ctx.word) if bpos else 0
        # The GOT: one word per symbol reached through a GOT relocation.
        ctx.got_base = _align(len(ctx.text), ctx.word)
        ctx.text += bytes(ctx.got_base - len(ctx.text))
        targets = []
        for s in text + ro:
            for r in s.relocs:
                if r.type in self.arch.GOT_TYPES:
                    T = self.target(ctx, r.sym)
                    if T not in targets:
                        targets.append(T)
        if self.bss_size and ("bss", 0) not in targets:
            # A pointer to the head of bss keeps the loader's block alive for
            # the GC on ports that do not track it themselves.
            targets.append(("bss", 0))
        for T in targets:
            P = len(ctx.text)
            ctx.text += bytes(ctx.word)
            ctx.got[T] = P
            if T[0] == "op":
                ctx.word_reloc(P, T[1])
            else:
                ctx.put_word(P, T[1])
                ctx.word_reloc(P, T[0])
        self.got_entries = len(targets)
        return text + ro

    def apply(self, ctx, secs):
        later = []
        for s in secs:
            for r in s.relocs:
                if self.arch.name == "rv32imc" and r.type in (24, 25):
                    later.append((s, r))
                    continue
                self.arch.apply(ctx, s, r, s.addr + r.offset, self.target(ctx, r.sym))
        for s, r in later:
            self.arch.apply(ctx, s, r, s.addr + r.offset, None)


class _Undefined(Exception):
    def __init__(self, sym):
        self.sym = sym


def link(arch, obj_paths, lib_paths, qstrs, out_path, module_name="module.mpy"):
    """Link; write out_path; return a report dict (sizes, counts)."""
    if arch not in ARCHS:
        raise LinkError("unknown arch %r (known: %s)" % (arch, ", ".join(ARCHS)))
    lk = _Linker(arch, obj_paths, lib_paths)
    lk.mark_live()
    lk.check_live()
    ctx = _Ctx(lk.arch)
    secs = lk.layout(ctx)
    lk.apply(ctx, secs)
    blob = mpy.write(lk.arch, [module_name] + list(qstrs), bytes(ctx.text), lk.bss_size, ctx.relocs)
    with open(out_path, "wb") as f:
        f.write(blob)
    funcs = {}
    for sec in secs:
        for sym in sec.obj.symbols:
            if sym.section is sec and sym.type == "STT_FUNC" and sym.name:
                funcs.setdefault("%s:%s" % (sec.obj.name, sym.name), sec.addr + (sym.value & ~1))
    return {"arch": arch, "text": len(ctx.text), "code": lk.code_size, "rodata": lk.rodata_size,
            "functions": funcs,
            "got_entries": lk.got_entries, "bss": lk.bss_size, "relocs": len(ctx.relocs),
            "mpy": len(blob), "sections": len(secs),
            "archive_members": sorted(m.name for m in lk.from_archives),
            "undefined": []}
