"""Is the board's firmware one the flashed runtime can run?  Checked on the
board before `aegis flash` changes anything on it (node/flash.py).

`sys.implementation._mpy` says what .mpy files the firmware loads: format
version | sub-version << 8 | architecture << 10 (MicroPython 1.27 adds
flags from bit 16).  The runtime's .mpy files are bytecode only: any
format 6 firmware loads them, but the runtime uses what MicroPython 1.23
brought (the `vfs` module, `ssl.SSLContext`), so older firmware is
refused.  An architecture other than --board's means another chip: its
pins and chunk size would be wrong too.  wasm3.mpy, machine code, loads
only where sub-version and architecture match exactly; elsewhere the
board runs every module in proxy mode, which the flash says.
"""

# MicroPython's MP_NATIVE_ARCH_* numbers for the archs boards/ uses.
ARCHS = {"x64": 2, "armv6m": 4, "xtensawin": 10, "rv32imc": 11}
MPY_VERSION, MPY_SUB, MIN_VERSION = 6, 3, (1, 23)
_TAG = "AEGIS-FW"

# Run on the board: raises (so mpremote stops before its next command)
# with what the board reports, or prints a warning line.
_CODE = ("import sys\ni=sys.implementation\nm=getattr(i,'_mpy',0)\na=m>>10&63\n"
         "if m&255!=%d or i.version[:2]<%r or a not in(0,%d):"
         "raise OSError('%s %%d %%d.%%d.%%d'%%((m,)+i.version[:3]))\n"
         "if a!=%d or m>>8&3!=%d:print('%s-NATIVE %%d'%%m)")


def check_code(board):
    """The check for `board`, as an `mpremote exec` argument."""
    arch = ARCHS.get(board["mpy_arch"], 0)
    return _CODE % (MPY_VERSION, MIN_VERSION, arch, _TAG, arch, MPY_SUB, _TAG)


def explain(output, board, port):
    """The reason a flash must stop, from mpremote's output of check_code(),
    or None when the output is not that check's."""
    i = output.find(_TAG + " ")
    if i < 0:
        return None
    words = output[i + len(_TAG) + 1:].split(None, 1)
    try:
        m = int(words[0])
        v = tuple(int(x) for x in words[1].split()[0].split("."))
    except (IndexError, ValueError):
        return None
    arch = (m >> 10) & 63
    if m & 255 != MPY_VERSION or v[:2] < MIN_VERSION:
        return ("the board on %s runs MicroPython %s (.mpy format %d); the runtime needs "
                "MicroPython %d.%d or newer (it is built for %s). Install newer firmware "
                "first (docs/BOARDS.md \"Firmware\")"
                % (port, ".".join(map(str, v)), m & 255, MIN_VERSION[0], MIN_VERSION[1],
                   board.get("micropython", "?")))
    names = {n: k for k, n in ARCHS.items()}
    return ("the board on %s runs firmware for %s, but --board %s is %s: is that the "
            "right board? (boards/ holds one directory per board)"
            % (port, names.get(arch, "architecture %d" % arch), board["name"],
               board["mpy_arch"]))


def native_note(output):
    """What to tell the user when the check printed that this firmware
    cannot load wasm3.mpy, else None."""
    i = output.find(_TAG + "-NATIVE ")
    if i < 0:
        return None
    m = int(output[i + len(_TAG) + 8:].split()[0])
    return ("NOTE: this firmware loads .mpy %d.%d machine code for architecture %d, "
            "not wasm3.mpy's (%d.%d): the board runs every module in proxy mode"
            % (m & 255, (m >> 8) & 3, (m >> 10) & 63, MPY_VERSION, MPY_SUB))
