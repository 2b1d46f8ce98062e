"""Per-architecture relocation handling.

Each `apply(ctx, sec, r, P, T)` patches ctx.text at offset P (the reloc's
place, already laid out in the text block) for the resolved target T:
    ("text", offset)  inside the text block (code, rodata, GOT)
    ("bss", offset)   inside the separately allocated bss
    ("op", n)         a loader value: 6 qstr table, 7 object table,
                      8 &mp_fun_table, 9+k mp_fun_table[k]
Absolute words become loader relocations (ctx.word_reloc); PC-relative
ones must land in the text block, so a PC-relative reference to bss (a
static variable) or to a loader value is refused: it cannot be expressed.
"""
import struct

from .elf import LinkError


def _where(sec, r):
    return "%s: %s+0x%x (%s)" % (sec.obj.name, sec.name, r.offset, r.sym.name or "?")


def _pcrel_text(sec, r, T, what):
    if T[0] == "bss":
        raise LinkError("%s: PC-relative reference to bss symbol %s: a native module's bss is "
                        "allocated apart from its code; make the variable non-static (reached "
                        "through the GOT)" % (_where(sec, r), r.sym.name))
    if T[0] != "text":
        raise LinkError("%s: %s to a loader-provided symbol; only GOT or absolute "
                        "references can reach it" % (_where(sec, r), what))
    return T[1]


def _abs_word(ctx, sec, r, P, T, addend):
    if P % ctx.word:
        raise LinkError("%s: absolute pointer at an unaligned offset" % _where(sec, r))
    if T[0] in ("text", "bss"):
        ctx.put_word(P, T[1] + addend)
        ctx.word_reloc(P, T[0])
    else:
        ctx.put_word(P, addend)
        ctx.word_reloc(P, T[1])


def _s32(v, sec, r):
    if not -(1 << 31) <= v < (1 << 31):
        raise LinkError("%s: displacement out of range" % _where(sec, r))
    return v


class X64:
    name, machine, number, word, flags = "x64", "EM_X86_64", 2, 8, None
    GOT_TYPES = (9, 41, 42)             # GOTPCREL, GOTPCRELX, REX_GOTPCRELX

    def apply(self, ctx, sec, r, P, T):
        t = r.type
        if t == 1:                                          # R_X86_64_64
            _abs_word(ctx, sec, r, P, T, r.addend)
        elif t in (2, 4):                                   # PC32, PLT32
            S = _pcrel_text(sec, r, T, "PC-relative reference")
            struct.pack_into("<i", ctx.text, P, _s32(S + r.addend - P, sec, r))
        elif t in self.GOT_TYPES:
            struct.pack_into("<i", ctx.text, P, _s32(ctx.got_entry(T) + r.addend - P, sec, r))
        else:
            raise LinkError("%s: unsupported x64 relocation type %d (build with -fpic)"
                            % (_where(sec, r), t))


def _thumb_bl_get(hw1, hw2):
    s = (hw1 >> 10) & 1
    j1, j2 = (hw2 >> 13) & 1, (hw2 >> 11) & 1
    i1, i2 = 1 - (j1 ^ s), 1 - (j2 ^ s)
    v = (s << 24) | (i1 << 23) | (i2 << 22) | ((hw1 & 0x3ff) << 12) | ((hw2 & 0x7ff) << 1)
    return v - (1 << 25) if s else v


def _thumb_bl_put(v):
    s = 1 if v < 0 else 0
    v &= (1 << 25) - 1
    i1, i2 = (v >> 23) & 1, (v >> 22) & 1
    j1, j2 = 1 - (i1 ^ s), 1 - (i2 ^ s)
    hw1 = 0xf000 | (s << 10) | ((v >> 12) & 0x3ff)
    hw2 = 0xd000 | (j1 << 13) | (j2 << 11) | ((v >> 1) & 0x7ff)
    return hw1, hw2


class ArmV6M:
    """Thumb-1 (Cortex-M0+).  REL relocations: the addend is in the place."""
    name, machine, number, word, flags = "armv6m", "EM_ARM", 4, 4, None
    GOT_TYPES = (26,)                                       # R_ARM_GOT_BREL

    def apply(self, ctx, sec, r, P, T):
        t = r.type
        A = struct.unpack_from("<i", ctx.text, P)[0] if t in (2, 3, 24, 25, 26, 38) else 0
        if t in (2, 38):                                    # ABS32, TARGET1
            _abs_word(ctx, sec, r, P, T, A)
        elif t == 3:                                        # REL32
            S = _pcrel_text(sec, r, T, "PC-relative reference")
            struct.pack_into("<i", ctx.text, P, S + A - P)
        elif t == 25:                                       # BASE_PREL: GOT base - P
            struct.pack_into("<i", ctx.text, P, ctx.got_base + A - P)
        elif t == 24:                                       # GOTOFF32: S - GOT base
            S = _pcrel_text(sec, r, T, "GOT-relative reference")
            struct.pack_into("<i", ctx.text, P, S + A - ctx.got_base)
        elif t == 26:                                       # GOT_BREL
            struct.pack_into("<i", ctx.text, P, ctx.got_entry(T) - ctx.got_base + A)
        elif t == 10:                                       # THM_CALL (BL)
            S = _pcrel_text(sec, r, T, "call") & ~1
            hw1, hw2 = struct.unpack_from("<HH", ctx.text, P)
            v = S + _thumb_bl_get(hw1, hw2) - P
            if not -(1 << 24) <= v < (1 << 24):
                raise LinkError("%s: BL out of range" % _where(sec, r))
            struct.pack_into("<HH", ctx.text, P, *_thumb_bl_put(v))
        elif t == 102:                                      # THM_JUMP11 (B)
            S = _pcrel_text(sec, r, T, "branch") & ~1
            hw = struct.unpack_from("<H", ctx.text, P)[0]
            a = ((hw & 0x7ff) << 1)
            a = a - 4096 if a & 2048 else a
            v = S + a - P
            if not -2048 <= v < 2048:
                raise LinkError("%s: B out of range" % _where(sec, r))
            struct.pack_into("<H", ctx.text, P, (hw & 0xf800) | ((v >> 1) & 0x7ff))
        elif t == 0:                                        # NONE
            pass
        else:
            raise LinkError("%s: unsupported ARM relocation type %d" % (_where(sec, r), t))


