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
#
# A segment in RAM is a list [name, base, offs, lens, size] indexed by the
# constants below (a list, not a class: on a board a class and its methods
# cost heap and qstrs for good, docs/BOARDS.md "Heap budget"): base is the id of
# its first record, offs/lens the payload offset and length of each record
# (array "I"), size the bytes of valid frames; base + len(offs) is the id
# after its last record.
import binascii
from array import array
from node.core import cbor

try:
    from micropython import const
except ImportError:  # CPython: const(n) is n, as int(n) is (no def: a def costs boards heap)
    const = int

_HDR = const(8)
_NAME = const(0)
_BASE = const(1)
_OFFS = const(2)
_LENS = const(3)
_SIZE = const(4)


class OutboxError(ValueError):
    pass


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
        # -- restart: the records and ack state a previous run left --------
        # Segments: walk each one's frames until the first that is short or
        # fails its crc: that is the torn tail of a crash (or rot); nothing
        # after it is trusted.
        st, pre, nxt = self.store, self.prefix + "seg-", 0
        for name in st.list(pre):
            try:
                base = int(name[len(pre):])
            except ValueError:
                continue        # not ours; leave it alone
            seg = [name, base, array("I"), array("I"), 0]
            off = 0
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
                if len(p) < n or (binascii.crc32(p, binascii.crc32(h[:4])) & 0xFFFFFFFF
                                  != int.from_bytes(h[4:], "big")):
                    self.corrupt += 1
                    break
                seg[_OFFS].append(off + _HDR)
                seg[_LENS].append(n)
                off += _HDR + n
            seg[_SIZE] = off
            self._segs.append(seg)
            nxt = max(nxt, seg[_BASE] + len(seg[_OFFS]))
        last = nxt          # ids beyond this have no record on the store
        # Ack state {head, next, dropped, acked: [[start, end), ...]} as
        # flush_plan wrote it.  Unreadable: redeliver everything (duplicates
        # are safe, losing records is not).
        head, ranges = 0, []
        raw = st.read(self.prefix + "state")
        if raw is not None:
            try:
                state = cbor.loads(raw)
                if type(state) is not dict or type(state.get("acked")) is not list:
                    raise ValueError
                nums = [state.get("head"), state.get("dropped", 0), state.get("next")]
                for r in state["acked"]:
                    if type(r) is not list or len(r) != 2:
                        raise ValueError
                    nums += r
                for v in nums:
                    if type(v) is not int or v < 0:
                        raise ValueError
                for r in state["acked"]:
                    if r[0] >= r[1]:
                        raise ValueError
                head, ranges, self.dropped = nums[0], state["acked"], nums[1]
                nxt = max(nxt, nums[2])
            except ValueError:      # (cbor.CBORError is one)
                head, ranges = 0, []
        self._next = nxt
        self._head = head
        for s, e in ranges:
            for i in range(max(s, head), min(e, last)):
                self._done.add(i)
        for seg in self._segs:
            lens = seg[_LENS]
            for k in range(len(lens)):
                i = seg[_BASE] + k
                if i >= head and i not in self._done:
                    self._live += 1
                    self._bytes += lens[k]
        self._advance()

    # -- queue --------------------------------------------------------------

    def __len__(self):
        return self._live

    def push(self, rec):
        """Append one record; returns its id.  Drops the oldest records
        (counted in `dropped`) when the queue is over its limits."""
        return self.push_many((rec,))

    def push_many(self, items):
        """Append records in order with one store append per segment (a
        driver pushes what one batch of events produced); returns the id of
        the first (ids are consecutive).  Drops the oldest records (counted
        in `dropped`) when the queue is over its limits.  All records are
        checked before any is written."""
        for rec in items:
            n = len(rec)
            if n == 0 or n > self.max_record or n > self.max_bytes:
                raise OutboxError("record is %d bytes; allowed 1..%d"
                                  % (n, min(self.max_record, self.max_bytes)))
        first = self._next
        buf = []
        for rec in items:
            n = len(rec)
            # The item limit counts ids from the oldest unacked one, not just
            # live records: one record that is never acked (say the broker
            # refuses it) must not pin an ever-growing log behind it.
            while self._live and (self._next - self._head >= self.max_items
                                  or self._bytes + n > self.max_bytes):
                # The head is always live when _live > 0.
                self._mark(self._head, self._find(self._head))
                self.dropped += 1
            if self._cur is None or self._cur[_SIZE] >= self.seg_bytes:
                if buf:
                    self.store.append(self._cur[_NAME], b"".join(buf))
                    buf = []
                    self._dirty_seg = True
                if self._dirty_seg:
                    # A full segment is never appended again: make it durable
                    # now so flush() only ever has the one open segment to sync.
                    self.store.sync(self._cur[_NAME])
                    self._dirty_seg = False
                # Always a fresh segment per run: appending after a torn tail
                # would hide the new records behind the bad frame.
                self._cur = ["%sseg-%016d" % (self.prefix, self._next), self._next,
                             array("I"), array("I"), 0]
                self._segs.append(self._cur)
            lenb = n.to_bytes(4, "big")
            seg = self._cur
            crc = binascii.crc32(rec, binascii.crc32(lenb)) & 0xFFFFFFFF
            buf.append(lenb + crc.to_bytes(4, "big") + bytes(rec))
            seg[_OFFS].append(seg[_SIZE] + _HDR)
            seg[_LENS].append(n)
            seg[_SIZE] += _HDR + n
            self._next += 1
            self._live += 1
            self._bytes += n
            self.pushed += 1
        if buf:
            self.store.append(self._cur[_NAME], b"".join(buf))
            self._dirty_seg = True
        self._advance()
        return first

    def _find(self, n):
        for seg in self._segs:      # acks come mostly in order: head first
            if seg[_BASE] <= n < seg[_BASE] + len(seg[_OFFS]):
                return seg
        return None

    def peek(self, n, after=-1):
        """Up to n (id, bytes) of unacked records with id > after, oldest
        first.  `after` lets a driver pipeline past what it has in flight."""
        out = []
        for seg in self._segs:
            if len(out) >= n:
                break
            base, offs = seg[_BASE], seg[_OFFS]
            k = max(self._head, after + 1, base) - base
            while k < len(offs) and len(out) < n:
                i = base + k
                if i not in self._done:
                    b = self.store.read_at(seg[_NAME], offs[k], seg[_LENS][k])
                    out.append((i, b))
                k += 1
        return out

    def ack(self, n):
        """Mark record n delivered.  Any order; unknown or repeated ids are
        ignored (MQTT may deliver a PUBACK twice).  True if it was live."""
        if type(n) is not int or n < self._head or n in self._done:
            return False
        seg = self._find(n)
        if seg is None:
            return False
        self._mark(n, seg)
        self.acked += 1
        return True

    def _mark(self, n, s):
        # Record n (in segment s) is acked or dropped: out of the counts, into
        # the done set (or just past the head, the usual case).
        self._live -= 1
        self._bytes -= s[_LENS][n - s[_BASE]]
        self._dirty_state = True
        if n == self._head and n + 1 < s[_BASE] + len(s[_OFFS]) and not self._done:
            self._head = n + 1      # the usual case: in order, inside a segment
        elif n == self._head:
            self._done.add(n)
            self._advance()
        else:
            self._done.add(n)

    def _advance(self):
        # Move the head past done ids and delete segments left fully done.
        while self._segs:
            seg = self._segs[0]
            if self._head < seg[_BASE]:
                self._head = seg[_BASE]
            if self._head >= seg[_BASE] + len(seg[_OFFS]):
                if seg is self._cur:
                    break
                self._segs.pop(0)
                self.store.delete(seg[_NAME])
                continue
            if self._head in self._done:
                self._done.remove(self._head)
                self._head += 1
            else:
                break
        cur = self._cur
        if not self._segs or (self._segs[-1] is cur and self._head >= cur[_BASE] + len(cur[_OFFS])):
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
            seg = self._cur[_NAME]
            self._dirty_seg = False
        if self._dirty_state:
            acked = []          # the done ids as sorted [start, end) runs
            for i in sorted(self._done):
                if acked and acked[-1][1] == i:
                    acked[-1][1] = i + 1
                else:
                    acked.append([i, i + 1])
            state = cbor.dumps({"head": self._head, "next": self._next,
                                "dropped": self.dropped, "acked": acked})
            self._dirty_state = False
        return seg, state

    def flush_write(self, name, state):
        # name: the segment to sync, from flush_plan
        if name is not None:
            self.store.sync(name)
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

