# What aegis nodes say on a QUIC stream: framing, the stream hello, and the
# mesh stream's at-least-once event protocol.  Sans-I/O and portable: bytes
# in, frames and events out; the QUIC driver (node/quic/) only moves bytes.
#
# A stream carries frames:  u32 length (big-endian) | payload.
# Its first frame is the hello, a CBOR map {"p": kind, "v": 1}:
#   "push"  then transfer messages (node/core/transfer.py), one per frame
#   "mesh"  then mesh messages, CBOR maps:
#       {"t": "ev",  "i": id, "e": envelope bytes}    id: the sender's outbox id
#       {"t": "ack", "i": [id, ...]}                  processed, drop from outbox
# The payload limit is checked from the length prefix before any payload is
# buffered, so a hostile length costs nothing.
from node.core import cbor

VERSION = 1
KINDS = ("push", "mesh")
MAX_HELLO = 256
MAX_ACKS = 512          # ids per ack message
_LEN = 4


class FrameError(ValueError):
    """Garbage on a stream: the stream (and its connection) is closed."""


def frame(payload):
    n = len(payload)
    return n.to_bytes(_LEN, "big") + payload


class Deframer:
    """Splits a byte stream into frames of at most max_len bytes."""

    def __init__(self, max_len):
        self.max_len = max_len
        self._buf = bytearray()
        self._need = -1          # payload length of the frame being read

    def feed(self, data):
        """Frames completed by `data` (a list, maybe empty), or FrameError."""
        buf = self._buf
        buf.extend(data)
        out, pos, end = [], 0, len(buf)
        while True:
            if self._need < 0:
                if end - pos < _LEN:
                    break
                n = int.from_bytes(bytes(buf[pos:pos + _LEN]), "big")
                if n == 0 or n > self.max_len:
                    raise FrameError("frame of %d bytes; allowed 1..%d" % (n, self.max_len))
                self._need = n
                pos += _LEN
            if end - pos < self._need:
                break
            out.append(bytes(buf[pos:pos + self._need]))
            pos += self._need
            self._need = -1
        if pos:
            # (MicroPython's bytearray has no slice deletion.)
            self._buf = buf[pos:] if pos < end else bytearray()
        return out

    def pending(self):
        return len(self._buf)


def hello(kind):
    return cbor.dumps({"p": kind, "v": VERSION})


def parse_hello(b):
    """The stream kind from a hello frame, or FrameError."""
    if len(b) > MAX_HELLO:
        raise FrameError("hello is %d bytes, limit %d" % (len(b), MAX_HELLO))
    try:
        m = cbor.loads(bytes(b))
    except cbor.CBORError as e:
        raise FrameError("hello is not CBOR: %s" % e)
    if type(m) is not dict or m.get("p") not in KINDS:
        raise FrameError("hello must be a map with 'p' one of %s" % ", ".join(KINDS))
    if m.get("v") != VERSION:
        raise FrameError("stream protocol version %r; this node speaks %d"
                         % (m.get("v"), VERSION))
    return m["p"]


class Ev:            # an event arrived: deliver it, then call MeshStream.ack(i)
    def __init__(self, i, rec):
        self.i, self.rec = i, rec


class Acked:         # the peer confirmed these outbox ids: ack them there
    def __init__(self, ids):
        self.ids = ids


class MeshStream:
    """One side of a mesh stream (both sides send and receive).

    Sending: while room() > 0, send(i, rec) the next outbox record; an
    Acked item from receive() tells which outbox ids the peer confirmed.
    reset() after the link is lost: nothing is in flight any more (the
    outbox resends from its head; the receiver's Dedup drops repeats).
    Receiving: receive(payload) returns Ev items or raises FrameError; the
    app delivers each one and calls ack(i); messages_to_send() returns the
    ack frames to write."""

    def __init__(self, window=128):
        self.window = window
        self._inflight = {}      # outbox id -> True
        self._acks = []
        self.sent = self.received = 0

    def room(self):
        return self.window - len(self._inflight)

    def inflight(self):
        return len(self._inflight)

    def send(self, i, rec):
        """Payload of one ev message (frame it and write it)."""
        self._inflight[i] = True
        self.sent += 1
        return cbor.dumps({"t": "ev", "i": i, "e": rec})

    def reset(self):
        self._inflight = {}
        self._acks = []

    def receive(self, payload):
        """[Ev] for an ev message, [Acked] for an ack, or FrameError."""
        try:
            m = cbor.loads(bytes(payload))
        except cbor.CBORError as e:
            raise FrameError("mesh message is not CBOR: %s" % e)
        if type(m) is not dict:
            raise FrameError("mesh message must be a CBOR map")
        t = m.get("t")
        if t == "ev":
            i, rec = m.get("i"), m.get("e")
            if type(i) is not int or i < 0 or type(rec) is not bytes:
                raise FrameError("ev needs an id 'i' >= 0 and envelope bytes 'e'")
            self.received += 1
            return [Ev(i, rec)]
        if t == "ack":
            ids = m.get("i")
            if type(ids) is not list or len(ids) > MAX_ACKS:
                raise FrameError("ack needs a list 'i' of at most %d ids" % MAX_ACKS)
            done = []
            for i in ids:
                if type(i) is not int:
                    raise FrameError("ack ids must be integers")
                if self._inflight.pop(i, None):
                    done.append(i)
            return [Acked(done)]
        raise FrameError("unknown mesh message type %r" % (t,))

    def ack(self, i):
        self._acks.append(i)

    def messages_to_send(self):
        out = []
        while self._acks:
            out.append(cbor.dumps({"t": "ack", "i": self._acks[:MAX_ACKS]}))
            del self._acks[:MAX_ACKS]
        return out
