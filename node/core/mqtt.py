# A sans-I/O MQTT 3.1.1 / 5 client: bytes and `now` (ms) in, events and bytes out.
#
# Why not umqtt.simple: it blocks the board until each PUBACK and cannot
# receive a module push while it publishes.  This is the h11/aioquic shape
# instead: the driver (node/board/mqtt_async.py on boards,
# node/mqtt/aio_link.py on gateways) owns the socket and the clock; this file owns the protocol, runs unchanged on
# CPython and MicroPython, and never raises out of receive_data (a hostile
# broker gets a ProtocolError event and the driver drops the connection).
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
# and on a broker's DISCONNECT (Disconnected), and the broker's Receive
# Maximum (CONNACK) lowering the in-flight window.  Properties we receive are
# checked and skipped (node/core/mqtt5.py, loaded for version=5 only).  A 3.1.1 broker refuses a level 5 CONNECT with return
# code 1: ConnectRefused(1); the driver then retries with version=4.

# The events, error and packet helpers (node/core/mqttwire.py), re-exported:
# users keep importing them from here.
from node.core.mqttwire import (  # noqa: F401
    MQTTError, Connected, ConnectRefused, Message, Published, Subscribed, Unsubscribed,
    PingTimeout, ProtocolError, Disconnected, refused_text, _SERVER_FLAGS, _varint, _str,
    _check_topic, _packet)

IDLE = 0          # no CONNECT sent on this connection yet (fresh or reset)
CONNECTING = 1    # CONNECT queued, waiting for CONNACK
CONNECTED = 2
CLOSED = 3        # refused, timed out, protocol error or disconnect(): reset()

MAX_PACKET = 70 * 1024          # inbound limit; boards size it to their heap


