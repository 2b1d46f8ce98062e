"""node/board/fsstore.py (the board's store over its filesystem) on the real
MicroPython, against the store interface of node/core/store.py: atomic
replace, appends, scratch writes out of order, renames, listing by prefix
through nested directories, bad names refused, and a write cut short by a
reset swept at the next start."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")

SCRIPT = r"""
import sys, json, os
sys.path.insert(0, %r)
from node.board.fsstore import FlashStore
from node.core.store import StoreError
st = FlashStore("data/aegis/")
r = {}
st.write("mods/a.cbor", b"one")
st.write("mods/a.cbor", b"two")                 # replace
st.write("top", b"t")
st.append("outbox/seg-1", b"ab")
st.append("outbox/seg-1", b"cd")
st.write_at("incoming/x.part", 3000, b"END")    # a hole before it, zero-filled
st.write_at("incoming/x.part", 0, b"GO")
st.write("pkgs/deep/er/p.pkg", b"p")
r["read"] = [st.read("mods/a.cbor").decode(), st.read("outbox/seg-1").decode(), st.read("nope")]
r["size"] = [st.size("incoming/x.part"), st.size("nope")]
r["at"] = [st.read_at("incoming/x.part", 0, 4).hex(), st.read_at("incoming/x.part", 2998, 9).hex(),
           st.read_at("incoming/x.part", 5000, 4).hex()]
st.rename("incoming/x.part", "pkgs/x.pkg")
st.write("pkgs/y.pkg", b"y")
st.rename("pkgs/y.pkg", "pkgs/x.pkg")           # replaces
r["renamed"] = [st.read("pkgs/x.pkg").decode(), st.size("incoming/x.part")]
try:
    st.rename("nope", "x")
except StoreError as e:
    r["rename_missing"] = str(e)
r["all"] = st.list("")
r["pkgs"] = st.list("pkgs/")
r["prefix"] = st.list("pkgs/d")
r["mods"] = st.list("mods/")
r["none"] = st.list("zzz/")
bad = []
for n in ("", "/abs", "a/../b", ".."):
    try:
        st.write(n, b"x")
    except StoreError:
        bad.append(n)
r["bad"] = bad
st.delete("top")
st.delete("top")                                 # absent: no error
# A write cut short by a reset leaves name.tmp: the next start sweeps it.
with open("data/aegis/mods/b.cbor.tmp", "wb") as f:
    f.write(b"torn")
st2 = FlashStore("data/aegis")
r["swept"] = st2.list("mods/")
r["free"] = st2.free() > 0
print(json.dumps(r))
"""


@pytest.mark.skipif(not os.path.exists(MICROPYTHON), reason="no MicroPython binary")
def test_flash_store_on_micropython(tmp_path):
    (tmp_path / "run.py").write_text(SCRIPT % ROOT)
    p = subprocess.run([MICROPYTHON, "-X", "heapsize=192K", "run.py"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout)
    assert r["read"] == ["two", "abcd", None]
    assert r["size"] == [3003, -1]
    assert r["at"] == ["474f0000", "0000454e44", ""]
    assert r["renamed"] == ["y", -1]
    assert "no such object" in r["rename_missing"]
    assert r["all"] == ["mods/a.cbor", "outbox/seg-1", "pkgs/deep/er/p.pkg", "pkgs/x.pkg", "top"]
    assert r["pkgs"] == ["pkgs/deep/er/p.pkg", "pkgs/x.pkg"]
    assert r["prefix"] == ["pkgs/deep/er/p.pkg"]
    assert r["mods"] == ["mods/a.cbor"] and r["none"] == []
    assert r["bad"] == ["", "/abs", "a/../b", ".."]
    assert r["swept"] == ["mods/a.cbor"] and r["free"]
    assert not os.path.exists(tmp_path / "data" / "aegis" / "mods" / "b.cbor.tmp")
