# Which runtime this board runs, and its boot confirmation (docs/BOARDS.md
# "Runtime updates over the mesh").  firmware/rtboot.py picks the slot from
# the marker rtboot.json: A is what `aegis flash` wrote (rt.json, lib/,
# romfs.img at the top), B is rt_b/.  A slot on trial must come online
# (broker connected, status published) within `runtime_confirm_s`; the
# runtime then marks it good.  Otherwise, or when it crashes first, it
# records why and asks for a restart: the next boot falls back.
#
# The runtime reads what it reports at boot itself (runtime.Board: the
# status's `runtime` map); this file is loaded only to confirm or fail a
# slot on trial, and by a runtime update (node/board/rtupdate.py).
import json
import os

from node.board.runtime import log, read_json

MARK = "rtboot.json"
SLOTS = {"a": "", "b": "rt_b/"}


def write_json(path, v):
    """Atomic replace: littlefs renames atomically, so a reset leaves the
    old or the new file, never a torn one."""
    with open(path + ".tmp", "w") as f:
        json.dump(v, f)
    os.rename(path + ".tmp", path)


def confirm(rt):
    """Online with the runtime whose status map is `rt` (on trial): keep it."""
    rt.pop("trial", None)
    m = read_json(MARK)
    if m.get("slot") != rt["slot"]:     # unreadable now, or changed since boot:
        log("runtime marker unreadable; slot %s not confirmed" % rt["slot"])
        return                          # never write one that names no slot
    m["state"] = "ok"
    m.pop("tries", None)
    write_json(MARK, m)
    log("runtime %s in slot %s confirmed" % (rt["v"], rt["slot"]))


def failed(slot, why):
    """The runtime of `slot` cannot come online: if it is on trial, say why
    for the fallback (firmware/rtboot.py records it) and return True: the
    caller must restart."""
    m = read_json(MARK)
    if m.get("state") != "trial" or m.get("slot") != slot:
        return False
    m["why"] = str(why)[:160]
    m["tries"] = 1
    write_json(MARK, m)
    log("runtime %s on trial failed: %s" % (m.get("v", "?"), why))
    return True
