"""firmware/main.py's slot choice (firmware/rtboot.py) on the real MicroPython, without a broker:
a stand-in runtime per slot (plain .py in lib/) reports which slot it was
started from, so the boot counter and the fallback rules are checked
directly (docs/BOARDS.md "Runtime updates over the mesh")."""
import json
import os
import shutil
import subprocess
import sys

from conftest import ROOT

MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
RUNTIME = ('import sys\nprint("RAN", %r, sys.argv)\n'
           'def main(cfg, slot):\n    print("SLOT", slot, %r)\n')


def board(tmp_path, slots, marker=None):
    """A filesystem with the boot files (firmware/main.py, rtboot.py), slot A
    at the top, slot B in rt_b/; `slots` maps slot -> runtime source (None:
    not there)."""
    fs = tmp_path / "fs"
    fs.mkdir()
    for f in ("main.py", "rtboot.py"):
        shutil.copy(os.path.join(ROOT, "firmware", f), fs / f)
    for slot, src in slots.items():
        base = fs / ("rt_b" if slot == "b" else "")
        d = base / "lib" / "node" / "board"
        d.mkdir(parents=True)
        (base / "lib" / "node" / "__init__.py").write_text("")
        (d / "__init__.py").write_text("")
        (d / "runtime.py").write_text(src)
    if marker is not None:
        (fs / "rtboot.json").write_text(json.dumps(marker))
    return fs


def boot(fs):
    r = subprocess.run([MICROPYTHON, "-c", "import main"], cwd=fs, capture_output=True,
                       text=True, timeout=30)
    mark = json.loads((fs / "rtboot.json").read_text()) if (fs / "rtboot.json").exists() else None
    return r.stdout + r.stderr, mark


def test_no_marker_boots_slot_a(tmp_path):
    out, mark = boot(board(tmp_path, {"a": RUNTIME % ("a", "a"), "b": RUNTIME % ("b", "b")}))
    assert "SLOT a a" in out and "RAN 'b'" not in out and mark is None


def test_trial_gets_one_boot_then_falls_back(tmp_path):
    fs = board(tmp_path, {"a": RUNTIME % ("a", "a"), "b": RUNTIME % ("b", "b")},
               {"slot": "b", "prev": "a", "v": "0.2.0", "pv": "0.1.0", "state": "trial",
                "tries": 0})
    out, mark = boot(fs)        # first boot of the trial: runs B, counts it
    assert "SLOT b b" in out and mark["tries"] == 1 and mark["state"] == "trial"
    out, mark = boot(fs)        # B never confirmed: the next boot falls back
    assert "SLOT a a" in out and "RAN 'b'" not in out
    assert mark["slot"] == "a" and mark["state"] == "ok" and mark["v"] == "0.1.0"
    assert mark["failed"] == {"v": "0.2.0", "error": "it did not come online before the next boot"}


def test_import_error_falls_back_at_once_and_a_broken_b_never_loops(tmp_path):
    broken = 'raise ImportError("broken on purpose")\n'
    fs = board(tmp_path, {"a": RUNTIME % ("a", "a"), "b": broken},
               {"slot": "b", "prev": "a", "v": "0.3.0", "pv": "0.1.0", "state": "trial",
                "tries": 0})
    out, mark = boot(fs)
    assert "falling back to slot a" in out and "SLOT a a" in out
    assert mark["failed"]["v"] == "0.3.0" and "broken on purpose" in mark["failed"]["error"]
    # A confirmed slot B that stops importing (flash damage) falls back too,
    # even with a marker naming B as its own previous slot.
    (fs / "rtboot.json").write_text(json.dumps({"slot": "b", "prev": "b", "state": "ok"}))
    out, mark = boot(fs)
    assert "SLOT a a" in out and mark["slot"] == "a"
    # Slot A itself broken and nothing else: the error shows, no loop.
    (fs / "lib" / "node" / "board" / "runtime.py").write_text(broken)
    out, _ = boot(fs)
    assert "ImportError: broken on purpose" in out and "falling back" not in out


def test_restart_reimports_from_the_new_slot(tmp_path):
    # A runtime asking for a restart after switching the marker, as an
    # update does: the Unix port (no reset) imports the new slot in-process.
    switch = ('import json, os\n'
              'def main(cfg, slot):\n'
              '    print("SLOT", slot, "a")\n'
              '    with open("rtboot.json", "w") as f:\n'
              '        json.dump({"slot": "b", "prev": "a", "state": "trial", "tries": 0}, f)\n'
              '    return "restart"\n')
    fs = board(tmp_path, {"a": switch, "b": RUNTIME % ("b", "b")})
    out, mark = boot(fs)
    assert out.index("SLOT a a") < out.index("SLOT b b") and mark["tries"] == 1
