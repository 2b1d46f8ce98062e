# The MQTT wire side of the sans-I/O client in node/core/mqtt.py: its
# error, the events it hands out, the refusal texts, the helpers that
# encode packets, and the decoder of what the broker sends (_feed and
# _handle, the work of Client.receive_data, on the client's own state).
# Import these through node.core.mqtt (which re-exports them); they live
# here to keep each file small.  Portable like all of node/core: CPython
# and MicroPython.  MQTT 5's own parts are in node/core/mqtt5.py.
#
# Board heap (docs/BOARDS.md "Heap budget"): every class costs a board
# ~260 bytes for good, every long string constant ~32, so the events are
# only the ones a driver tells apart, and texts are joined into one
# constant per file.

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# Bad input: a ValueError with a clear message (an own exception class
# would cost every board a class for nothing).
MQTTError = ValueError

# Client.state values (node/core/mqtt.py) the decoder checks and sets.
_CONNECTING = const(1)
_CONNECTED = const(2)
_CLOSED = const(3)

# Why the decoder refuses what the broker sent, by number (_text(n)).
_E_TYPE = const(0)
_E_LENGTH = const(1)
_E_TOO_BIG = const(2)
_E_CONNACK = const(3)
_E_EARLY = const(4)
_E_QOS2 = const(5)
_E_PUBLISH = const(6)
_E_UTF8 = const(7)
_E_PID0 = const(8)
_E_PUBACK = const(9)
_E_SUBACK = const(10)
_E_SUBACK_CODE = const(11)
_E_SUBACK_COUNT = const(12)
_E_PINGRESP = const(13)
# A PUBLISH over max_packet that a Client with drop_big skips: the start
# of its body kept, for its topic and packet id.
_KEEP = const(512)


def _text(n):
    # One string constant for all of them, one per line: a board keeps one
    # heap object instead of one per text.
    return ("unexpected packet type %d flags %d\nremaining length longer than 4 bytes\n"
            "packet of %d bytes exceeds limit %d\nmalformed or unexpected CONNACK\n"
            "packet type %d before CONNACK\nQoS 2 PUBLISH, never subscribed at QoS 2\n"
            "truncated PUBLISH\nPUBLISH topic is not UTF-8\nPUBLISH with packet id 0\n"
            "malformed PUBACK/UNSUBACK\ntruncated SUBACK\nbad SUBACK return code %d\n"
            "SUBACK has %d codes for %d filters\nmalformed PINGRESP").split("\n")[n]


def refused_text(code):
    """The text for an MQTT 3.1.1 CONNACK refusal code (MQTT 5's:
    node/core/mqtt5.py)."""
    return ("unacceptable protocol version\nidentifier rejected\nserver unavailable\n"
            "bad user name or password\nnot authorized\nrefused").split("\n")[
                code - 1 if 0 < code < 6 else 5]


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
    def __init__(self, topic, payload, qos, retain, dup, packet_id, _gen):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self._gen = _gen


class Published:                # PUBACK for our QoS 1 publish
    # code: MQTT 5 reason code (0 success, 0x10 no subscribers, >= 0x80 the
    # broker refused it, e.g. 0x87 not authorized); always 0 on 3.1.1.
    def __init__(self, packet_id, code=0):
        self.packet_id = packet_id
        self.code = code


class Subscribed:               # granted: a code per filter, 0/1/2 or 0x80 refused
    def __init__(self, packet_id, granted=None):
        self.packet_id = packet_id
        self.granted = granted


class Unsubscribed(Subscribed):  # granted is None
    pass


class PingTimeout:
    # No PINGRESP (or no CONNACK) within ping_timeout: the link is dead or
    # half-open.  The client is CLOSED; the driver reconnects.
    pass


class ProtocolError:
    def __init__(self, text):
        self.text = text


def _str(s):
    b = s.encode() if type(s) is str else bytes(s)
    if len(b) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + b


def _check_topic(topic, filter):
    # filter: a subscription filter, where wildcards are allowed.
    if type(topic) is not str or not topic or "\x00" in topic:
        raise ValueError("topic must be non-empty text without NUL")
    if not filter and ("+" in topic or "#" in topic):
        raise ValueError("cannot publish to a wildcard topic %r" % topic)


