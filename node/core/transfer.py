# Chunked, resumable package transfer: two sans-I/O state machines, the
# Receiver (transfer_recv.py) and the Sender (transfer_send.py), sharing
# the codec and the constants here.
#
# Whole messages in and out (one CBOR map each, "t" = type), so the same
# code runs over MQTT (one message per payload) and QUIC (one per frame).
# The protocol is documented in docs/MESH.md; in short:
#   S->R offer   {id, o, size, sha256, chunk, win, name, version}
#   R->S want    {id, o, n, ranges, upto}      missing [start, end) ranges
#   S->R chunk   {id, i, d, h}                 h = sha256(d)[:8]
#   R->S ack     {id, n, have, ranges, upto, last[, bad]}
#   R->S result  {id, ok, state | error}       terminal
#   R->S error   {id, code, error}             non-terminal
# The receiver's `want` is authoritative: the sender re-offers (the offer is
# idempotent) whenever it is unsure -- after a reconnect, a timeout, or once
# it has sent everything it was asked for -- and sends what the reply says.
# Chunks go straight to the store; the receiver never holds a package in RAM.
#
# Boards load this for every push (node/board/deploy.py), and with the
# Sender only when they hand a package to their proxy host: the Receiver's
# code is unloaded by then.  Private names are const() and helpers few, as
# each name is a qstr a board keeps for good.  T.Receiver, T.Started and
# T.Complete still work (the module __getattr__ at the end, PEP 562).
import binascii
import hashlib
import sys
from node.core import cbor

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

MIN_CHUNK = 256
MAX_CHUNK = 65536
MAX_RANGES = 128        # per want/ack; more holes are fetched on later passes
MAX_WIN = 1024
_MAX_MSG = const(65536 + 512)   # MAX_CHUNK + the CBOR of a chunk message, generously
# Hashing a whole package reads it back in pieces: bounded memory, and a
# board's fragmented heap may have no larger contiguous block than 2 KiB;
# a gateway takes 16 KiB at a time (each piece is one store read).
_HASH_PIECE = 2048 if sys.implementation.name == "micropython" else 16384


class TransferError(ValueError):
    """Bad message or state.  Also queued as an event: `.tid` (or None) and
    `.text` say which transfer and what to do about it."""

    def __init__(self, text, tid=None):
        super().__init__(text)
        self.text = text
        self.tid = tid


class Progress:     # bytes the receiver holds (sender: confirmed by acks)
    def __init__(self, tid, done, total):
        self.tid, self.done, self.total = tid, done, total


class Result:       # sender: the receiver's final word (or giving up)
    def __init__(self, tid, ok, detail):
        self.tid, self.ok, self.detail = tid, ok, detail


def transfer_id(sha256):
    return binascii.hexlify(sha256[:16]).decode()


def _get(bits, i):
    return bits[i >> 3] >> (i & 7) & 1


def _set(bits, i):
    bits[i >> 3] |= 1 << (i & 7)


def _clr(bits, i):
    bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF


def _in(ranges, i):
    for s, e in ranges:
        if s <= i < e:
            return True
    return False


def _field(m, key, t, a=None, b=None, tid=None):
    """m[key], which must be of type t, its value (or length) in a..b."""
    v = m.get(key)
    if type(v) is not t:
        raise TransferError("field %r must be %s" % (key, t.__name__), tid)
    x = len(v) if t in (bytes, str, list) else v
    if (a is not None and x < a) or (b is not None and x > b):
        raise TransferError("field %r out of range (%d not in %s..%s)" % (key, x, a, b), tid)
    return v


def _ranges(m, n, tid):
    rs, prev = _field(m, "ranges", list, 0, MAX_RANGES, tid), 0
    for r in rs:
        if (type(r) is not list or len(r) != 2 or type(r[0]) is not int
                or type(r[1]) is not int or not prev <= r[0] < r[1] <= n):
            raise TransferError("ranges must be sorted [start, end) pairs in 0..%d" % n, tid)
        prev = r[1]
    return rs, _field(m, "upto", int, 0, n, tid)


def decode(b):
    """A message map with a valid "t" and "id", or TransferError."""
    if len(b) > _MAX_MSG:
        raise TransferError("message is %d bytes, limit %d" % (len(b), _MAX_MSG))
    try:
        m = cbor.loads(bytes(b))
    except cbor.CBORError as e:
        raise TransferError("message is not valid CBOR: %s" % e)
    if type(m) is not dict or type(m.get("t")) is not str:
        raise TransferError("message must be a CBOR map with a text 't'")
    tid = m.get("id")
    if type(tid) is not str or len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
        raise TransferError("message 'id' must be 32 lowercase hex digits")
    return m


def _msg(t, tid, **kw):
    kw["t"] = t
    kw["id"] = tid
    return cbor.dumps(kw)


def _hash(read_at, size, h=None, off=0):
    """sha256 digest of bytes off..size read back in pieces, continuing `h`
    (which then holds the hash of bytes 0..off) when given."""
    if h is None:
        h = hashlib.sha256()
    while off < size:
        piece = read_at(off, min(_HASH_PIECE, size - off))
        if not piece:
            break                               # short file: hash won't match
        h.update(piece)
        off += len(piece)
    return h.digest()


def __getattr__(name):
    # Receiver, Started, Complete: the receiving side, in transfer_recv.py.
    from node.core import transfer_recv
    return getattr(transfer_recv, name)
