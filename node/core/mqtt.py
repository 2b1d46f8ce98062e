# A sans-I/O MQTT 3.1.1 / 5 client: bytes and `now` (ms) in, events and bytes out.
#
# Why not umqtt.simple: it blocks the board until each PUBACK and cannot
# receive a module push while it publishes.  This is the h11/aioquic shape
# instead: the driver (node/board/mqtt_async.py on boards,
# node/mqtt/aio_link.py on gateways) owns the socket and the clock; this
# file owns the protocol, runs unchanged on CPython and MicroPython, and
# never raises out of receive_data (a hostile broker gets a ProtocolError
# event and the driver drops the connection).  Bad arguments raise
# ValueError (MQTTError is its name here).
#
#   c = Client("node-1", keepalive=30)
#   c.connect(now);  sock.write(c.data_to_send())
#   c.receive_data(sock.read(), now); ev = c.next_event()   # until None
#   c.tick(now) about once a second: keepalive pings and answer timeouts.
#   After any connection loss: c.reset(); c.connect(now) on the new socket.
#
# Inbound QoS 1 is acked only by `c.ack(msg)` (unless auto_ack=True): the
# app acks after it has durably handled the message, so a crash before that
# makes the broker redeliver (at-least-once).  An ack for a message from an
# earlier connection is ignored: the broker redelivers it on the new one.
#
# Outbound QoS 1 publishes stay in a bounded in-flight window until their
# PUBACK; publish() returns None when it is full (back off).  They survive
# reset() and are sent again, in order and with DUP=1, after the next
# CONNACK, as MQTT 3.1.1 section 4.4 requires.  QoS 2 is not supported: we
# never ask for it, so a QoS 2 PUBLISH from the broker is a protocol error.
#
# version=5 (the gateway; boards use 3.1.1): the same packets with empty
# property lists, the "no local" subscription option (filters as (f, qos,
# no_local)), reason codes on PUBACK (Published.code, >= 0x80 is a refusal)
# and on a broker's DISCONNECT (node.core.mqtt5.Disconnected), and the
# broker's Receive Maximum (CONNACK) lowering the in-flight window.  All
# that only MQTT 5 needs (properties checked and skipped, CONNACK's, the
# refusal texts) is in node/core/mqtt5.py, loaded for version=5 only: a
# board's 3.1.1 client never pays for it.  A 3.1.1 broker refuses a level 5
# CONNECT with return code 1: ConnectRefused(1); the driver then retries
# with version=4.

# The events, error, packet helpers and the decoder of what the broker sends
# (node/core/mqttwire.py), re-exported: users keep importing them from here.
from node.core.mqttwire import (  # noqa: F401
    MQTTError, Connected, ConnectRefused, Message, Published, Subscribed, Unsubscribed,
    PingTimeout, ProtocolError, _str, _check_topic, _packet, _error, _feed)

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# Client.state (numbers only: a name would be one more qstr on a board):
_IDLE = const(0)        # no CONNECT sent on this connection yet (fresh or reset)
_CONNECTING = const(1)  # CONNECT queued, waiting for CONNACK
_CONNECTED = const(2)
_CLOSED = const(3)      # refused, timed out, protocol error or disconnect(): reset()

_MAX_PACKET = const(70 * 1024)  # default inbound limit; boards size it to their heap

# The client's error texts by number (_text(n); the decoder's are in
# node/core/mqttwire.py).
_E_VERSION = const(0)
_E_EMPTY_ID = const(1)
_E_PASSWORD = const(2)
_E_WILL_QOS = const(3)
_E_KEEPALIVE = const(4)
_E_FRESH = const(5)
_E_QOS = const(6)
_E_NOT_CONNECTED = const(7)
_E_NO_FILTERS = const(8)
_E_SUB_QOS = const(9)
_E_OVER_MAX = const(10)
_E_MEMORY = const(11)
_E_INTERNAL = const(12)


def _text(n):
    # One string constant for all of them, one per line: a board keeps one
    # heap object instead of one per text.
    return ("MQTT version must be 4 (3.1.1) or 5\nan empty client id needs clean_session=True\n"
            "MQTT 3.1.1 allows a password only with a user name\nwill QoS must be 0, 1 or 2\n"
            "keepalive must be 0..65535 s\n"
            "connect() needs a fresh connection: call reset() first\n"
            "QoS must be 0 or 1\nnot connected\nno filters\nsubscription QoS must be 0 or 1\n"
            "a %d-byte PUBLISH is over the broker's Maximum Packet Size (%d)\n"
            "out of memory for a %d byte packet\ninternal error: %r").split("\n")[n]


