# The mesh envelope: one canonical CBOR map per forwarded event.
#
# This is an interop contract (docs/MESH.md): any MQTT client with a CBOR
# library reads these, so the keys are short plain text and the values plain
# CBOR types.  Everything decoded here came off the network, so every field
# is checked for type, size and range before anyone sees it; unknown extra
# keys are ignored so newer nodes can add fields without breaking older ones.
#
# Also here: per-source duplicate suppression (`Dedup`) and the persisted
# per-source sequence counter (`SeqCounter`) that makes suppression work.
# What only a gateway's forwarders need (the outgoing MQTT topic, Dedup
# state saved across restarts) is in forwarding.py: a board does not load it.
from node.core import bus, cbor
# Node ids live in fleet.py (a board names its topics without this module).
from node.core.fleet import EnvelopeError, _check_chars, check_node_id  # noqa: F401

try:
    from micropython import const
except ImportError:  # CPython: const(n) is n, as int(n) is (no def: a def costs boards heap)
    const = int

MAX_DATA = 65536
MAX_INT = (1 << 63) - 1
_MAX_MOD = const(129)   # "name@version", each part at most 64
# CBOR overhead of a maximal envelope is well under this; checking the raw
# length first means a hostile 100 MB payload is refused before decoding.
_SLACK = const(1024)


def check_topic(topic):
    """Event topic: the bus's rules (1..255 bytes UTF-8, '/'-separated
    non-empty levels, no '+', '#' or NUL), reported as an EnvelopeError."""
    try:
        bus.check_topic(topic)
    except bus.TopicError as e:
        raise EnvelopeError(str(e))


