# MQTT 5 property lists for node/core/mqtt.py (version=5 only: boards speak
# 3.1.1 and never import this).  We send empty lists (plus CONNECT's
# Maximum Packet Size); what the broker sends is checked and skipped, and
# the numeric values are handed back for the few the client acts on
# (Receive Maximum, Server Keep Alive).
from node.core.mqtt import MQTTError

# MQTT 5 property ids by value size: 1, 2, 4 bytes; 0 = variable integer;
# 2-byte-length strings/binaries; 0x26 is a string pair.  Others: error.
_PSIZE = {1: 1, 0x17: 1, 0x19: 1, 0x24: 1, 0x25: 1, 0x28: 1, 0x29: 1, 0x2A: 1,
          0x13: 2, 0x21: 2, 0x22: 2, 0x23: 2, 2: 4, 0x11: 4, 0x18: 4, 0x27: 4,
          0x0B: 0}
_PSTR = (3, 8, 9, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F)


def _getvar(b, i):
    # A variable byte integer at b[i]: (value, offset after it).
    v = 0
    for k in range(4):
        if i >= len(b):
            break
        c = b[i]
        i += 1
        v |= (c & 0x7F) << (7 * k)
        if not c & 0x80:
            return v, i
    raise MQTTError("bad variable length integer")


def props(b, i):
    # Check and skip an MQTT 5 property list at b[i]: (offset after it,
    # {id: int value} of the numeric ones).
    n, i = _getvar(b, i)
    end = i + n
    if end > len(b):
        raise MQTTError("truncated properties")
    got = {}
    while i < end:
        pid = b[i]
        i += 1
        sz = _PSIZE.get(pid)
        if sz == 0:
            got[pid], i = _getvar(b, i)
        elif sz:
            got[pid] = int.from_bytes(b[i:i + sz], "big")
            i += sz
        elif pid in _PSTR or pid == 0x26:
            for _ in range(2 if pid == 0x26 else 1):
                if i + 2 > end:
                    raise MQTTError("truncated property")
                i += 2 + ((b[i] << 8) | b[i + 1])
        else:
            raise MQTTError("unknown property 0x%02x" % pid)
    if i != end:
        raise MQTTError("property list overruns its length")
    return end, got
