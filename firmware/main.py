# aegis-edge board boot file: runs at power-up (real boards) or when
# `aegis flash --board unix` starts it.  Kept tiny: everything else is .mpy,
# run in place from a ROMFS when the board has one (docs/BOARDS.md
# "Flashed layout"; bench/sec_boards.py runs this file up to the last line).
#
# The runtime slot is picked by rtboot.py next to this file (docs/BOARDS.md
# "Runtime updates over the mesh"); only serial flashing changes either.
# MicroPython compiles both from source into the heap: rtboot.py's logic is
# needed once per boot, so it is compiled, run and dropped again here
# instead of staying resident while the runtime runs.
import sys


def load():
    g = {}  # type: dict
    with open("rtboot.py") as f:    # by path: never a runtime's lib/rtboot
        exec(f.read(), g)
    return g["load"]()      # (runtime, slot): slot chosen (or fallen back), imported


def restart(cfg):
    """The runtime asked for a restart (after an update): a board resets;
    the Unix port (no reset) imports again from the slot the marker now
    names, and runs that."""
    global runtime
    while True:
        if sys.platform != "linux":
            import machine
            machine.reset()
        runtime = None      # the old runtime's objects go before the new load
        runtime, s = load()
        if runtime.main(cfg, s) != "restart":
            return


runtime, slot = load()      # slot chosen, runtime imported: the heap the bench measures
runtime.main("aegis.json", slot) == "restart" and restart("aegis.json")  # returns only to restart