def _packet(t, data, size):
    # The packet with first byte t (type and flags) and the bytes-likes in
    # data after it, size bytes in all, in one buffer of exactly the right
    # size: a large payload is copied once.
    if size > 268435455:        # the largest remaining length MQTT can express
        raise ValueError("packet too large for MQTT")
    head = bytearray()          # the remaining length, 7 bits a byte
    n = size
    while True:
        b = n & 0x7F
        n >>= 7
        head.append(b | 0x80 if n else b)
        if not n:
            break
    buf = bytearray(1 + len(head) + size)
    buf[0] = t
    i = 1 + len(head)
    buf[1:i] = head
    for p in data:
        n = len(p)
        buf[i:i + n] = p
        i += n
    return buf


# --- the decoder: Client.receive_data's work, on client c's state ---------


def _error(c, why, *args):
    # The broker sent something we refuse: c is CLOSED, the driver drops the
    # connection.  why: a text, or a _text() number with its % arguments.
    if type(why) is int:
        why = _text(why)
        if args:
            why %= args
    c.state = _CLOSED
    c._buf = None
    c._events.append(ProtocolError(why))


def _feed(c, data):
    # Argument names the firmware has (data): no qstr of their own.
    mv = data       # a memoryview (Client.receive_data)
    i = 0
    n = len(mv)
    while i < n and c.state != _CLOSED:
        if c._head is None:      # at a packet's first byte
            b = mv[i]
            if b == 0x40 and n - i >= 4 and mv[i + 1] == 2 and c.state == _CONNECTED:
                # Fastest path: a bare PUBACK (a stream of them after a burst).
                pid = (mv[i + 2] << 8) | mv[i + 3]
                i += 4
                inf = c._inflight
                if inf and inf[0][0] == pid:        # acks come in order
                    del inf[0]
                    c._ids.remove(pid)
                    c._events.append(Published(pid))
                else:
                    _handle(c, 0x40, bytearray(mv[i - 2:i]))
                continue
            # The types a server may send, with the only flags MQTT
            # allows (CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP,
            # DISCONNECT on MQTT 5), or a PUBLISH but not at QoS 3.
            # Anything else fails here, before any body is buffered.
            t = b >> 4
            if not ((b & 6) != 6 if t == 3 else b in b"\x20\x40\x90\xb0\xd0\xe0"
                    and (t != 14 or c.version == 5)):
                _error(c, _E_TYPE, t, b & 15)
                return
            if n - i >= 2 and mv[i + 1] < 0x80 and n - i - 2 >= mv[i + 1] \
                    and 2 + mv[i + 1] <= c.max_packet:
                # Fast path: a whole small packet (PUBACKs, events) in view.
                rl = mv[i + 1]
                i += 2 + rl
                _handle(c, b, bytearray(mv[i - rl:i]))
                continue
            c._head = b
            c._len = 0
            c._nlen = 0
            i += 1
            continue
        if c._buf is None:       # in the remaining length
            b = mv[i]
            i += 1
            c._len |= (b & 0x7F) << (7 * c._nlen)
            c._nlen += 1
            if b & 0x80:
                if c._nlen == 4:
                    _error(c, _E_LENGTH)
                    return
                continue
            if 1 + c._nlen + c._len > c.max_packet:
                # A 3.1.1 broker cannot know our limit (MQTT 5 tells it):
                # with drop_big a PUBLISH is skipped, not buffered, and
                # reaches the app without payload, to count and ack --
                # else the broker resends it on every reconnect.
                if not (c.drop_big and c._head >> 4 == 3 and c.version == 4):
                    _error(c, _E_TOO_BIG, 1 + c._nlen + c._len, c.max_packet)
                    return
                c._buf = bytearray(min(c._len - 1, _KEEP))     # shorter: skipping
            else:
                # The body gets its own exact-size buffer up front: no
                # regrowth while a large packet trickles in.
                c._buf = bytearray(c._len)
            c._n = 0
        else:
            k = min(n - i, c._len - c._n)
            j = min(k, len(c._buf) - c._n)      # all of it unless skipping
            if j > 0:
                c._buf[c._n:c._n + j] = mv[i:i + j]
            c._n += k
            i += k
        if c._n == c._len:
            hdr, body = c._head, c._buf
            c._head = None
            c._buf = None
            if len(body) == c._len:
                _handle(c, hdr, body)
            else:
                _dropped(c, hdr, body)