def check_mod(mod):
    """Module reference "name@version"."""
    if type(mod) is not str:
        raise EnvelopeError("mod must be text, got %s" % type(mod).__name__)
    at = mod.find("@")
    if at < 0 or len(mod) > _MAX_MOD:
        raise EnvelopeError("mod %r must look like name@version" % mod)
    check_node_id(mod[:at], "module name")     # (so never "." or "..")
    # A node id's characters and "+" (semver build metadata).
    _check_chars("module version", mod[at + 1:],
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-+", 64)


class Envelope:
    def __init__(self, src, seq, ts, topic, data, mod):
        self.src = src
        self.seq = seq
        self.ts = ts
        self.topic = topic
        self.data = data
        self.mod = mod

    def __eq__(self, e):
        return (isinstance(e, Envelope) and self.src == e.src and self.seq == e.seq
                and self.ts == e.ts and self.topic == e.topic
                and self.data == e.data and self.mod == e.mod)

    def __repr__(self):
        return "Envelope(%s#%d %s %d bytes from %s)" % (
            self.src, self.seq, self.topic, len(self.data), self.mod)


def _validate(src, seq, ts, topic, data, mod, max):
    check_node_id(src, "src")
    # bool is an int subclass on CPython; a true/false here is a bug upstream.
    if type(seq) is not int or type(ts) is not int:
        what, v = ("seq", seq) if type(seq) is not int else ("ts", ts)
        raise EnvelopeError("%s must be an integer, got %s" % (what, type(v).__name__))
    if not (0 <= seq <= MAX_INT and 0 <= ts <= MAX_INT):
        what, v = ("seq", seq) if not 0 <= seq <= MAX_INT else ("ts", ts)
        raise EnvelopeError("%s must be in 0..2**63-1, got %d" % (what, v))
    check_topic(topic)
    if type(data) is not bytes:
        raise EnvelopeError("data must be a byte string, got %s" % type(data).__name__)
    if len(data) > max:
        raise EnvelopeError("data is %d bytes, limit is %d" % (len(data), max))
    check_mod(mod)


def encode(src, seq, ts, topic, data, mod, max=MAX_DATA):
    """Canonical CBOR bytes for one envelope (validated: we never emit what
    we would refuse to decode); `data` may be at most `max` bytes."""
    if type(data) is bytearray or type(data) is memoryview:
        data = bytes(data)
    _validate(src, seq, ts, topic, data, mod, max)
    return cbor.dumps({"src": src, "seq": seq, "ts": ts, "topic": topic,
                       "data": data, "mod": mod})


def decode(b, max=MAX_DATA):
    """Envelope from CBOR bytes, or EnvelopeError saying what is wrong;
    its `data` may be at most `max` bytes."""
    if type(b) is not bytes:
        b = bytes(b)
    if len(b) > max + _SLACK:
        raise EnvelopeError("envelope is %d bytes, limit is %d"
                            % (len(b), max + _SLACK))
    try:
        m = cbor.loads(b)
    except cbor.CBORError as e:
        raise EnvelopeError("envelope is not valid CBOR: %s" % e)
    if type(m) is not dict:
        raise EnvelopeError("envelope must be a CBOR map, got %s" % type(m).__name__)
    for k in ("src", "seq", "ts", "topic", "data", "mod"):
        if k not in m:
            raise EnvelopeError("envelope has no %r key" % k)
    e = Envelope(m["src"], m["seq"], m["ts"], m["topic"], m["data"], m["mod"])
    _validate(e.src, e.seq, e.ts, e.topic, e.data, e.mod, max)
    return e


# `mod` of events that are not a module's own (gateway, CLI, mesh): never
# forwarded as this node's events (forwarding.py, node/board/events.py).
NOT_MODULES = ("", "cli", "mesh")


# --- MQTT topic tree (building one is forwarding.ev_topic) -----------------

def parse_ev_topic(fleet, name):
    """(node_id, topic) from `name`, an MQTT topic under aegis/<fleet>/ev/, else
    EnvelopeError.  Used to check an envelope's `src` and `topic` agree with
    where it was published, so one node cannot speak for another's tree."""
    check_node_id(fleet, "fleet")
    if type(name) is not str:
        raise EnvelopeError("MQTT topic must be text")
    pre = "aegis/%s/ev/" % fleet
    if not name.startswith(pre):
        raise EnvelopeError("MQTT topic %r is not under %s" % (name, pre))
    rest = name[len(pre):]
    slash = rest.find("/")
    if slash < 0:
        raise EnvelopeError("MQTT topic %r has no event topic after the node id"
                            % name)
    node_id, topic = rest[:slash], rest[slash + 1:]
    check_node_id(node_id)
    check_topic(topic)
    return node_id, topic


# --- duplicate suppression -------------------------------------------------

class Dedup:
    """Per-source anti-replay window over (src, seq), as in IPsec (RFC 4303).

    For each source: the highest seq seen and a ring bitmap of the last
    `window` seqs.  A seq above the top is new and slides the window; one
    inside it is a duplicate if its bit is set; one below it is too old to
    tell and is dropped (a node's seq never goes back, see SeqCounter).
    At most `max_sources` sources are tracked; the least recently seen is
    forgotten first, which can let an old duplicate of *that* source through
    once -- the price of bounded memory, counted in `evicted`."""

    def __init__(self, window=1024, max_sources=256):
        if window < 8 or window % 8:
            raise ValueError("dedup window must be a positive multiple of 8")
        if max_sources < 1:
            raise ValueError("max_sources must be >= 1")
        self.window = window
        self.max_sources = max_sources
        self._src = {}     # src -> [top seq, bitmap bytearray, last use tick]
        self._tick = 0
        self.dups = 0      # exact repeats dropped
        self.too_old = 0   # below the window, dropped
        self.evicted = 0   # sources forgotten to stay bounded

    def __len__(self):
        return len(self._src)

    def seen(self, src, seq):
        """True when (src, seq) was seen before or is too old: drop it."""
        if type(seq) is not int or seq < 0:
            raise EnvelopeError("seq must be an integer >= 0")
        self._tick += 1
        w = self.window
        st = self._src.get(src)
        if st is None:
            if len(self._src) >= self.max_sources:
                # Forget the least recently seen source: O(sources), only
                # when a new one arrives while full; fine at 256.
                old, oldt = None, None
                for k, st in self._src.items():
                    if oldt is None or st[2] < oldt:
                        old, oldt = k, st[2]
                del self._src[old]
                self.evicted += 1
            bits = bytearray(w // 8)
            st = self._src[src] = [seq, bits, 0]
            p = seq % w
            bits[p >> 3] |= 1 << (p & 7)
            st[2] = self._tick
            return False
        st[2] = self._tick
        top, bits = st[0], st[1]
        if seq > top:
            d = seq - top
            if d >= w:
                for j in range(len(bits)):
                    bits[j] = 0
            else:
                # Clear the slots of the seqs we skipped over (they now
                # stand for top+1..seq, none of which were seen yet).
                for s in range(top + 1, seq + 1):
                    p = s % w
                    bits[p >> 3] &= ~(1 << (p & 7)) & 0xFF
            st[0] = seq
        elif top - seq >= w:
            self.too_old += 1
            return True
        p = seq % w
        m = 1 << (p & 7)
        if bits[p >> 3] & m:
            self.dups += 1
            return True
        bits[p >> 3] |= m
        return False


# --- persisted sequence counter ---------------------------------------------

class SeqCounter:
    """Hands out this node's envelope `seq` numbers; never repeats one, even
    across crashes, without a flash write per event.

    The store holds the first seq NOT yet reserved.  Numbers are handed out
    from a reserved block; when a block is used up the next one is reserved
    with one atomic write *before* any of its numbers are used.  After a
    crash the counter restarts at the stored value, so up to `block` numbers
    are skipped (receivers' Dedup windows just slide forward) but none is
    ever reused."""

    def __init__(self, store, name="mesh/seq", block=1000):
        if block < 1:
            raise ValueError("block must be >= 1")
        self.store = store
        self.name = name
        self.block = block
        raw = store.read(name)
        if raw is None:
            nxt = 0
        else:
            # Refusing to start beats silently reusing numbers: a reused seq
            # makes every peer drop this node's events as duplicates.
            try:
                nxt = cbor.loads(raw)
            except cbor.CBORError as e:
                raise EnvelopeError("sequence file %s is corrupt (%s); delete it "
                                    "only together with a new node id" % (name, e))
            if type(nxt) is not int or not 0 <= nxt <= MAX_INT:
                raise EnvelopeError("sequence file %s holds %r, not a seq"
                                    % (name, nxt))
        self._next = nxt
        self._limit = nxt      # nothing reserved yet in this run
        self.writes = 0

    def take(self):
        if self._next >= self._limit:
            lim = self._next + self.block
            self.store.write(self.name, cbor.dumps(lim))
            self._limit = lim       # only once the reservation is durable
            self.writes += 1
        n = self._next
        self._next += 1
        return n
