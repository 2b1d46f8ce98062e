"""A simulated board on a 32-bit MicroPython, for bench/sec_boards.py.

The Unix port the tests flash is 64-bit: its objects, pointers and GC
blocks are twice a Pico W's.  MicroPython's webassembly port is 32-bit
(wasm32), published on npm as a ready build; Node.js runs it
(bench/board32.mjs), and bench/board32_shim.py gives its asyncio the TCP
stream it lacks.  The runtime boots from plain .mpy files, as on a board
whose firmware has no ROMFS partition (stock Pico W, ESP32, ESP32-C3
firmware), so its bytecode is in the heap as it is there.

Needs `node` (apt: nodejs) and the npm package, fetched once into
build/mp32/ and checked against the pinned SHA-512 (`fetch()`).
"""
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import urllib.request

from benchlib import ROOT

# @micropython/micropython-webassembly-pyscript: the webassembly port's
# build with asyncio (MicroPython 1.27.0, .mpy version 6.3 like mpy-cross).
PKG = "micropython-webassembly-pyscript-1.27.0.tgz"
URL = "https://registry.npmjs.org/@micropython/micropython-webassembly-pyscript/-/" + PKG
# npm's "integrity" for it (sha512-DnXx4Eqx...IYIUDA==), as hex.
SHA512 = ("0e75f1e04ab182479a1444ab4b7b8aacbee62cc9389914ddd2633368e7771d44"
          "a265438013bb75d6e2e78dfddfb45f3b376c66e249c79d610a7152b82182140c")
DIR = os.path.join(ROOT, "build", "mp32")
NODE = shutil.which("node")


class Unavailable(Exception):
    """No Node.js, or the package cannot be fetched: the 32-bit rows are skipped."""


def fetch():
    """The directory holding micropython.mjs and .wasm (fetched once)."""
    pkg = os.path.join(DIR, "package")
    if NODE is None:
        raise Unavailable("no `node` on PATH (apt-get install nodejs)")
    v = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip()
    if int(v.lstrip("v").split(".")[0] or 0) < 16:
        raise Unavailable("node %s is too old: the package needs Node.js 16 or newer" % v)
    if os.path.exists(os.path.join(pkg, "micropython.wasm")):
        return pkg
    try:
        with urllib.request.urlopen(URL, timeout=60) as r:
            data = r.read()
    except OSError as e:
        raise Unavailable("cannot fetch %s: %s" % (URL, e))
    if hashlib.sha512(data).hexdigest() != SHA512:
        raise Unavailable("%s: SHA-512 mismatch (not the pinned package)" % PKG)
    tmp = DIR + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t.getmembers():
            if m.isfile() and m.name.startswith("package/") and "/" not in m.name[8:]:
                t.extract(m, tmp)
    shutil.rmtree(DIR, ignore_errors=True)
    os.rename(tmp, DIR)
    return pkg


def build(node_id, out, broker, pubs, extra):
    """The board's filesystem in `out`: aegis.json as `aegis flash` writes
    it for the unix board's ports, rt.json, and lib/node/**.mpy."""
    from node import flash
    board = flash.load_board("unix")
    cfg_dir = out + "-cfg"
    os.makedirs(cfg_dir, exist_ok=True)
    toml = os.path.join(cfg_dir, "node.toml")
    with open(toml, "w") as f:
        f.write('node_id = "%s"\nfleet = "test"\ntrusted_keys = %s\n' % (node_id, json.dumps(pubs)))
        f.writelines("%s = %s\n" % (k, json.dumps(v)) for k, v in extra.items())
        f.write('[mqtt]\nurl = "%s"\nbackoff_max_ms = 1000\n' % broker)
    cfg, files = flash.board_config(board, toml)
    tree = os.path.join(cfg_dir, "tree")
    flash.build(board, cfg, files, tree, log=lambda *a: None)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(os.path.join(flash.rom_dir(tree), "lib"), os.path.join(out, "lib"))
    for f in ("aegis.json", flash.RT_JSON):
        shutil.copy(os.path.join(tree, f), os.path.join(out, f))
    return out


def bytecode(tree, modules, block=16):
    """Bytes of bytecode the given modules of `tree` hold in the heap when
    loaded from plain .mpy files (each function's, in 16-byte GC blocks):
    what a ROMFS partition keeps out of it.  Read from the .mpy files
    (format 6, bytecode only, as mpy-cross writes the runtime)."""
    total = 0
    for m in modules:
        path = os.path.join(tree, "lib", *m.split(".")) + ".mpy"
        if os.path.exists(path):
            with open(path, "rb") as f:
                total += _mpy_bytecode(f.read(), block)
    return total


def _mpy_bytecode(b, block):
    if b[:2] != b"M\x06":
        raise ValueError("not a version 6 .mpy file")

    def uint(i):
        v = 0
        while True:
            x = b[i]
            i += 1
            v = v << 7 | x & 0x7F
            if not x & 0x80:
                return v, i

    def obj(i):             # constants: 0-4 none/bool/..., 5 str, 6 bytes, 10 tuple
        t, i = b[i], i + 1
        if t <= 4:
            return i
        n, i = uint(i)
        if t == 10:
            for _ in range(n):
                i = obj(i)
            return i
        return i + n + (t in (5, 6))        # str and bytes end in a NUL

    def raw_code(i, total):
        kind_len, i = uint(i)
        if kind_len & 3:
            raise ValueError("native code in a runtime .mpy")
        n = kind_len >> 3
        total[0] += -(-n // block) * block
        i += n
        if kind_len & 4:                    # has children
            c, i = uint(i)
            for _ in range(c):
                i = raw_code(i, total)
        return i

    nq, i = uint(4)
    no, i = uint(i)
    for _ in range(nq):
        n, i = uint(i)
        if not n & 1:                       # odd: a static qstr's index
            i += (n >> 1) + 1
    for _ in range(no):
        i = obj(i)
    total = [0]
    if raw_code(i, total) != len(b):
        raise ValueError(".mpy file not parsed to its end")
    return total[0]


class Board32:
    """`node bench/board32.mjs` on a board tree; console kept in memory."""

    def __init__(self, tree):
        self.tree = tree
        self.proc = None
        self.lines = []

    def start(self):
        self.proc = subprocess.Popen(
            [NODE, os.path.join(ROOT, "bench", "board32.mjs"), fetch(), self.tree],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def heap(self, timeout=10):
        """(bytes in use now, largest since the last call, the modules
        loaded then), sampled by board32.mjs after a collection between
        asyncio steps."""
        n = len([x for x in self.lines if x.startswith("board32-heap ")])
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [x for x in self.lines if x.startswith("board32-heap ")]
            if len(got) > n:
                f = got[n].split()
                return int(f[1]), int(f[2]), f[3:]
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("no heap sample from the 32-bit board:\n" + self.console()[-800:])

    def bare(self, timeout=30):
        """The interpreter's own heap, sampled before the runtime loads."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [x for x in self.lines if x.startswith("board32-bare ")]
            if got:
                return int(got[0].split()[1])
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("the 32-bit board did not start:\n" + self.console()[-800:])

    def console(self):
        return "".join(self.lines)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)



if __name__ == "__main__":      # make bench: fetch the package once, say so if it cannot
    try:
        print("32-bit MicroPython for bench/sec_boards.py:", fetch())
    except Unavailable as e:
        print("note: the 32-bit board rows will be skipped:", e)