def _dropped(c, hdr, body):
    # The start of a PUBLISH too big to keep: its topic and packet id must
    # be in it (else the connection ends, as without drop_big).
    qos = (hdr >> 1) & 3
    n = len(body)
    tl = (body[0] << 8) | body[1] if n > 1 else n
    if 2 + tl + (2 if qos else 0) > n:
        return _error(c, _E_TOO_BIG, 1 + c._nlen + c._len, c.max_packet)
    _handle(c, hdr, body[:2 + tl + (2 if qos else 0)])
    ev = c._events[-1] if c._events else None
    if type(ev) is Message:
        ev.payload = None


def _handle(c, hdr, data):
    # One whole packet: first byte hdr, its body in data.
    body = data     # this packet's own buffer (no header)
    t = hdr >> 4
    n = len(body)
    v5 = c.version == 5
    if t == 2:
        # MQTT 5 CONNACKs carry properties; a 3.1.1 broker refusing our
        # level 5 CONNECT answers in its own 2-byte form.
        if c.state != _CONNECTING or n < 2 or (n != 2 and not v5) or body[0] & 0xFE:
            return _error(c, _E_CONNACK)
        if n > 2:
            why = c._m5.control(c, 2, body)
            if why:
                return _error(c, why)
        c._ping_at = None
        code = body[1]
        if code:
            c.state = _CLOSED
            c._events.append(ConnectRefused(
                code, c._m5.refused_text(code) if v5 else refused_text(code)))
            return
        c.state = _CONNECTED
        c._events.append(Connected(bool(body[0] & 1)))
        for e in c._inflight:     # MQTT 3.1.1 4.4: resend, in order
            if e[2]:
                e[1][0] |= 0x08
            e[2] = True
            c._send(e[1], c._t)
        return
    if c.state != _CONNECTED:
        return _error(c, _E_EARLY, t)
    if t == 3:
        qos = (hdr >> 1) & 3
        if qos == 2:
            return _error(c, _E_QOS2)
        if n < 2:
            return _error(c, _E_PUBLISH)
        tl = (body[0] << 8) | body[1]
        off = 2 + tl + (2 if qos else 0)
        if off > n or tl == 0:
            return _error(c, _E_PUBLISH)
        try:
            topic = str(body[2:2 + tl], "utf-8")
        except Exception:
            return _error(c, _E_UTF8)
        pid = 0
        if qos:
            pid = (body[2 + tl] << 8) | body[3 + tl]
            if not pid:
                return _error(c, _E_PID0)
        if v5:
            off = c._m5.props(body, off)[0]
        c._events.append(Message(topic, memoryview(body)[off:], qos, bool(hdr & 1),
                                 bool(hdr & 8), pid, c._gen))
    elif t == 4 or t == 11:
        # MQTT 5 may add a reason code (PUBACK: one, UNSUBACK: one per
        # filter) and properties.
        if n < 2 or (n != 2 and not v5):
            return _error(c, _E_PUBACK)
        pid = (body[0] << 8) | body[1]
        if t == 4:
            code = body[2] if n > 2 else 0
            if n > 3 and c._m5.props(body, 3)[0] != n:
                return _error(c, _E_PUBACK)
            inf = c._inflight
            for j in range(len(inf)):
                if inf[j][0] == pid:
                    del inf[j]
                    c._ids.remove(pid)
                    c._events.append(Published(pid, code))
                    break
            # an unknown id is a late duplicate ack after a resend: ignore
        elif c._pending.pop(pid, None) is not None:
            c._events.append(Unsubscribed(pid))
    elif t == 9:
        if n < 3:
            return _error(c, _E_SUBACK)
        pid = (body[0] << 8) | body[1]
        granted = list(body[c._m5.props(body, 2)[0] if v5 else 2:])
        for g in granted:
            if g not in (0, 1, 2, 0x80) and not (v5 and g > 0x80):
                return _error(c, _E_SUBACK_CODE, g)
        want = c._pending.pop(pid, None)
        if want is not None:
            if want != len(granted):
                return _error(c, _E_SUBACK_COUNT, len(granted), want)
            c._events.append(Subscribed(pid, granted))
    elif t == 13:
        if n:
            return _error(c, _E_PINGRESP)
        c._ping_at = None
    elif t == 14:       # MQTT 5 only (_feed): the broker hangs up
        c.state = _CLOSED
        c._events.append(c._m5.control(c, 14, body))
