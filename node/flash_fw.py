"""Is the board's firmware one the flashed runtime can run?  Checked on the
board before `aegis flash` changes anything on it (node/flash.py).

The runtime's .mpy files are .mpy format 6.3, which MicroPython 1.23 and
later load; older firmware would take the copy and then stop at boot with
"incompatible .mpy file".  wasm3.mpy is machine code for one architecture:
a board whose firmware reports another is not the board named by --board.
`sys.implementation._mpy` says both: format version | sub-version << 8 |
architecture << 10.
"""

# MicroPython's MP_NATIVE_ARCH_* numbers for the archs boards/ uses.
ARCHS = {"x64": 2, "armv6m": 4, "xtensawin": 10, "rv32imc": 11}
MPY_VERSION, MPY_SUB = 6, 3
_TAG = "AEGIS-FW"

# Run on the board; raises (so mpremote stops before its next command)
# with what the board reports.
_CODE = ("import sys\ni=sys.implementation\nm=getattr(i,'_mpy',0)\n"
         "if m&255!=%d or m>>8&3!=%d or m>>10 not in (0,%d):"
         "raise OSError('%s %%d %%d.%%d.%%d'%%((m,)+i.version[:3]))")


def check_code(board):
    """The check for `board`, as an `mpremote exec` argument."""
    return _CODE % (MPY_VERSION, MPY_SUB, ARCHS.get(board["mpy_arch"], 0), _TAG)


def explain(output, board, port):
    """The reason a flash must stop, from mpremote's output of check_code(),
    or None when the output is not that check's."""
    i = output.find(_TAG + " ")
    if i < 0:
        return None
    words = output[i + len(_TAG) + 1:].split(None, 1)
    try:
        m = int(words[0])
    except (IndexError, ValueError):
        return None
    version = "MicroPython " + (words[1].split()[0] if len(words) > 1 else "?")
    if m & 255 != MPY_VERSION or (m >> 8) & 3 != MPY_SUB:
        return ("the board on %s runs %s, which loads .mpy format %d.%d; the runtime is "
                ".mpy %d.%d, for MicroPython 1.23 or newer (built for %s). Install newer "
                "firmware first (docs/BOARDS.md \"Firmware\")"
                % (port, version, m & 255, (m >> 8) & 3, MPY_VERSION, MPY_SUB,
                   board.get("micropython", "?")))
    names = {v: k for k, v in ARCHS.items()}
    return ("the board on %s runs firmware for %s, but --board %s is %s: is that the "
            "right board? (boards/ holds one directory per board)"
            % (port, names.get(m >> 10, "architecture %d" % (m >> 10)), board["name"],
               board["mpy_arch"]))
