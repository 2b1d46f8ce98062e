"""firmware/mpylink, our ELF -> .mpy native-module linker, and the board
builds no emulator runs here (armv6m for the Pico W, rv32imc for the
ESP32-C3): built by `make firmware` in CI, then checked structurally.
Plus what the linker must refuse, each with a message that says why."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from elftools.elf.elffile import ELFFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "firmware"))
from mpylink import link as L, mpy  # noqa: E402

OUT = os.path.join(ROOT, "build", "firmware")
ARCH_NUM = {"x64": 2, "armv6m": 4, "rv32imc": 11}
CC = {"x64": ["gcc"], "armv6m": ["arm-none-eabi-gcc", "-mthumb", "-mcpu=cortex-m0"],
      "rv32imc": ["riscv64-unknown-elf-gcc", "-march=rv32imc", "-mabi=ilp32", "-mno-relax"]}


@pytest.fixture(scope="module")
def built():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "firmware", "build.py")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    print(r.stdout)
    return r.stdout


@pytest.mark.parametrize("arch", sorted(ARCH_NUM))
def test_board_mpy_is_well_formed(built, arch):
    path = os.path.join(OUT, arch, "wasm3.mpy")
    with open(path, "rb") as f:
        blob = f.read()
    info = mpy.read(blob)
    assert info["arch"] == arch
    assert blob[2] >> 2 & 0x2f == ARCH_NUM[arch] and blob[2] & 3 == 3   # native sub-version 3
    assert bool(blob[2] & 0x40) == (arch == "rv32imc")                # rv32 carries arch flags
    if arch == "rv32imc":
        assert info["arch_flags"] == 0      # base rv32imc: no Zba/Zcmp... required
    assert info["qstrs"][0] == "wasm3.mpy" and "load" in info["qstrs"]
    with open(os.path.join(OUT, arch, "link-report.json")) as f:
        rep = json.load(f)
    assert rep["undefined"] == [] and rep["mpy"] == len(blob)
    assert rep["text"] == info["text"] and rep["bss"] == info["bss"]
    # Every relocation is resolved to something the loader knows, and the
    # word it adjusts holds a sane offset: inside text, inside bss, or 0
    # for a loader value (mp_fun_table and its entries, the qstr table).
    word = 8 if arch == "x64" else 4
    text = _text_bytes(blob, info)
    assert len(info["relocs"]) == rep["relocs"] > 100
    for w, kind in info["relocs"].items():
        v = int.from_bytes(text[w * word:(w + 1) * word], "little")
        if kind == "text":
            assert v < info["text"], (w, v)
        elif kind == "bss":
            assert v < info["bss"], (w, v)
        else:
            assert kind in (6, 8) or 9 <= kind < 9 + 87, kind
            assert v == 0, (w, kind, v)
    # The loader calls text+0: it must be mpy_init's code (bytes the linker
    # patched, at relocation places, masked out).
    with open(os.path.join(OUT, arch, "obj", "wasm3mod.o"), "rb") as f:
        elf = ELFFile(f)
        init = bytearray(elf.get_section_by_name(".text.mpy_init").data()[:32])
        rel = elf.get_section_by_name(".rela.text.mpy_init") or \
            elf.get_section_by_name(".rel.text.mpy_init")
        got = bytearray(text[:32])
        for r in rel.iter_relocations():
            for i in range(r["r_offset"], min(r["r_offset"] + 8, 32)):
                init[i] = got[i] = 0
    assert got == init
    print("%s: .mpy %d B, text %d B (code %d + rodata %d + GOT %d entries), bss %d B, "
          "%d relocations, %d libgcc members" % (arch, rep["mpy"], rep["text"], rep["code"],
                                                 rep["rodata"], rep["got_entries"], rep["bss"],
                                                 rep["relocs"], len(rep["archive_members"])))
    if arch != "x64":
        # soft float and 64-bit division come from the toolchain's libgcc.a
        names = " ".join(rep["archive_members"])
        assert "libgcc.a(" in names and ("divdi3" in names or "udivmoddi4" in names)


OBJDUMP = {"x64": ["objdump", "-D", "-b", "binary", "-mi386:x86-64"],
           "armv6m": ["arm-none-eabi-objdump", "-D", "-b", "binary", "-marm", "-Mforce-thumb"],
           "rv32imc": ["riscv64-unknown-elf-objdump", "-D", "-b", "binary", "-mriscv:rv32",
                       "-M", "no-aliases"]}
CALL = {"x64": r"call\s+0x([0-9a-f]+)$", "armv6m": r"bl\s+0x([0-9a-f]+)$",
        "rv32imc": r"jalr\s+ra,.*# 0x([0-9a-f]+)$"}


@pytest.mark.parametrize("arch", sorted(ARCH_NUM))
def test_linked_calls_land_on_function_starts(built, arch, tmp_path):
    """An independent check of the relocation arithmetic, since no emulator
    runs the board builds: binutils disassembles the linked text block and
    every direct call (x64 call, Thumb BL, RISC-V auipc+jalr) must land on
    the first instruction of a function the linker placed."""
    with open(os.path.join(OUT, arch, "wasm3.mpy"), "rb") as f:
        blob = f.read()
    with open(os.path.join(OUT, arch, "link-report.json")) as f:
        rep = json.load(f)
    (tmp_path / "text.bin").write_bytes(_text_bytes(blob, mpy.read(blob)))
    out = subprocess.run(OBJDUMP[arch] + [str(tmp_path / "text.bin")], capture_output=True,
                         text=True, check=True).stdout
    starts = set(rep["functions"].values())
    got0 = rep["text"] - rep["got_entries"] * (8 if arch == "x64" else 4)
    calls, bad, got_loads = 0, [], 0
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s", line)
        if not m:
            continue
        if int(m.group(1), 16) >= rep["code"]:
            break               # read-only data follows the code
        g = re.search(r"\blw\s.*# 0x([0-9a-f]+)$", line.rstrip()) if arch == "rv32imc" else None
        if g and int(g.group(1), 16) >= got0:
            # auipc+lw pairs (GOT_HI20/PCREL_LO12) must read whole GOT words
            got_loads += 1
            assert (int(g.group(1), 16) - got0) % 4 == 0, line
        c = re.search(CALL[arch], line.rstrip())
        if c:
            calls += 1
            if int(c.group(1), 16) not in starts:
                bad.append(line)
    # Thumb literal pools sit between functions and can decode as a BL:
    # those point far outside the code, unlike a mis-relocated call.
    bad = [b for b in bad if int(re.search(CALL[arch], b.rstrip()).group(1), 16) < rep["code"]]
    assert calls > 500 and not bad, (calls, bad[:5])
    assert arch != "rv32imc" or got_loads > 100


def _text_bytes(blob, info):
    """The text block of a parsed .mpy: after the header, the qstrs and the
    code block's length prefix."""
    r = mpy._R(blob)
    r.take(4)
    if blob[2] & 0x40:
        r.uint()
    nq, _ = r.uint(), r.uint()
    for _ in range(nq):
        n = r.uint()
        if not n & 1:
            r.take((n >> 1) + 1)
    r.uint()
    return r.take(info["text"])


