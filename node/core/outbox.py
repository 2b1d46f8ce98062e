# Bounded, ordered, at-least-once queue of outgoing records over the store.
#
# Layout under `prefix`:
#   seg-<first id, 16 digits>   append-only log segments of framed records
#   state                       ack state, CBOR, replaced atomically
# A frame is len (4 bytes BE) | crc32(len bytes + payload) (4 bytes BE) |
# payload.  The crc covers the length so a zero-filled tail (what some
# filesystems leave after a crash) never parses as a record.  A record's id
# is its segment's first id plus its position, so ids are never stored.
#
# Pushing appends the frames (one store append per batch, no sync); acking
# only changes RAM; `flush()` makes both durable: one sync of the open
# segment, then the ack state (acks are written after the records they
# refer to, so the state never names a record the log could lose).  A
# crash loses at most what was pushed since the last flush and re-delivers
# what was acked since it -- at-least-once, which the receivers' Dedup
# absorbs.
import binascii
from array import array
from node.core import cbor

_HDR = 8


class OutboxError(ValueError):
    pass


def _crc(lenb, payload):
    return binascii.crc32(payload, binascii.crc32(lenb)) & 0xFFFFFFFF


class _Seg:
    def __init__(self, name, base):
        self.name = name
        self.base = base           # id of its first record
        self.offs = array("I")     # payload offset of each record
        self.lens = array("I")     # payload length of each record
        self.size = 0              # bytes of valid frames

    def end(self):
        return self.base + len(self.offs)


