# aegis-edge boot logic: picks the runtime slot, mounts it and imports the
# runtime (docs/BOARDS.md "Runtime updates over the mesh").  main.py
# compiles this file at every boot and drops it once the runtime is
# imported, so none of it stays in the heap while the runtime runs.  Like
# main.py, only serial flashing changes it: a runtime bundle may not write
# rtboot* (node/core/rtbundle.py), and it is read by its path, never found
# on sys.path, so a runtime's lib/ cannot shadow it.
#
# A is what `aegis flash` wrote (lib/, romfs.img), B is rt_b/; the marker
# rtboot.json (replaced by atomic rename) says which one boots.  A slot on
# trial gets one boot to come online: a second boot of it without the
# runtime's confirmation, or a crash before it, falls back to the previous
# slot.
import os
import sys

_MARK = "rtboot.json"
_BASE = {"a": "", "b": "rt_b/"}
_PATHS = ("lib", "/lib", "rt_b/lib", "/rt_b/lib", "/rom/lib")


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _marker():
    import json
    try:
        with open(_MARK) as f:
            m = json.load(f)
        if m.get("slot") in _BASE:
            return m
    except Exception:       # none (serially flashed) or unreadable: slot A
        pass
    return {"slot": "a", "state": "ok"}


def _save(m):
    import json
    with open(_MARK + ".tmp", "w") as f:
        json.dump(m, f)
    os.rename(_MARK + ".tmp", _MARK)


def _fall_back(m, why):
    old, to = m["slot"], m.get("prev")
    if to not in _BASE or to == old:
        to = "b" if old == "a" else "a"
    print("aegis: runtime %s in slot %s failed (%s); falling back to slot %s"
          % (m.get("v"), old, why, to))
    m["failed"] = {"v": m.get("v", "?"), "error": why[:160]}
    m["slot"], m["prev"], m["state"] = to, old, "ok"
    m["v"], m["pv"] = m.get("pv", "?"), m.get("v", "?")
    m.pop("tries", None)
    m.pop("why", None)
    _save(m)


def _mount(base):
    for k in list(sys.modules):     # a restart re-imports from the new slot
        if k == "node" or k.startswith("node.") or k in ("wasm3", "rommap"):
            del sys.modules[k]
    for p in _PATHS:
        while p in sys.path:
            sys.path.remove(p)
    sys.path.append(base + "lib")
    if _exists(base + "lib/node"):          # plain .mpy files (no ROMFS) win
        sys.path.insert(0, base + "lib")
        return
    sys.path.insert(0, "/rom/lib")
    if not _exists(base + "romfs.img"):     # a real board: its firmware mounted /rom
        return
    # The unix board: the image file mapped outside the heap, as flash is.
    import vfs
    import uctypes
    import rommap
    try:
        vfs.umount("/rom")
    except OSError:
        pass
    a, n = rommap.map(base + "romfs.img")
    vfs.mount(vfs.VfsRom(uctypes.bytearray_at(a, n)), "/rom")  # type: ignore[attr-defined]  # 1.25+
    del sys.modules["rommap"]


def load():
    """Pick the slot (boot counter, fallback), mount it, import its
    runtime; returns (node.board.runtime, slot)."""
    while True:
        m = _marker()
        if m.get("state") == "trial":
            if m.get("tries", 0):
                _fall_back(m, m.get("why") or "it did not come online before the next boot")
                continue
            m["tries"] = 1
            _save(m)
        slot = m["slot"]
        try:
            _mount(_BASE[slot])
            from node.board import runtime
            return runtime, slot
        except Exception as e:     # slot A has nothing to fall back to
            if m.get("state") != "trial" and slot == "a":
                raise
            sys.print_exception(e)
            _fall_back(m, "import: %r" % (e,))
