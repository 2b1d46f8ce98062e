# What only MQTT 5 needs in node/core/mqtt.py (version=5, the gateway):
# property lists, CONNACK's properties, the broker's DISCONNECT and the
# MQTT 5 refusal texts.  Boards speak 3.1.1 and never import this, so none
# of it costs their heap.  We send empty property lists (plus CONNECT's
# Maximum Packet Size and Session Expiry); what the broker sends is checked
# and skipped, and the numeric values are handed back for the few the
# client acts on (Receive Maximum, Maximum Packet Size, Server Keep Alive).
from node.core.mqttwire import refused_text as _refused311

# MQTT 5 property ids by value size: 1, 2, 4 bytes; 0 = variable integer;
# 2-byte-length strings/binaries; 0x26 is a string pair.  Others: error.
_PSIZE = {1: 1, 0x17: 1, 0x19: 1, 0x24: 1, 0x25: 1, 0x28: 1, 0x29: 1, 0x2A: 1,
          0x13: 2, 0x21: 2, 0x22: 2, 0x23: 2, 2: 4, 0x11: 4, 0x18: 4, 0x27: 4,
          0x0B: 0}
_PSTR = (3, 8, 9, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F)

_REFUSED = {0x84: "unsupported protocol version", 0x85: "client identifier not valid",
            0x86: "bad user name or password", 0x87: "not authorized",
            0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned"}


class Disconnected:
    # The broker closed the connection with this reason code (e.g. 0x8B
    # shutting down, 0x8E session taken over).  The client is CLOSED.
    def __init__(self, code):
        self.code = code
        self.text = "broker disconnected us (reason 0x%02x)" % code


def refused_text(code):
    """The text for a CONNACK refusal code: MQTT 5's, or 3.1.1's (a 3.1.1
    broker refusing our level 5 CONNECT answers with code 1)."""
    return _REFUSED.get(code) or _refused311(code)


def control(c, t, body=None):
    """What MQTT 5 adds to control packet type t of client c.  The client
    (node/core/mqtt.py, mqttwire.py) calls only this, props() and
    refused_text(): few names in a board's 3.1.1 client, which never loads
    this file.
      1 CONNECT: its property list (bytes);
      2 CONNACK: apply its properties (from body[2]); None, or why it is
        malformed;
      14 DISCONNECT: the Disconnected event for body (its reason code)."""
    if t == 1:
        return _connect_props(c)
    if t == 2:
        return _connack(c, body)
    return Disconnected(body[0] if body else 0)


def _connect_props(c):
    """CONNECT's property list for client c.  Maximum Packet Size: the
    broker drops what we could not take instead of sending it (and so
    costing us the connection).  A kept session must outlive the connection
    (Session Expiry: never)."""
    p = b"\x27" + c.max_packet.to_bytes(4, "big")
    if not c.clean_session:
        p += b"\x11\xff\xff\xff\xff"
    return bytes((len(p),)) + p


def _connack(c, body):
    """Apply a CONNACK's properties (from body[2]) to client c: None, or
    why the CONNACK is malformed."""
    end, got = props(body, 2)
    if end != len(body):
        return "malformed CONNACK"
    rm = got.get(0x21)
    if rm == 0:
        return "CONNACK with Receive Maximum 0"
    if rm:
        c.receive_max = rm
    if got.get(0x27):   # a bigger PUBLISH would only get us disconnected
        c.server_max_packet = got[0x27]
    if got.get(0x13) is not None:   # the broker's keepalive wins
        c.keepalive = got[0x13]
    return None


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
    raise ValueError("bad variable length integer")


def props(b, i):
    # Check and skip an MQTT 5 property list at b[i]: (offset after it,
    # {id: int value} of the numeric ones).
    n, i = _getvar(b, i)
    end = i + n
    if end > len(b):
        raise ValueError("truncated properties")
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
                    raise ValueError("truncated property")
                i += 2 + ((b[i] << 8) | b[i + 1])
        else:
            raise ValueError("unknown property 0x%02x" % pid)
    if i != end:
        raise ValueError("property list overruns its length")
    return end, got