class Outbox:
    def __init__(self, store, prefix="outbox/", max_items=10000,
                 max_bytes=4 << 20, seg_bytes=64 << 10, max_record=128 << 10):
        if max_items < 1 or max_bytes < 1:
            raise ValueError("outbox limits must be >= 1")
        self.store = store
        self.prefix = prefix
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.seg_bytes = seg_bytes
        self.max_record = max_record
        self.dropped = 0    # oldest records discarded to stay within limits
        self.corrupt = 0    # records lost to bad frames (crash tail, bit rot)
        self.pushed = 0
        self.acked = 0
        self._segs = []
        self._cur = None    # segment open for appends (only this run's)
        self._dirty_seg = False
        self._dirty_state = False
        self._head = 0      # every id below is acked or dropped
        self._done = set()  # ids >= _head acked/dropped out of order
        self._live = 0
        self._bytes = 0
        self._load()

    # -- restart ------------------------------------------------------------

    def _load(self):
        pre = self.prefix + "seg-"
        nxt = 0
        for name in self.store.list(pre):
            try:
                base = int(name[len(pre):])
            except ValueError:
                continue        # not ours; leave it alone
            seg = _Seg(name, base)
            self._scan(seg)
            self._segs.append(seg)
            nxt = max(nxt, seg.end())
        last = nxt          # ids beyond this have no record on the store
        head, ranges = 0, []
        raw = self.store.read(self.prefix + "state")
        if raw is not None:
            try:
                head, ranges, dropped, snext = _parse_state(cbor.loads(raw))
                self.dropped = dropped
                nxt = max(nxt, snext)
            except ValueError:
                # Unreadable ack state: redeliver everything (duplicates are
                # safe, losing records is not).
                head, ranges = 0, []
        self._next = nxt
        self._head = head
        for s, e in ranges:
            for i in range(max(s, head), min(e, last)):
                self._done.add(i)
        for seg in self._segs:
            for k in range(len(seg.offs)):
                i = seg.base + k
                if i >= head and i not in self._done:
                    self._live += 1
                    self._bytes += seg.lens[k]
        self._advance()

    def _scan(self, seg):
        # Walk frames until the first that is short or fails its crc: that is
        # the torn tail of a crash (or rot); nothing after it is trusted.
        st, name, off = self.store, seg.name, 0
        while True:
            h = st.read_at(name, off, _HDR)
            if len(h) < _HDR:
                if h:
                    self.corrupt += 1
                break
            n = int.from_bytes(h[:4], "big")
            if n == 0 or n > self.max_record:
                self.corrupt += 1
                break
            p = st.read_at(name, off + _HDR, n)
            if len(p) < n or _crc(h[:4], p) != int.from_bytes(h[4:], "big"):
                self.corrupt += 1
                break
            seg.offs.append(off + _HDR)
            seg.lens.append(n)
            off += _HDR + n
        seg.size = off

    # -- queue --------------------------------------------------------------

    def __len__(self):
        return self._live

    def push(self, rec):
        """Append one record; returns its id.  Drops the oldest records
        (counted in `dropped`) when the queue is over its limits."""
        return self.push_many((rec,))

    def push_many(self, recs):
        """Append records in order with one store append per segment (a
        driver pushes what one batch of events produced); returns the id of
        the first (ids are consecutive).  Drops the oldest records (counted
        in `dropped`) when the queue is over its limits.  All records are
        checked before any is written."""
        for rec in recs:
            n = len(rec)
            if n == 0 or n > self.max_record or n > self.max_bytes:
                raise OutboxError("record is %d bytes; allowed 1..%d"
                                  % (n, min(self.max_record, self.max_bytes)))
        first = self._next
        buf = []
        for rec in recs:
            n = len(rec)
            # The item limit counts ids from the oldest unacked one, not just
            # live records: one record that is never acked (say the broker
            # refuses it) must not pin an ever-growing log behind it.
            while self._live and (self._next - self._head >= self.max_items
                                  or self._bytes + n > self.max_bytes):
                self._mark(self._head)      # head is always live when _live > 0
                self.dropped += 1
            if self._cur is None or self._cur.size >= self.seg_bytes:
                if buf:
                    self.store.append(self._cur.name, b"".join(buf))
                    self._dirty_seg = True      # so _roll syncs it
                    buf = []
                self._roll()
            lenb = n.to_bytes(4, "big")
            seg = self._cur
            buf.append(lenb + _crc(lenb, rec).to_bytes(4, "big") + bytes(rec))
            seg.offs.append(seg.size + _HDR)
            seg.lens.append(n)
            seg.size += _HDR + n
            self._next += 1
            self._live += 1
            self._bytes += n
            self.pushed += 1
        if buf:
            self.store.append(self._cur.name, b"".join(buf))
            self._dirty_seg = True
        self._advance()
        return first

    def _roll(self):
        if self._cur is not None and self._dirty_seg:
            # A full segment is never appended again: make it durable now so
            # flush() only ever has the one open segment to sync.
            self.store.sync(self._cur.name)
            self._dirty_seg = False
        # Always a fresh segment per run: appending after a torn tail would
        # hide the new records behind the bad frame.
        seg = _Seg("%sseg-%016d" % (self.prefix, self._next), self._next)
        self._segs.append(seg)
        self._cur = seg

    def _find(self, i):
        for seg in self._segs:      # acks come mostly in order: head first
            if seg.base <= i < seg.base + len(seg.offs):
                return seg
        return None

    def peek(self, n, after=-1):
        """Up to n (id, bytes) of unacked records with id > after, oldest
        first.  `after` lets a driver pipeline past what it has in flight."""
        out = []
        for seg in self._segs:
            if len(out) >= n:
                break
            k = max(self._head, after + 1, seg.base) - seg.base
            while k < len(seg.offs) and len(out) < n:
                i = seg.base + k
                if i not in self._done:
                    b = self.store.read_at(seg.name, seg.offs[k], seg.lens[k])
                    out.append((i, b))
                k += 1
        return out

    def ack(self, i):
        """Mark record i delivered.  Any order; unknown or repeated ids are
        ignored (MQTT may deliver a PUBACK twice).  True if it was live."""
        if type(i) is not int or i < self._head or i in self._done:
            return False
        seg = self._find(i)
        if seg is None:
            return False
        self._mark(i, seg)
        self.acked += 1
        return True

    def _mark(self, i, seg=None):
        if seg is None:
            seg = self._find(i)
        self._live -= 1
        self._bytes -= seg.lens[i - seg.base]
        self._dirty_state = True
        if i == self._head and i + 1 < seg.base + len(seg.offs) and not self._done:
            self._head = i + 1      # the usual case: in order, inside a segment
        elif i == self._head:
            self._done.add(i)
            self._advance()
        else:
            self._done.add(i)

    def _advance(self):
        # Move the head past done ids and delete segments left fully done.
        while self._segs:
            seg = self._segs[0]
            if self._head < seg.base:
                self._head = seg.base
            if self._head >= seg.end():
                if seg is self._cur:
                    break
                self._segs.pop(0)
                self.store.delete(seg.name)
                continue
            if self._head in self._done:
                self._done.remove(self._head)
                self._head += 1
            else:
                break
        if not self._segs or (self._segs[-1] is self._cur and self._head >= self._cur.end()):
            self._head = max(self._head, self._next)

    def flush(self):
        """Make pushes and acks durable: at most one store.sync (the open
        segment) and one atomic write of the ack state, only if changed."""
        seg, state = self.flush_plan()
        self.flush_write(seg, state)

    def flush_plan(self):
        """flush() in two halves, for a driver that keeps the slow part off
        its event loop: this half (on the loop) takes the segment to sync
        and the ack state as of now, and counts the outbox clean;
        flush_write(seg, state) (anywhere, one at a time) makes them durable,
        segment first, so the state never names a record the log could
        lose.  If that fails, call dirty() so the next flush retries."""
        seg = state = None
        if self._dirty_seg:
            seg = self._cur.name
            self._dirty_seg = False
        if self._dirty_state:
            state = cbor.dumps({"head": self._head, "next": self._next,
                                "dropped": self.dropped, "acked": _ranges(self._done)})
            self._dirty_state = False
        return seg, state

    def flush_write(self, seg, state):
        if seg is not None:
            self.store.sync(seg)
        if state is not None:
            self.store.write(self.prefix + "state", state)

    def dirty(self):
        """A flush_write failed: the next flush does it all again."""
        if self._cur is not None:
            self._dirty_seg = True
        self._dirty_state = True

    def stats(self):
        return {"len": self._live, "bytes": self._bytes, "dropped": self.dropped,
                "corrupt": self.corrupt, "pushed": self.pushed, "acked": self.acked,
                "segments": len(self._segs), "next_id": self._next}


def _parse_state(st):
    def nat(v):
        if type(v) is not int or v < 0:
            raise ValueError("not a count")
        return v
    if type(st) is not dict or type(st.get("acked")) is not list:
        raise ValueError("bad outbox state")
    ranges = []
    for r in st["acked"]:
        if type(r) is not list or len(r) != 2 or nat(r[0]) >= nat(r[1]):
            raise ValueError("bad range")
        ranges.append(r)
    return nat(st.get("head")), ranges, nat(st.get("dropped", 0)), nat(st.get("next"))


def _ranges(ids):
    out = []
    for i in sorted(ids):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out
