# aegis-edge board boot file: runs at power-up (real boards) or when
# `aegis flash --board unix` starts it.  Kept tiny: everything else is .mpy.
import sys

if "lib" not in sys.path:
    sys.path.append("lib")

from node.board import runtime

runtime.main("aegis.json")
