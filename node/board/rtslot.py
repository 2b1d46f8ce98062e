# Which runtime this board runs, and its boot confirmation (docs/BOARDS.md
# "Runtime updates over the mesh").  firmware/main.py picks the slot from
# the marker rtboot.json: A is what `aegis flash` wrote (rt.json, lib/,
# romfs.img at the top), B is rt_b/.  A slot on trial must come online
# (broker connected, status published) within `runtime_confirm_s`; the
# runtime then marks it good.  Otherwise, or when it crashes first, it
# records why and asks for a restart: the next boot falls back.
import json
import os

MARK = "rtboot.json"
SLOTS = {"a": "", "b": "rt_b/"}


def read_json(path):
    try:
        with open(path) as f:
            v = json.load(f)
        return v if type(v) is dict else {}
    except (OSError, ValueError):
        return {}


def write_json(path, v):
    """Atomic replace: littlefs renames atomically, so a reset leaves the
    old or the new file, never a torn one."""
    with open(path + ".tmp", "w") as f:
        json.dump(v, f)
    os.rename(path + ".tmp", path)


class Slot:
    def __init__(self, slot, confirm_s=120):
        self.slot = slot if slot in SLOTS else "a"
        self.rt = read_json(SLOTS[self.slot] + "rt.json")     # {v, board, arch}
        self.mark = read_json(MARK)
        self.trial = self.mark.get("state") == "trial" and self.mark.get("slot") == self.slot
        self.deadline_ms = int(confirm_s) * 1000

    def version(self):
        return self.rt.get("v", "?")

    def status(self):
        """The status's `runtime` map."""
        s = {"v": self.version(), "slot": self.slot}
        if self.mark.get("failed"):
            s["failed"] = self.mark["failed"]   # {v, error}: an update that fell back
        if self.trial:
            s["trial"] = True
        return s

    def confirm(self):
        """Online with this runtime: keep it (called on each connect)."""
        if self.trial:
            self.trial = False
            self.mark["state"] = "ok"
            self.mark.pop("tries", None)
            write_json(MARK, self.mark)
            print("aegis: runtime %s in slot %s confirmed" % (self.version(), self.slot))

    def failed(self, why):
        """This trial runtime cannot come online: say why for the fallback
        (firmware/main.py records it); True if the caller must restart."""
        if not self.trial:
            return False
        m = read_json(MARK)
        m["why"] = str(why)[:160]
        m["tries"] = 1
        write_json(MARK, m)
        print("aegis: runtime %s on trial failed: %s" % (self.version(), why))
        return True