class Client:
    # MQTT 5 only, set on the instance for version=5 (class defaults keep
    # a board's 3.1.1 client one dict size smaller): node/core/mqtt5.py, and
    # per connection the broker's Receive Maximum and Maximum Packet Size
    # (0: none) from its CONNACK.
    _m5 = None
    receive_max = 0xFFFF
    server_max_packet = 0
    # 3.1.1: a PUBLISH over max_packet arrives as a Message with payload
    # None (its body skipped) instead of ending the connection (boards).
    drop_big = False

    def __init__(self, client_id, keepalive=30, clean_session=False, will=None,
                 username=None, password=None, max_packet=_MAX_PACKET,
                 max_inflight=8, ping_timeout=10000, auto_ack=False, version=4):
        if version not in (4, 5):
            raise ValueError(_text(_E_VERSION))
        if not client_id and not clean_session:
            raise ValueError(_text(_E_EMPTY_ID))
        if password is not None and username is None:
            raise ValueError(_text(_E_PASSWORD))
        if will is not None:
            _check_topic(will[0], False)
            if will[2] not in (0, 1, 2):
                raise ValueError(_text(_E_WILL_QOS))
        if not 0 <= keepalive <= 0xFFFF:
            raise ValueError(_text(_E_KEEPALIVE))
        self.client_id = client_id
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.will = will
        self.username = username
        self.password = password
        self.max_packet = max_packet
        self.max_inflight = max_inflight
        self.ping_timeout = ping_timeout
        self.auto_ack = auto_ack
        self.version = version
        if version == 5:    # boards speak 3.1.1 and never load this
            from node.core import mqtt5
            self._m5 = mqtt5
        self._inflight = []     # [packet_id, packet bytearray, sent] in send order
        self._ids = set()       # their packet ids
        self._last_topic = None  # the last topic published, and its encoding
        self._last_t = b""
        self._seq = 0           # the last packet id handed out
        self._gen = 0           # connection generation, to drop stale acks
        self._events = []       # kept across reset(): a PUBACK read just before
                                # the link died must still reach the app
        self._t = 0             # the last `now` we were given
        self.reset()

    # --- connection lifecycle ------------------------------------------

    def reset(self):
        """Forget the connection (not the session): call for every new socket."""
        self.state = _IDLE
        self._out = []
        self._pending = {}      # SUBSCRIBE/UNSUBSCRIBE packet_id -> filter count
        self._head = None       # first byte of the packet being read
        self._len = 0           # its remaining length
        self._nlen = 0          # bytes of that length read so far
        self._buf = None        # its body, once the length is known
        self._n = 0             # bytes of the body read so far
        self._ping_at = None    # when the unanswered PINGREQ (or CONNECT) went out
        self._tx = 0
        self._gen += 1
        if self._m5 is not None:    # until this connection's CONNACK says
            self.receive_max = 0xFFFF
            self.server_max_packet = 0

    def connect(self, now):
        if self.state != _IDLE:
            raise ValueError(_text(_E_FRESH))
        will, user, pw = self.will, self.username, self.password
        flags = (0x02 if self.clean_session else 0) | (0x80 if user is not None else 0) \
            | (0x40 if pw is not None else 0)
        if will is not None:
            flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
        # Protocol name and level, flags, keepalive.
        parts = [b"\x00\x04MQTT" + bytes((self.version, flags))
                 + self.keepalive.to_bytes(2, "big")]
        v5 = self.version == 5
        if v5:
            parts.append(self._m5.control(self, 1))
        parts.append(_str(self.client_id))
        if will is not None:
            if v5:
                parts.append(b"\x00")      # no will properties
            parts.append(_str(will[0]))
            parts.append(_str(will[1]))
        if user is not None:
            parts.append(_str(user))
        if pw is not None:
            parts.append(_str(pw))
        self._send(_packet(0x10, parts, sum(len(p) for p in parts)), now)
        self.state = _CONNECTING
        self._ping_at = now     # the CONNACK wait uses the ping timeout too

    def disconnect(self):
        """Clean close: the broker discards the will.  Unacked publishes stay."""
        if self.state == _CONNECTED:
            self._out.append(bytes((0xE0, 0)))     # DISCONNECT
        self.state = _CLOSED

    # --- outgoing ---------------------------------------------------------

    def publish(self, topic, payload, qos=0, retain=False, now=None):
        """0 for QoS 0, the packet id for QoS 1, or None when not accepted
        now (window full, or QoS 0 while not connected): back off.
        ValueError for a bad topic or QoS, and (MQTT 5) for a packet over
        the broker's Maximum Packet Size."""
        if topic == self._last_topic:       # a stream to one topic: checked once
            t = self._last_t
        else:
            _check_topic(topic, False)
            t = _str(topic)
            self._last_topic = topic
            self._last_t = t
        if qos not in (0, 1):
            raise ValueError(_text(_E_QOS))
        if type(payload) is str:
            payload = payload.encode()
        if now is None:
            now = self._t
        props = b"\x00" if self.version == 5 else b""     # MQTT 5: no properties
        first = 0x30 | (qos << 1) | (1 if retain else 0)
        if qos == 0:
            if self.state != _CONNECTED:
                return None
            pkt = _packet(first, (t, props, payload), len(t) + len(props) + len(payload))
        else:
            if len(self._inflight) >= self.window():
                return None
            pid = self._next()
            pkt = _packet(first, (t, pid.to_bytes(2, "big"), props, payload),
                          len(t) + 2 + len(props) + len(payload))
        m = self.server_max_packet
        if m and len(pkt) > m:      # it would only get us disconnected
            raise ValueError(_text(_E_OVER_MAX) % (len(pkt), m))
        if qos == 0:
            self._send(pkt, now)
            return 0
        e = [pid, pkt, False]
        self._inflight.append(e)
        self._ids.add(pid)
        if self.state == _CONNECTED:    # else it goes out after the CONNACK
            e[2] = True
            self._send(pkt, now)
        return pid

    def window(self):
        """How many QoS 1 publishes may be unacked: ours, or the broker's
        Receive Maximum (MQTT 5) if lower."""
        return min(self.max_inflight, self.receive_max)

    def subscribe(self, filters, now=None, _first=0x82):
        """filters: [(filter, qos)] or [(filter, qos, no_local)] with qos 0
        or 1; no_local (MQTT 5 only; ignored on 3.1.1): the broker does not
        send back our own publishes.  Returns the packet id."""
        with_qos = _first == 0x82      # else UNSUBSCRIBE: plain filters
        if self.state != _CONNECTED:
            raise ValueError(_text(_E_NOT_CONNECTED))
        if not filters:
            raise ValueError(_text(_E_NO_FILTERS))
        pid = self._next()
        parts = [pid.to_bytes(2, "big")]
        v5 = self.version == 5
        if v5:
            parts.append(b"\x00")
        for f in filters:
            topic = f[0] if with_qos else f
            _check_topic(topic, True)
            parts.append(_str(topic))
            if with_qos:
                if f[1] not in (0, 1):
                    raise ValueError(_text(_E_SUB_QOS))
                nl = v5 and len(f) > 2 and f[2]
                parts.append(bytes((f[1] | (4 if nl else 0),)))
        self._pending[pid] = len(filters)
        self._send(_packet(_first, parts, sum(len(p) for p in parts)),
                   self._t if now is None else now)
        return pid

    def unsubscribe(self, filters, now=None):
        return self.subscribe(filters, now, 0xA2)

    def ack(self, msg):
        """PUBACK an inbound QoS 1 message once it is durably handled.  False
        when there is nothing to ack (QoS 0, or an earlier connection's)."""
        if msg.qos != 1 or msg._gen != self._gen or self.state != _CONNECTED:
            return False
        pid = msg.packet_id
        self._out.append(bytes((0x40, 2, pid >> 8, pid & 0xFF)))
        msg._gen = -1       # acking twice sends one PUBACK
        return True

    def inflight(self):
        return len(self._inflight)

    def data_to_send(self, limit=0):
        """What is queued for the socket, and forget it (may be b"").  With
        `limit`, whole packets up to about that many bytes (at least one):
        a board then never needs one large contiguous block for a burst."""
        o = self._out
        if not o:
            return b""
        if limit:
            n, k = len(o[0]), 1
            while k < len(o) and n + len(o[k]) <= limit:
                n += len(o[k])
                k += 1
            out, self._out = o[:k], o[k:]
            return out[0] if k == 1 else b"".join(out)
        self._out = []
        if len(o) == 1:
            return o[0]
        buf = bytearray()
        for p in o:
            buf.extend(p)
        return buf

    def tick(self, now):
        """Keepalive: PINGREQ when we sent nothing for `keepalive` s, and
        PingTimeout when a PINGREQ or the CONNECT gets no answer in time."""
        self._t = now
        st = self.state
        if st == _CONNECTING or (st == _CONNECTED and self._ping_at is not None):
            if now - self._ping_at >= self.ping_timeout:
                self.state = _CLOSED
                self._events.append(PingTimeout())
            return
        if st == _CONNECTED and self.keepalive:
            if now - self._tx >= self.keepalive * 1000:
                self._send(bytes((0xC0, 0)), now)     # PINGREQ
                self._ping_at = now

    def _send(self, data, now):
        self._out.append(data)
        self._tx = now

    def _next(self):
        # The next free packet id.
        busy = self._ids
        while True:
            self._seq = self._seq % 0xFFFF + 1
            if self._seq not in busy and self._seq not in self._pending:
                return self._seq

    # --- incoming ---------------------------------------------------------

    def next_event(self):
        if not self._events:
            return None
        ev = self._events.pop(0)
        if self.auto_ack and type(ev) is Message:
            self.ack(ev)
        return ev

    def events(self):
        """Every pending event at once (a driver's batch), oldest first."""
        evs = self._events
        self._events = []
        if self.auto_ack:
            for ev in evs:
                if type(ev) is Message:
                    self.ack(ev)
        return evs

    def receive_data(self, data, now):
        """Feed bytes from the socket, split anywhere.  Never raises (the
        decoder, _feed, is in node/core/mqttwire.py)."""
        self._t = now
        if self.state == _CLOSED or self.state == _IDLE:
            return
        try:
            _feed(self, memoryview(data))
        except ValueError as e:     # a malformed MQTT 5 property list (mqtt5.py)
            _error(self, str(e))
        except MemoryError:
            _error(self, _text(_E_MEMORY) % self._len)
        except Exception as e:       # a bug must not take the board down
            _error(self, _text(_E_INTERNAL) % (e,))
