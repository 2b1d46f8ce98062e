"""ROMFS for `aegis flash`: the runtime's bytecode runs in place from flash.

MicroPython loads a plain .mpy file into the GC heap; one in a ROMFS
(MicroPython >= 1.25) is executed where it lies, so only the objects it
creates use the heap.  The image is built with mpremote's own ROMFS writer
and placed per board (`romfs` in board.toml; docs/BOARDS.md "Flashed
layout"):

  file       the unix board: romfs.img on its filesystem, mapped read-only
             outside the heap by lib/rommap.mpy (firmware/rommap.c), as a
             board's memory-mapped flash partition is;
  partition  real boards: `mpremote romfs deploy` when the firmware has a
             ROMFS partition the image fits, else plain .mpy files (stock
             Pico W / ESP32 firmware has none).
"""
import contextlib
import io
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
IMAGE = "romfs.img"         # on the unix board's filesystem
MAPPER = "rommap.mpy"       # in its lib/

# Recursive remove on the board, for mpremote exec: plain runtime files
# would shadow the image (firmware/rtboot.py prefers lib/node when it exists).
RM_PLAIN = ("import os\ndef rm(p):\n try:\n  if os.stat(p)[0] & 0x4000:\n"
            "   for n in os.listdir(p):\n    rm(p + '/' + n)\n   os.rmdir(p)\n"
            "  else:\n   os.remove(p)\n except OSError:\n  pass\nrm('lib/node')")
# Prints the size of ROMFS partition 0, or 0 without one.
PROBE = ("try:\n import vfs\n print('ROMFS', len(vfs.rom_ioctl(2, 0)) if vfs.rom_ioctl(1) > 0 "
         "else 0)\nexcept Exception:\n print('ROMFS', 0)")


def build_image(rom):
    """<rom>.img from the tree `rom` (rebuilt only when a file changed)."""
    from mpremote.romfs import make_romfs
    img = rom + ".img"
    newest = max(os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(rom) for f in fs)
    if os.path.exists(img) and os.path.getmtime(img) >= newest:
        return img
    with contextlib.redirect_stdout(io.StringIO()):     # it prints a tree
        data = make_romfs(rom, mpy_cross=False)
    with open(img + ".tmp", "wb") as f:
        f.write(data)
    os.replace(img + ".tmp", img)
    return img


def mapper(log=print):
    """build/firmware/rommap-x64/rommap.mpy, built or found up to date; None
    (with a warning) when it cannot be built."""
    r = subprocess.run([sys.executable, os.path.join(FIRMWARE, "build_rommap.py")],
                       capture_output=True, text=True)
    path = r.stdout.strip().split("\n")[-1]
    if r.returncode != 0 or not os.path.exists(path):
        why = (r.stderr or r.stdout).strip()[-300:]
        log("WARNING: could not build %s (gcc needed), so the runtime goes on as plain "
            ".mpy files, loaded into the heap: %s" % (MAPPER, why))
        return None
    return path


def place(board, out_dir, img, log=print):
    """Put what the board's layout needs into out_dir; returns a summary."""
    rom = img[:-len(".img")]
    kib = os.path.getsize(img) // 1024
    for stale in (os.path.join(out_dir, IMAGE), os.path.join(out_dir, "lib", MAPPER)):
        if os.path.exists(stale):
            os.unlink(stale)
    if board.get("romfs") == "file":
        m = mapper(log)
        if m:
            shutil.copy(m, os.path.join(out_dir, "lib", MAPPER))
            shutil.copy(img, os.path.join(out_dir, IMAGE))
            return "runtime in %s (%d KiB, run in place)" % (IMAGE, kib)
        copy_plain(rom, out_dir)
        return "runtime as plain .mpy files"
    if board.get("romfs") == "partition":
        return "runtime in a %d KiB ROMFS image for the board's ROMFS partition" % kib
    copy_plain(rom, out_dir)
    return "runtime as plain .mpy files"


def copy_plain(rom, out_dir):
    shutil.copytree(os.path.join(rom, "lib"), os.path.join(out_dir, "lib"), dirs_exist_ok=True)


def partition_size(run):
    """Size of the board's ROMFS partition 0 (0: none).  `run(cmds)` runs an
    mpremote session and returns its output."""
    for line in run(["exec", PROBE]).splitlines():
        if line.startswith("ROMFS "):
            return int(line.split()[1])
    return 0
