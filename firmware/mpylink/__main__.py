"""Command line: `python -m mpylink` (run from firmware/).

    python -m mpylink link --arch armv6m -o mod.mpy a.o b.o [-l libgcc.a] [-q qstr ...]
    python -m mpylink check mod.mpy      parse and check a native .mpy, print its layout
"""
import argparse
import json
import sys

from . import mpy
from .link import LinkError, link


def main(argv=None):
    ap = argparse.ArgumentParser(prog="mpylink", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lk = sub.add_parser("link", help="link ELF objects into a native .mpy")
    lk.add_argument("--arch", required=True, help="x64, armv6m or rv32imc")
    lk.add_argument("-o", "--output", required=True)
    lk.add_argument("-l", "--lib", action="append", default=[], help="static archive (libgcc.a)")
    lk.add_argument("-q", "--qstr", action="append", default=[],
                    help="module qstr, in the order of the config header's table")
    lk.add_argument("--name", default=None, help="file name stored in the .mpy")
    lk.add_argument("objects", nargs="+")
    ck = sub.add_parser("check", help="check a native .mpy and print its layout")
    ck.add_argument("file")
    a = ap.parse_args(argv)
    if a.cmd == "link":
        try:
            rep = link(a.arch, a.objects, a.lib, a.qstr, a.output,
                       module_name=a.name or a.output.rsplit("/", 1)[-1])
        except LinkError as e:
            print("mpylink: %s" % e, file=sys.stderr)
            return 1
        print(json.dumps(rep, indent=1, sort_keys=True))
        return 0
    with open(a.file, "rb") as f:
        blob = f.read()
    try:
        info = mpy.read(blob)
    except mpy.MpyError as e:
        print("mpylink: %s: %s" % (a.file, e), file=sys.stderr)
        return 1
    kinds = {}
    for k in info["relocs"].values():
        kinds[str(k)] = kinds.get(str(k), 0) + 1
    print("%s: arch %s%s, text %d B, bss %d B, %d qstrs, %d relocations %s, file %d B" % (
        a.file, info["arch"], "" if info["arch_flags"] is None else " (flags %d)" % info["arch_flags"],
        info["text"], info["bss"], len(info["qstrs"]), len(info["relocs"]),
        json.dumps(kinds, sort_keys=True), info["size"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