def test_reloc_stream_round_trips():
    relocs = {0: 8, 1: "text", 2: "text", 3: "text", 7: "bss", 8: 9 + 78, 20: 6, 21: "bss",
              22: "bss"}
    blob = mpy.write(L.ARCHS["armv6m"], ["m.mpy", "f"], bytes(100), 16, relocs)
    assert mpy.read(blob)["relocs"] == relocs


def _cc(arch, tmp_path, name, src):
    if shutil.which(CC[arch][0]) is None:
        pytest.fail("%s missing: `make firmware` installs the cross compilers" % CC[arch][0])
    c = tmp_path / (name + ".c")
    c.write_text(src)
    o = tmp_path / (name + ".o")
    subprocess.run(CC[arch] + ["-Os", "-fpic", "-fno-common", "-ffunction-sections",
                               "-fdata-sections", "-ffreestanding", "-c", str(c), "-o", str(o)],
                   check=True)
    return str(o)


def _link(arch, objs, tmp_path, libs=()):
    return L.link(arch, objs, list(libs), [], str(tmp_path / "out.mpy"))


INIT = "void *mpy_init(void) { return 0; }\n"


@pytest.mark.parametrize("arch", sorted(ARCH_NUM))
def test_refuses_writable_data(arch, tmp_path):
    o = _cc(arch, tmp_path, "d", "int counter = 5;\nint *mpy_init(void) { return &counter; }\n")
    with pytest.raises(L.LinkError, match=r"writable initialised data.*counter"):
        _link(arch, [o], tmp_path)


@pytest.mark.parametrize("arch", sorted(ARCH_NUM))
def test_refuses_pc_relative_bss(arch, tmp_path):
    o = _cc(arch, tmp_path, "b", "static int hidden;\nint *mpy_init(void) { return &hidden; }\n")
    with pytest.raises(L.LinkError, match=r"PC-relative reference to bss symbol .*hidden"):
        _link(arch, [o], tmp_path)


@pytest.mark.parametrize("arch", sorted(ARCH_NUM))
def test_global_bss_goes_through_the_got(arch, tmp_path):
    o = _cc(arch, tmp_path, "g", "int shared;\nint *mpy_init(void) { return &shared; }\n")
    rep = _link(arch, [o], tmp_path)
    info = mpy.read((tmp_path / "out.mpy").read_bytes())
    assert info["bss"] >= 4 and "bss" in info["relocs"].values() and rep["got_entries"] >= 1


def test_refuses_undefined_symbols_naming_them(tmp_path):
    o = _cc("x64", tmp_path, "u", "int missing_fn(int);\nint mpy_init(void) { return missing_fn(1); }\n")
    with pytest.raises(L.LinkError, match=r"undefined symbols: missing_fn \(used by u.o\)"):
        _link("x64", [o], tmp_path)


def test_refuses_a_module_without_mpy_init(tmp_path):
    o = _cc("x64", tmp_path, "n", "int f(void) { return 1; }\n")
    with pytest.raises(L.LinkError, match="no mpy_init"):
        _link("x64", [o], tmp_path)


def test_libgcc_helpers_come_from_the_archive(tmp_path):
    o = _cc("armv6m", tmp_path, "h", "long long mpy_init(long long a, long long b) { return a / b; }\n")
    lib = subprocess.run(CC["armv6m"] + ["-print-libgcc-file-name"], capture_output=True,
                         text=True).stdout.strip()
    with pytest.raises(L.LinkError, match="__aeabi_ldivmod"):
        _link("armv6m", [o], tmp_path)
    rep = _link("armv6m", [o], tmp_path, [lib])
    assert any("divdi3" in m or "aeabi_ldivmod" in m for m in rep["archive_members"])
    assert mpy.read((tmp_path / "out.mpy").read_bytes())["arch"] == "armv6m"
