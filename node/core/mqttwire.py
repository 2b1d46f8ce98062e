# The MQTT wire vocabulary of the sans-I/O client in node/core/mqtt.py:
# its error, the events it hands out, the refusal texts and allowed flags
# of server packets, and the helpers that encode packets.  Import these
# through node.core.mqtt (which re-exports them); they live here only to
# keep the client's state machine in a file of its own.  Portable like all
# of node/core: CPython and MicroPython.

_WIRE_MAX = 268435455           # largest remaining length MQTT can express

# Packet types a server may send us, with the only flags MQTT allows on
# each; PUBLISH (3) carries its own flags.  Anything else is an error as soon
# as its first byte arrives, before any body is buffered.
_SERVER_FLAGS = {2: 0, 4: 0, 9: 0, 11: 0, 13: 0, 14: 0}


def refused_text(code):
    """The text for a CONNACK refusal code.  Built on call: a refusal is
    rare, and a table kept from import on would cost a board's heap."""
    return {1: "unacceptable protocol version", 2: "identifier rejected",
            3: "server unavailable", 4: "bad user name or password",
            5: "not authorized", 0x84: "unsupported protocol version",
            0x85: "client identifier not valid", 0x86: "bad user name or password",
            0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy",
            0x8A: "banned"}.get(code, "refused")


class MQTTError(ValueError):
    pass


class Connected:
    def __init__(self, session_present):
        self.session_present = session_present


class ConnectRefused:
    def __init__(self, code, text):
        self.code = code
        self.text = text


class Message:
    # payload is a memoryview over a buffer owned by this message alone (no
    # copy of a 64 KiB module chunk on a 192 KiB heap); bytes(m.payload)
    # copies it when needed.
    def __init__(self, topic, payload, qos, retain, dup, packet_id, gen):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self._gen = gen


class _Done:
    def __init__(self, packet_id, granted=None):
        self.packet_id = packet_id
        self.granted = granted


class Published(_Done):         # PUBACK for our QoS 1 publish
    # code: MQTT 5 reason code (0 success, 0x10 no subscribers, >= 0x80 the
    # broker refused it, e.g. 0x87 not authorized); always 0 on 3.1.1.
    def __init__(self, packet_id, code=0):
        self.packet_id = packet_id
        self.code = code


class Subscribed(_Done):        # granted: a code per filter, 0/1/2 or 0x80 refused
    pass


class Unsubscribed(_Done):
    pass


class PingTimeout:
    # No PINGRESP (or no CONNACK) within ping_timeout: the link is dead or
    # half-open.  The client is CLOSED; the driver reconnects.
    pass


class ProtocolError:
    def __init__(self, text):
        self.text = text


class Disconnected:
    # MQTT 5: the broker closed the connection with this reason code (e.g.
    # 0x8B shutting down, 0x8E session taken over).  The client is CLOSED.
    def __init__(self, code):
        self.code = code
        self.text = "broker disconnected us (reason 0x%02x)" % code


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


def _str(s):
    b = s.encode() if type(s) is str else bytes(s)
    if len(b) > 0xFFFF:
        raise MQTTError("string longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + b


def _check_topic(topic, wild):
    if type(topic) is not str or not topic or "\x00" in topic:
        raise MQTTError("topic must be non-empty text without NUL")
    if not wild and ("+" in topic or "#" in topic):
        raise MQTTError("cannot publish to a wildcard topic %r" % topic)


def _packet(first, parts, size):
    # One buffer of exactly the right size: a large payload is copied once.
    if size > _WIRE_MAX:
        raise MQTTError("packet too large for MQTT")
    head = _varint(size)
    buf = bytearray(1 + len(head) + size)
    buf[0] = first
    i = 1 + len(head)
    buf[1:i] = head
    for p in parts:
        n = len(p)
        buf[i:i + n] = p
        i += n
    return buf
