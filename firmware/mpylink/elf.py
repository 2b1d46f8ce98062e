"""ELF relocatable objects and `ar` archives, read with pyelftools into the
few plain classes the linker needs."""
import io
import struct

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection


class LinkError(Exception):
    """The objects cannot become a native module; the message says why."""


# Sections that never go into a native module and whose relocations must not
# pull anything in (ARM unwind tables would drag in the whole unwinder).
_IGNORED_PREFIX = (".ARM.exidx", ".ARM.extab", ".ARM.attributes", ".comment", ".note",
                   ".debug", ".eh_frame", ".riscv.attributes", ".group")


class Section:
    def __init__(self, obj, index, name, kind, data, size, align, flags):
        self.obj, self.index, self.name, self.kind = obj, index, name, kind
        self.data = bytearray(data)
        self.size, self.align, self.flags = size, max(1, align), flags
        self.relocs = []        # [Reloc]
        self.live = False
        self.addr = None        # offset in the text block or in bss, once laid out

    def __repr__(self):
        return "%s(%s)" % (self.name, self.obj.name)


class Symbol:
    def __init__(self, name, section, value, bind, typ, obj, shndx):
        self.name, self.section, self.value = name, section, value
        self.bind, self.type, self.obj, self.shndx = bind, typ, obj, shndx

    @property
    def defined(self):
        return self.section is not None or self.shndx == "SHN_ABS"


class Reloc:
    __slots__ = ("offset", "type", "sym", "addend")

    def __init__(self, offset, typ, sym, addend):
        self.offset, self.type, self.sym, self.addend = offset, typ, sym, addend


def _kind(sec):
    """text / rodata / bss / data / tls / None (not loaded)."""
    name, flags = sec.name, sec["sh_flags"]
    if not flags & SH_FLAGS.SHF_ALLOC or name.startswith(_IGNORED_PREFIX):
        return None
    if flags & SH_FLAGS.SHF_TLS:
        return "tls"
    if sec["sh_type"] == "SHT_NOBITS":
        return "bss"
    if flags & SH_FLAGS.SHF_EXECINSTR:
        return "text"
    # .data.rel.ro is written only by a dynamic loader; here MicroPython's
    # loader applies those relocations, so it is read-only data.
    if flags & SH_FLAGS.SHF_WRITE and not name.startswith(".data.rel.ro"):
        return "data"
    return "rodata"


class Object:
    """One relocatable ELF file."""

    def __init__(self, name, blob):
        self.name = name
        elf = ELFFile(io.BytesIO(blob))
        if elf["e_type"] != "ET_REL":
            raise LinkError("%s: not a relocatable object (%s)" % (name, elf["e_type"]))
        self.machine = elf["e_machine"]
        self.is_rela = None
        self.sections = {}
        for i, s in enumerate(elf.iter_sections()):
            k = _kind(s)
            if k is None:
                continue
            data = b"" if k in ("bss", "tls") else s.data()
            self.sections[i] = Section(self, i, s.name, k, data, s["sh_size"], s["sh_addralign"],
                                       s["sh_flags"])
        symtab = elf.get_section_by_name(".symtab")
        self.symbols = []
        for s in symtab.iter_symbols():
            shndx = s["st_shndx"]
            sec = self.sections.get(shndx) if isinstance(shndx, int) else None
            name = s.name
            if s["st_info"]["type"] == "STT_SECTION" and sec is not None:
                name = sec.name
            if shndx == "SHN_COMMON":
                raise LinkError("%s: common symbol %s (compile with -fno-common)" % (self.name, name))
            self.symbols.append(Symbol(name, sec, s["st_value"], s["st_info"]["bind"],
                                       s["st_info"]["type"], self, shndx))
        for s in elf.iter_sections():
            if not isinstance(s, RelocationSection):
                continue
            target = self.sections.get(s["sh_info"])
            if target is None:
                continue
            self.is_rela = s.is_RELA()
            for r in s.iter_relocations():
                addend = r["r_addend"] if s.is_RELA() else None
                target.relocs.append(Reloc(r["r_offset"], r["r_info_type"],
                                           self.symbols[r["r_info_sym"]], addend))

    def globals(self):
        return [s for s in self.symbols
                if s.bind in ("STB_GLOBAL", "STB_WEAK") and s.defined and s.name]


class Archive:
    """A static library (libgcc.a): members are parsed only when one of
    their symbols is needed."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            blob = f.read()
        if blob[:8] != b"!<arch>\n":
            raise LinkError("%s: not an ar archive" % path)
        self.index = {}         # symbol -> member offset
        self._blob = blob
        self._loaded = {}
        longnames = b""
        pos = 8
        members = {}
        while pos + 60 <= len(blob):
            hdr = blob[pos:pos + 60]
            name = hdr[:16].decode().strip()
            size = int(hdr[48:58].decode().strip())
            body = blob[pos + 60:pos + 60 + size]
            if name == "/":
                n = struct.unpack(">I", body[:4])[0]
                offs = struct.unpack(">%dI" % n, body[4:4 + 4 * n])
                names = body[4 + 4 * n:].split(b"\0")
                for off, sym in zip(offs, names):
                    self.index.setdefault(sym.decode(), off)
            elif name == "//":
                longnames = body
            else:
                if name.startswith("/") and name[1:].isdigit():
                    start = int(name[1:])
                    name = longnames[start:longnames.index(b"/\n", start)].decode()
                members[pos] = (name.rstrip("/"), body)
            pos += 60 + size + (size & 1)
        self._members = members

    def member_for(self, symbol):
        """The Object defining `symbol`, or None."""
        off = self.index.get(symbol)
        if off is None:
            return None
        if off not in self._loaded:
            name, body = self._members[off]
            self._loaded[off] = Object("%s(%s)" % (self.path.rsplit("/", 1)[-1], name), body)
        return self._loaded[off]