class Client:
    def __init__(self, client_id, keepalive=30, clean_session=False, will=None,
                 username=None, password=None, max_packet=MAX_PACKET,
                 max_inflight=8, ping_timeout=10000, auto_ack=False, version=4):
        if version not in (4, 5):
            raise MQTTError("MQTT version must be 4 (3.1.1) or 5")
        if not client_id and not clean_session:
            raise MQTTError("an empty client id needs clean_session=True")
        if password is not None and username is None:
            raise MQTTError("MQTT 3.1.1 allows a password only with a user name")
        if will is not None:
            _check_topic(will[0], False)
            if will[2] not in (0, 1, 2):
                raise MQTTError("will QoS must be 0, 1 or 2")
        if not 0 <= keepalive <= 0xFFFF:
            raise MQTTError("keepalive must be 0..65535 s")
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
        self._props = None
        if version == 5:    # boards speak 3.1.1 and never load this
            from node.core import mqtt5
            self._props = mqtt5.props
        self._inflight = []     # [packet_id, packet bytearray, sent] in send order
        self._ids = set()       # their packet ids
        self._last_topic = None  # the last topic published, and its encoding
        self._last_t = b""
        self._pid = 0
        self._gen = 0           # connection generation, to drop stale acks
        self._events = []       # kept across reset(): a PUBACK read just before
        self._now = 0           # the link died must still reach the app
        self.reset()

    # --- connection lifecycle ------------------------------------------

    def reset(self):
        """Forget the connection (not the session): call for every new socket."""
        self.state = IDLE
        self._out = []
        self._pending = {}      # SUBSCRIBE/UNSUBSCRIBE packet_id -> filter count
        self._hdr = None        # first byte of the packet being read
        self._rl = 0
        self._nlen = 0
        self._body = None
        self._got = 0
        self._ping_at = None    # when the unanswered PINGREQ (or CONNECT) went out
        self._last_tx = 0
        self._gen += 1
        self.receive_max = 0xFFFF   # MQTT 5: the broker's limit (CONNACK)
        self.server_max_packet = 0  # MQTT 5: the broker's Maximum Packet Size (0: none)

    def connect(self, now):
        if self.state != IDLE:
            raise MQTTError("connect() needs a fresh connection: call reset() first")
        flags = 0x02 if self.clean_session else 0
        v5 = self.version == 5
        parts = [b"\x00\x04MQTT\x05" if v5 else b"\x00\x04MQTT\x04", b"",
                 self.keepalive.to_bytes(2, "big")]
        if v5:
            # Maximum Packet Size: the broker drops what we could not take
            # instead of sending it (and so costing us the connection).  A
            # kept session must outlive the connection (expiry: never).
            props = b"\x27" + self.max_packet.to_bytes(4, "big")
            if not self.clean_session:
                props += b"\x11\xff\xff\xff\xff"
            parts.append(bytes([len(props)]) + props)
        parts.append(_str(self.client_id))
        if self.will is not None:
            topic, payload, qos, retain = self.will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            if v5:
                parts.append(b"\x00")
            parts.append(_str(topic))
            parts.append(_str(payload))
        if self.username is not None:
            flags |= 0x80
            parts.append(_str(self.username))
        if self.password is not None:
            flags |= 0x40
            parts.append(_str(self.password))
        parts[1] = bytes([flags])
        self._send(_packet(0x10, parts, sum(len(p) for p in parts)), now)
        self.state = CONNECTING
        self._ping_at = now     # the CONNACK wait uses the ping timeout too

    def disconnect(self):
        """Clean close: the broker discards the will.  Unacked publishes stay."""
        if self.state == CONNECTED:
            self._out.append(b"\xe0\x00")
        self.state = CLOSED

    # --- outgoing ---------------------------------------------------------

    def publish(self, topic, payload, qos=0, retain=False, now=None):
        """0 for QoS 0, the packet id for QoS 1, or None when not accepted
        now (window full, or QoS 0 while not connected): back off."""
        if topic == self._last_topic:       # a stream to one topic: checked once
            t = self._last_t
        else:
            _check_topic(topic, False)
            t = _str(topic)
            self._last_topic = topic
            self._last_t = t
        if qos not in (0, 1):
            raise MQTTError("QoS must be 0 or 1")
        if type(payload) is str:
            payload = payload.encode()
        if now is None:
            now = self._now
        props = b"\x00" if self.version == 5 else b""     # MQTT 5: no properties
        first = 0x30 | (qos << 1) | (1 if retain else 0)
        if qos == 0:
            if self.state != CONNECTED:
                return None
            self._send(self._fits(_packet(first, (t, props, payload),
                                          len(t) + len(props) + len(payload))), now)
            return 0
        if len(self._inflight) >= self.window():
            return None
        pid = self._new_pid()
        pkt = self._fits(_packet(first, (t, pid.to_bytes(2, "big"), props, payload),
                                 len(t) + 2 + len(props) + len(payload)))
        e = [pid, pkt, False]
        self._inflight.append(e)
        self._ids.add(pid)
        if self.state == CONNECTED:     # else it goes out after the CONNACK
            e[2] = True
            self._send(pkt, now)
        return pid

    def _fits(self, pkt):
        m = self.server_max_packet
        if m and len(pkt) > m:
            raise MQTTError("a %d-byte PUBLISH is over the broker's Maximum Packet Size (%d)"
                            % (len(pkt), m))
        return pkt

    def window(self):
        """How many QoS 1 publishes may be unacked: ours, or the broker's
        Receive Maximum (MQTT 5) if lower."""
        return min(self.max_inflight, self.receive_max)

    def subscribe(self, filters, now=None):
        """filters: [(filter, qos)] or [(filter, qos, no_local)] with qos 0
        or 1; no_local (MQTT 5 only; ignored on 3.1.1): the broker does not
        send back our own publishes.  Returns the packet id."""
        return self._sub(0x82, filters, now, True)

    def unsubscribe(self, filters, now=None):
        return self._sub(0xA2, filters, now, False)

    def _sub(self, first, filters, now, with_qos):
        if self.state != CONNECTED:
            raise MQTTError("not connected")
        if not filters:
            raise MQTTError("no filters")
        pid = self._new_pid()
        parts = [pid.to_bytes(2, "big")]
        if self.version == 5:
            parts.append(b"\x00")
        for f in filters:
            topic = f[0] if with_qos else f
            _check_topic(topic, True)
            parts.append(_str(topic))
            if with_qos:
                if f[1] not in (0, 1):
                    raise MQTTError("subscription QoS must be 0 or 1")
                nl = len(f) > 2 and f[2] and self.version == 5
                parts.append(bytes([f[1] | (4 if nl else 0)]))
        self._pending[pid] = len(filters)
        self._send(_packet(first, parts, sum(len(p) for p in parts)),
                   self._now if now is None else now)
        return pid

    def ack(self, msg):
        """PUBACK an inbound QoS 1 message once it is durably handled.  False
        when there is nothing to ack (QoS 0, or an earlier connection's)."""
        if msg.qos != 1 or msg._gen != self._gen or self.state != CONNECTED:
            return False
        self._out.append(b"\x40\x02" + msg.packet_id.to_bytes(2, "big"))
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
        self._now = now
        if self.state == CONNECTING or (self.state == CONNECTED and self._ping_at is not None):
            if now - self._ping_at >= self.ping_timeout:
                self.state = CLOSED
                self._events.append(PingTimeout())
            return
        if self.state == CONNECTED and self.keepalive:
            if now - self._last_tx >= self.keepalive * 1000:
                self._send(b"\xc0\x00", now)
                self._ping_at = now

    def _send(self, pkt, now):
        self._out.append(pkt)
        self._last_tx = now

    def _new_pid(self):
        busy = self._ids
        while True:
            self._pid = self._pid % 0xFFFF + 1
            if self._pid not in busy and self._pid not in self._pending:
                return self._pid

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
        """Feed bytes from the socket, split anywhere.  Never raises."""
        self._now = now
        if self.state == CLOSED or self.state == IDLE:
            return
        try:
            self._feed(memoryview(data))
        except MQTTError as e:      # a malformed MQTT 5 property list (mqtt5.py)
            self._fail(str(e))
        except MemoryError:
            self._fail("out of memory for a %d byte packet" % self._rl)
        except Exception as e:       # a bug must not take the board down
            self._fail("internal error: %r" % (e,))

    def _fail(self, text):
        self.state = CLOSED
        self._body = None
        self._events.append(ProtocolError(text))

    def _bad_first(self, b):
        t = b >> 4
        if t == 3:
            ok = (b & 6) != 6       # QoS 3 does not exist
        else:
            ok = _SERVER_FLAGS.get(t) == b & 0x0F and (t != 14 or self.version == 5)
        if not ok:
            self._fail("unexpected packet type %d flags %d" % (t, b & 15))
        return not ok

    def _feed(self, mv):
        i = 0
        n = len(mv)
        while i < n and self.state != CLOSED:
            if mv[i] == 0x40 and self._hdr is None and n - i >= 4 and mv[i + 1] == 2 \
                    and self.state == CONNECTED:
                # Fastest path: a bare PUBACK (a stream of them after a burst).
                pid = (mv[i + 2] << 8) | mv[i + 3]
                i += 4
                inf = self._inflight
                if inf and inf[0][0] == pid:        # acks come in order
                    del inf[0]
                    self._ids.discard(pid)
                    self._events.append(Published(pid))
                else:
                    self._handle(0x40, bytearray(mv[i - 2:i]))
                continue
            if self._hdr is None and n - i >= 2 and mv[i + 1] < 0x80 \
                    and n - i - 2 >= mv[i + 1] and 2 + mv[i + 1] <= self.max_packet:
                # Fast path: a whole small packet (PUBACKs, events) in view.
                b, rl = mv[i], mv[i + 1]
                if self._bad_first(b):
                    return
                i += 2 + rl
                self._handle(b, bytearray(mv[i - rl:i]))
                continue
            if self._body is None:
                b = mv[i]
                i += 1
                if self._hdr is None:
                    if self._bad_first(b):
                        return
                    self._hdr = b
                    self._rl = 0
                    self._nlen = 0
                    continue
                self._rl |= (b & 0x7F) << (7 * self._nlen)
                self._nlen += 1
                if b & 0x80:
                    if self._nlen == 4:
                        self._fail("remaining length longer than 4 bytes")
                        return
                    continue
                if 1 + self._nlen + self._rl > self.max_packet:
                    self._fail("packet of %d bytes exceeds limit %d"
                               % (1 + self._nlen + self._rl, self.max_packet))
                    return
                # The body gets its own exact-size buffer up front: no
                # regrowth while a large packet trickles in.
                self._body = bytearray(self._rl)
                self._got = 0
            else:
                k = min(n - i, self._rl - self._got)
                self._body[self._got:self._got + k] = mv[i:i + k]
                self._got += k
                i += k
            if self._got == self._rl:
                hdr, body = self._hdr, self._body
                self._hdr = None
                self._body = None
                self._handle(hdr, body)

    def _handle(self, hdr, body):
        t = hdr >> 4
        n = len(body)
        v5 = self.version == 5
        if t == 2:
            # MQTT 5 CONNACKs carry properties; a 3.1.1 broker refusing our
            # level 5 CONNECT answers in its own 2-byte form.
            if self.state != CONNECTING or n < 2 or (n != 2 and not v5) or body[0] & 0xFE:
                return self._fail("malformed or unexpected CONNACK")
            if n > 2:
                end, got = self._props(body, 2)
                if end != n:
                    return self._fail("malformed CONNACK")
                rm = got.get(0x21)
                if rm == 0:
                    return self._fail("CONNACK with Receive Maximum 0")
                if rm:
                    self.receive_max = rm
                if got.get(0x27):   # a bigger PUBLISH would only get us disconnected
                    self.server_max_packet = got[0x27]
                if got.get(0x13) is not None:   # the broker's keepalive wins
                    self.keepalive = got[0x13]
            self._ping_at = None
            if body[1]:
                self.state = CLOSED
                self._events.append(ConnectRefused(body[1], refused_text(body[1])))
                return
            self.state = CONNECTED
            self._events.append(Connected(bool(body[0] & 1)))
            for e in self._inflight:     # MQTT 3.1.1 4.4: resend, in order
                if e[2]:
                    e[1][0] |= 0x08
                e[2] = True
                self._send(e[1], self._now)
            return
        if self.state != CONNECTED:
            return self._fail("packet type %d before CONNACK" % t)
        if t == 3:
            qos = (hdr >> 1) & 3
            if qos == 2:
                return self._fail("QoS 2 PUBLISH, never subscribed at QoS 2")
            if n < 2:
                return self._fail("truncated PUBLISH")
            tl = (body[0] << 8) | body[1]
            off = 2 + tl + (2 if qos else 0)
            if off > n or tl == 0:
                return self._fail("truncated PUBLISH")
            try:
                topic = str(body[2:2 + tl], "utf-8")
            except Exception:
                return self._fail("PUBLISH topic is not UTF-8")
            pid = 0
            if qos:
                pid = (body[2 + tl] << 8) | body[3 + tl]
                if not pid:
                    return self._fail("PUBLISH with packet id 0")
            if v5:
                off, _ = self._props(body, off)
            self._events.append(Message(topic, memoryview(body)[off:], qos, bool(hdr & 1),
                                        bool(hdr & 8), pid, self._gen))
        elif t == 4 or t == 11:
            # MQTT 5 may add a reason code (PUBACK: one, UNSUBACK: one per
            # filter) and properties.
            if n < 2 or (n != 2 and not v5):
                return self._fail("malformed PUBACK/UNSUBACK")
            pid = (body[0] << 8) | body[1]
            if t == 4:
                code = body[2] if n > 2 else 0
                if n > 3 and self._props(body, 3)[0] != n:
                    return self._fail("malformed PUBACK")
                inf = self._inflight
                for j in range(len(inf)):
                    if inf[j][0] == pid:
                        del inf[j]
                        self._ids.discard(pid)
                        self._events.append(Published(pid, code))
                        break
                # an unknown id is a late duplicate ack after a resend: ignore
            elif self._pending.pop(pid, None) is not None:
                self._events.append(Unsubscribed(pid))
        elif t == 9:
            if n < 3:
                return self._fail("truncated SUBACK")
            pid = (body[0] << 8) | body[1]
            granted = list(body[self._props(body, 2)[0] if v5 else 2:])
            for g in granted:
                if g not in (0, 1, 2, 0x80) and not (v5 and g > 0x80):
                    return self._fail("bad SUBACK return code %d" % g)
            want = self._pending.pop(pid, None)
            if want is not None:
                if want != len(granted):
                    return self._fail("SUBACK has %d codes for %d filters"
                                      % (len(granted), want))
                self._events.append(Subscribed(pid, granted))
        elif t == 13:
            if n:
                return self._fail("malformed PINGRESP")
            self._ping_at = None
        elif t == 14:       # MQTT 5 only (_bad_first): the broker hangs up
            self.state = CLOSED
            self._events.append(Disconnected(body[0] if n else 0))