def _hi_lo(v):
    hi = (v + 0x800) >> 12
    return hi & 0xfffff, v - (hi << 12)


class RV32IMC:
    """RISC-V rv32imc, built with -mno-relax (no linker relaxation here)."""
    name, machine, number, word, flags = "rv32imc", "EM_RISCV", 11, 4, 0
    GOT_TYPES = (20,)                                       # GOT_HI20

    def apply(self, ctx, sec, r, P, T):
        t, A = r.type, r.addend
        u32 = lambda: struct.unpack_from("<I", ctx.text, P)[0]   # noqa: E731
        put = lambda v: struct.pack_into("<I", ctx.text, P, v & 0xffffffff)  # noqa: E731
        if t == 1:                                          # R_RISCV_32
            _abs_word(ctx, sec, r, P, T, A)
        elif t in (18, 19):                                 # CALL, CALL_PLT: auipc + jalr
            hi, lo = _hi_lo(_pcrel_text(sec, r, T, "call") + A - P)
            put((u32() & 0xfff) | (hi << 12))
            jalr = struct.unpack_from("<I", ctx.text, P + 4)[0]
            struct.pack_into("<I", ctx.text, P + 4, (jalr & 0xfffff) | ((lo & 0xfff) << 20))
        elif t in (20, 23):                                 # GOT_HI20, PCREL_HI20 on an auipc
            S = ctx.got_entry(T) if t == 20 else _pcrel_text(sec, r, T, "PC-relative reference")
            v = S + A - P
            ctx.hi20[(sec, r.offset)] = v
            put((u32() & 0xfff) | (_hi_lo(v)[0] << 12))
        elif t in (24, 25):                                 # PCREL_LO12_I / _S: via the auipc
            v = ctx.hi20.get((r.sym.section, r.sym.value))
            if v is None:
                raise LinkError("%s: PCREL_LO12 without its PCREL_HI20" % _where(sec, r))
            lo = _hi_lo(v)[1] & 0xfff
            if t == 24:
                put((u32() & 0xfffff) | (lo << 20))
            else:
                put((u32() & 0x1fff07f) | ((lo >> 5) << 25) | ((lo & 0x1f) << 7))
        elif t == 17:                                       # JAL
            v = _pcrel_text(sec, r, T, "jump") + A - P
            put((u32() & 0xfff) | (((v >> 20) & 1) << 31) | (((v >> 1) & 0x3ff) << 21)
                | (((v >> 11) & 1) << 20) | (((v >> 12) & 0xff) << 12))
        elif t == 16:                                       # BRANCH
            v = _pcrel_text(sec, r, T, "branch") + A - P
            put((u32() & 0x1fff07f) | (((v >> 12) & 1) << 31) | (((v >> 5) & 0x3f) << 25)
                | (((v >> 1) & 0xf) << 8) | (((v >> 11) & 1) << 7))
        elif t in (35, 39):                                 # ADD32 / SUB32 (jump tables)
            S = _pcrel_text(sec, r, T, "label difference")
            put(u32() + (S + A if t == 35 else -(S + A)))
        elif t == 44:                                       # RVC_BRANCH
            v = _pcrel_text(sec, r, T, "branch") + A - P
            hw = struct.unpack_from("<H", ctx.text, P)[0] & 0xe383
            hw |= (((v >> 8) & 1) << 12) | (((v >> 3) & 3) << 10) | (((v >> 6) & 3) << 5) \
                | (((v >> 1) & 3) << 3) | (((v >> 5) & 1) << 2)
            struct.pack_into("<H", ctx.text, P, hw)
        elif t == 45:                                       # RVC_JUMP
            v = _pcrel_text(sec, r, T, "jump") + A - P
            hw = struct.unpack_from("<H", ctx.text, P)[0] & 0xe003
            hw |= (((v >> 11) & 1) << 12) | (((v >> 4) & 1) << 11) | (((v >> 8) & 3) << 9) \
                | (((v >> 10) & 1) << 8) | (((v >> 6) & 1) << 7) | (((v >> 7) & 1) << 6) \
                | (((v >> 1) & 7) << 3) | (((v >> 5) & 1) << 2)
            struct.pack_into("<H", ctx.text, P, hw)
        elif t in (43, 51):
            # RELAX is a hint; ALIGN asks a relaxing linker to trim the nop
            # padding the assembler put in.  Without relaxation the padding
            # still runs, only perhaps less aligned (libgcc is built with relaxation on).
            pass
        else:
            raise LinkError("%s: unsupported RISC-V relocation type %d (build with -fpic "
                            "-mno-relax)" % (_where(sec, r), t))


ARCHS = {"x64": X64(), "armv6m": ArmV6M(), "rv32imc": RV32IMC()}
