#!/usr/bin/env python3
"""Build the example modules and the wasm test fixtures.

    python3 modules/build.py           build every module, write the .wasm
                                       next to its source, record the
                                       toolchain in modules/TOOLCHAIN.txt
    python3 modules/build.py --check   build into a temp dir and compare
                                       byte-for-byte with the committed .wasm

Sources: every `*.c`, `*.wat` and `*.zig` in `modules/<name>/` (not
`modules/sdk/`), in `tests/modules/` and in `tests/modules/hostile/`; each
builds to `<stem>.wasm` in the same directory.
C:   clang --target=wasm32 -nostdlib -O2 -Wl,--no-entry -I modules/sdk
WAT: wat2wasm
Zig: zig build-exe -target wasm32-freestanding -mcpu=mvp -O ReleaseSmall
         -fno-entry -fstrip -rdynamic --stack 16384 --initial-memory=131072
     zig is the `ziglang` PyPI package, run as `.venv/bin/python -m ziglang`
     when the repository venv has it, else `python3 -m ziglang` (or $ZIG).
     Without zig, the .zig modules are skipped with a warning (their .wasm
     and the recorded zig version are left alone).

The build is deterministic: fixed flags, paths relative to the repository
root, no debug info, sources in sorted order.  Byte-identical output needs
the same compiler versions, so `--check` compares only when the toolchain
matches modules/TOOLCHAIN.txt; otherwise it warns and just checks that
everything still compiles.

Plain python3 (3.11+), no third-party imports.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import tomllib
except ImportError:  # pragma: no cover - python < 3.11
    tomllib = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = "modules"
FIXTURES = os.path.join("tests", "modules")
HOSTILE = os.path.join(FIXTURES, "hostile")
SDK = os.path.join(MODULES, "sdk")
TOOLCHAIN = os.path.join(MODULES, "TOOLCHAIN.txt")

CLANG = os.environ.get("CLANG", "clang")
WAT2WASM = os.environ.get("WAT2WASM", "wat2wasm")
CFLAGS = ["--target=wasm32", "-nostdlib", "-O2", "-Wl,--no-entry",
          "-I", SDK]
ZIGFLAGS = ["-target", "wasm32-freestanding", "-mcpu=mvp", "-O", "ReleaseSmall",
            "-fno-entry", "-fstrip", "-rdynamic", "--stack", "16384",
            "--initial-memory=131072"]
ZIG_EXTS = (".zig",)
# Committed .wasm files that have no source on purpose.
NO_SOURCE = {os.path.join(FIXTURES, "invalid.wasm")}


def fail(msg, code=1):
    print("build.py: error: " + msg, file=sys.stderr)
    sys.exit(code)


def run(cmd):
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           env=dict(os.environ, LC_ALL="C",
                                    SOURCE_DATE_EPOCH="0"))
    except FileNotFoundError:
        fail("%s not found (install clang, lld and wabt: see the Makefile)"
             % cmd[0], 2)
    return p


_zig = []


def zig():
    """The command that runs zig (a list), or None when none is available.

    build.py runs with plain python3 outside the venv, so the ziglang PyPI
    package is looked for in the repository venv first, then in python3.
    $ZIG overrides both (e.g. ZIG=zig for a system install)."""
    if _zig:
        return _zig[0]
    cands = []
    if os.environ.get("ZIG"):
        cands.append([os.environ["ZIG"]])
    venv_py = os.path.join(ROOT, ".venv", "bin", "python")
    if os.path.exists(venv_py):
        cands.append([venv_py, "-m", "ziglang"])
    cands.append(["python3", "-m", "ziglang"])
    found = None
    for cmd in cands:
        try:
            p = subprocess.run(cmd + ["version"], cwd=ROOT, capture_output=True,
                               text=True)
        except OSError:
            continue
        if p.returncode == 0 and p.stdout.strip():
            found = (cmd, p.stdout.strip().splitlines()[0])
            break
    _zig.append(found)
    return found


def warn_no_zig():
    print("build.py: warning: zig not found (tried $ZIG, .venv/bin/python -m "
          "ziglang, python3 -m ziglang); skipping the Zig module(s). Install "
          "it with `.venv/bin/pip install ziglang`.", file=sys.stderr)


def is_zig(src):
    return src.endswith(ZIG_EXTS)


def toolchain(srcs=()):
    """The toolchain description recorded in TOOLCHAIN.txt.

    The zig line is added when any source is Zig and zig is available;
    callers handle a missing zig (see main)."""
    lines = []
    for tool, args in ((CLANG, ["--version"]), (WAT2WASM, ["--version"])):
        p = run([tool] + args)
        out = (p.stdout or p.stderr).strip().splitlines()
        if p.returncode != 0 or not out:
            fail("cannot run %s --version" % tool, 2)
        lines.append("%s: %s" % (os.path.basename(tool), out[0].strip()))
    if any(is_zig(s) for s, _ in srcs) and zig():
        lines.append("zig: %s" % zig()[1])
    return "".join(line + "\n" for line in lines)


def sources():
    """Sorted list of (source, wasm) paths relative to ROOT."""
    dirs = []
    for name in sorted(os.listdir(os.path.join(ROOT, MODULES))):
        d = os.path.join(MODULES, name)
        if os.path.isdir(os.path.join(ROOT, d)) and d != SDK \
                and not name.startswith((".", "_")):
            dirs.append(d)
    if os.path.isdir(os.path.join(ROOT, FIXTURES)):
        dirs.append(FIXTURES)
    # Modules that never return or grow memory without bound: kept apart so
    # tests that run every tests/modules/*.wasm unmetered do not pick them up.
    if os.path.isdir(os.path.join(ROOT, HOSTILE)):
        dirs.append(HOSTILE)
    out = []
    for d in dirs:
        for f in sorted(os.listdir(os.path.join(ROOT, d))):
            stem, ext = os.path.splitext(f)
            if ext in (".c", ".wat") + ZIG_EXTS:
                out.append((os.path.join(d, f), os.path.join(d, stem + ".wasm")))
    wasms = [w for _, w in out]
    dups = sorted({w for w in wasms if wasms.count(w) > 1})
    if dups:
        fail("two sources build the same file: " + ", ".join(dups))
    return out


def build_one(src, dst):
    """Compile src (relative to ROOT) into dst (absolute or relative)."""
    if src.endswith(".c"):
        cmd = [CLANG] + CFLAGS + ["-o", dst, src]
    elif is_zig(src):
        # The local cache goes to a temp dir (zig would otherwise create
        # .zig-cache/ in the repository); the global cache is zig's default.
        cache = tempfile.mkdtemp(prefix="aegis-zig-cache-")
        cmd = zig()[0] + ["build-exe", src] + ZIGFLAGS + [
            "-femit-bin=" + os.path.abspath(dst), "--cache-dir", cache]
        try:
            p = run(cmd)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        if p.returncode != 0:
            sys.stderr.write(p.stdout + p.stderr)
            fail("building %s failed: %s" % (src, " ".join(cmd)))
        return
    else:
        cmd = [WAT2WASM, src, "-o", dst]
    p = run(cmd)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        fail("building %s failed: %s" % (src, " ".join(cmd)))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def check_manifests(built):
    """Each modules/<name>/*.toml names a wasm that this script builds."""
    problems = []
    for name in sorted(os.listdir(os.path.join(ROOT, MODULES))):
        d = os.path.join(MODULES, name)
        if not os.path.isdir(os.path.join(ROOT, d)) or d == SDK:
            continue
        tomls = [f for f in sorted(os.listdir(os.path.join(ROOT, d)))
                 if f.endswith(".toml")]
        if not tomls:
            problems.append("%s: no module.toml" % d)
        for t in tomls:
            if tomllib is None:
                continue
            try:
                with open(os.path.join(ROOT, d, t), "rb") as f:
                    meta = tomllib.load(f)
            except (OSError, tomllib.TOMLDecodeError) as e:
                problems.append("%s/%s: %s" % (d, t, e))
                continue
            for key in ("name", "version", "wasm", "subscribe", "emit",
                        "ports", "description"):
                if key not in meta:
                    problems.append("%s/%s: missing key %r" % (d, t, key))
            w = os.path.join(d, str(meta.get("wasm", "")))
            if "wasm" in meta and w not in built:
                problems.append("%s/%s: wasm %r is not built from a source"
                                % (d, t, meta["wasm"]))
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="build into a temp dir and compare with the "
                         "committed .wasm files")
    args = ap.parse_args(argv)

    srcs = sources()
    if not srcs:
        fail("no module sources found")
    tc = toolchain(srcs)
    tc_path = os.path.join(ROOT, TOOLCHAIN)
    recorded = read(tc_path).decode() if os.path.exists(tc_path) else None
    all_srcs = srcs
    if any(is_zig(s) for s, _ in srcs) and not zig():
        warn_no_zig()
        srcs = [(s, w) for s, w in srcs if not is_zig(s)]
        # keep the zig version that built the committed Zig .wasm files
        tc += "".join(line for line in (recorded or "").splitlines(True)
                      if line.startswith("zig:"))
    problems = check_manifests({w for _, w in all_srcs})
    if problems:
        fail("module manifests:\n  " + "\n  ".join(problems))

    if not args.check:
        tmp = tempfile.mkdtemp(prefix="aegis-build-")
        try:
            changed = 0
            for i, (src, wasm) in enumerate(srcs):
                out = os.path.join(tmp, "%d.wasm" % i)
                build_one(src, out)
                data = read(out)
                path = os.path.join(ROOT, wasm)
                if not os.path.exists(path) or read(path) != data:
                    with open(path + ".tmp", "wb") as f:
                        f.write(data)
                    os.replace(path + ".tmp", path)
                    changed += 1
                    print("built   %s (%d bytes)" % (wasm, len(data)))
                else:
                    print("same    %s" % wasm)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if recorded != tc:
            with open(tc_path, "w") as f:
                f.write(tc)
            print("wrote   %s" % TOOLCHAIN)
        print("%d module(s), %d changed" % (len(srcs), changed))
        return 0

    # --check (without zig, the recorded zig line was copied into tc above)
    compare = recorded == tc
    if not compare:
        print("build.py: warning: toolchain differs from %s; building only, "
              "not comparing bytes.\n  recorded: %s\n  current:  %s"
              % (TOOLCHAIN,
                 (recorded or "(missing)\n").strip().replace("\n", "; "),
                 tc.strip().replace("\n", "; ")), file=sys.stderr)
    diffs = []
    tmp = tempfile.mkdtemp(prefix="aegis-check-")
    try:
        for i, (src, wasm) in enumerate(srcs):
            out = os.path.join(tmp, "%d.wasm" % i)
            build_one(src, out)
            if not compare:
                continue
            path = os.path.join(ROOT, wasm)
            if not os.path.exists(path):
                diffs.append("%s: missing (not built/committed from %s)"
                             % (wasm, src))
            else:
                old, new = read(path), read(out)
                if old != new:
                    diffs.append("%s: differs from a fresh build of %s "
                                 "(committed %d bytes, built %d bytes)"
                                 % (wasm, src, len(old), len(new)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # .wasm files without a source (stale leftovers) are reported, not fatal.
    built = {w for _, w in all_srcs}
    for d in sorted({os.path.dirname(w) for w in built}):
        for f in sorted(os.listdir(os.path.join(ROOT, d))):
            p = os.path.join(d, f)
            if f.endswith(".wasm") and p not in built and p not in NO_SOURCE:
                print("build.py: warning: %s has no source" % p,
                      file=sys.stderr)
    for p in sorted(NO_SOURCE):
        if not os.path.exists(os.path.join(ROOT, p)):
            diffs.append("%s: missing" % p)
    if diffs:
        print("build.py: committed .wasm files do not match the sources:\n  "
              + "\n  ".join(diffs)
              + "\nRun `python3 modules/build.py` and commit the result.",
              file=sys.stderr)
        return 1
    print("%d module(s) built%s%s" % (
        len(srcs),
        " (%d Zig module(s) skipped: no zig)" % (len(all_srcs) - len(srcs))
        if len(all_srcs) != len(srcs) else "", ", all match the committed .wasm" if compare
        else " (byte comparison skipped)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
