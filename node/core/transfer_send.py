# The sending side of the chunked package transfer (node/core/transfer.py
# has the protocol, the message codec and the Receiver): `aegis push` runs
# one Sender per target over MQTT or QUIC, and a board hands its package to
# its proxy host with one.  Portable (MicroPython too).
import hashlib

from node.core.transfer import (MAX_CHUNK, MAX_WIN, MIN_CHUNK, Progress, Result,
                                TransferError, _clr, _field, _get, _hash, _in, _msg,
                                _ranges, _set, decode, transfer_id)


class StoreReader:
    """Adapts a store object to the Sender's reader interface."""

    def __init__(self, store, name):
        self.store, self.name = store, name
        self.size = store.size(name)
        if self.size < 0:
            raise TransferError("no such package: %s" % name)

    def read_at(self, off, n):
        return self.store.read_at(self.name, off, n)


class Sender:
    """Pushes one package.  Loop: feed every reply to receive_data(), send
    what messages_to_send(now) returns, read next_event() until None.

    eager: send the first window of chunks right behind the first offer,
    without waiting for its `want` (saves one round trip; for ordered
    links, where those chunks reach the receiver after the offer).  A
    receiver that already holds them counts them as duplicates."""

    def __init__(self, package, chunk=4096, window=16, name="", version="",
                 timeout=10000, max_retries=6, sha256=None, eager=False):
        if not MIN_CHUNK <= chunk <= MAX_CHUNK:
            raise TransferError("chunk size must be %d..%d" % (MIN_CHUNK, MAX_CHUNK))
        if not 1 <= window <= MAX_WIN:
            raise TransferError("window must be 1..%d" % MAX_WIN)
        # `package`: bytes, or an object with .size and .read_at(off, n)
        # (a StoreReader); chunks are read with self.read_at as they go out.
        if hasattr(package, "read_at"):
            self.read_at, self.size = package.read_at, package.size
        else:
            mv = memoryview(package)
            self.read_at, self.size = (lambda off, n: bytes(mv[off:off + n])), len(mv)
        if self.size < 1:
            raise TransferError("package is empty")
        self.chunk, self.window = chunk, window
        self.name, self.version = name, version
        self.timeout, self.max_retries = timeout, max_retries
        if sha256 is not None and (type(sha256) is not bytes or len(sha256) != 32):
            raise TransferError("sha256 must be 32 bytes")
        self.sha256 = sha256 or _hash(self.read_at, self.size)
        self.id = transfer_id(self.sha256)
        self.n = (self.size + chunk - 1) // chunk
        nb = (self.n + 7) // 8
        self._need = bytearray(nb)      # asked for, not yet sent
        self._conf = bytearray(nb)      # receiver confirmed it has
        self.confirmed = 0              # bytes confirmed
        self._inflight = {}             # index -> send serial
        self._serial = 0
        self._cursor = 0
        self._o = 0                     # offer number, echoed by want
        self._want_o = -1               # offer whose want we acted on
        self._polled = True
        self._out, self._events = [], []
        self._last_rx = None
        self.retries = 0
        self.chunks_sent = 0
        self.result = None              # (ok, detail) once finished
        self._offer()
        self._eager_o = -1              # offer whose want predates the eager chunks
        if eager:
            self._eager_o = self._o
            for i in range(min(window, self.n)):
                _set(self._need, i)

    def _len(self, i):
        return min(self.chunk, self.size - i * self.chunk)

    def _offer(self, reset=True):
        self._o += 1
        if reset:
            # Unsure what arrived: send nothing more until the want says.
            self._inflight = {}
            for j in range(len(self._need)):
                self._need[j] = 0
        self._polled = True
        self._out.append(_msg("offer", self.id, o=self._o, size=self.size,
                              sha256=self.sha256, chunk=self.chunk, win=self.window,
                              name=self.name, version=self.version))

    def reconnected(self, now=None):
        """The link was lost: forget what was in flight and offer again."""
        if self.result is None:
            self._out = []
            self._offer()
            self._last_rx = now

    def next_event(self):
        return self._events.pop(0) if self._events else None

    def touch(self, now):
        """Count the silence timeout from `now` (messages built ahead of
        the time they can be sent)."""
        self._last_rx = now

    def _finish(self, ok, detail):
        self.result = (ok, detail)
        self._out = []
        self._events.append(Result(self.id, ok, detail))

    def messages_to_send(self, now):
        if self.result is None:
            if self._last_rx is None:
                self._last_rx = now
            elif now - self._last_rx >= self.timeout:
                self.retries += 1
                if self.retries > self.max_retries:
                    self._finish(False, "no answer from the receiver after %d offers"
                                 % self.max_retries)
                else:
                    self._offer()
                self._last_rx = now
            while self.result is None and len(self._inflight) < self.window:
                i = self._cursor
                while i < self.n and not _get(self._need, i):
                    i += 1
                self._cursor = i
                if i >= self.n:
                    if not self._polled:
                        # Sent all we were asked for: ask what is still missing
                        # (ordered links deliver this after the chunks).
                        self._polled = True
                        self._offer(reset=False)
                    break
                _clr(self._need, i)
                self._serial += 1
                self._inflight[i] = self._serial
                d = self.read_at(i * self.chunk, self._len(i))
                self._out.append(_msg("chunk", self.id, i=i, d=d,
                                      h=hashlib.sha256(d).digest()[:8]))
                self.chunks_sent += 1
        out, self._out = self._out, []
        return out

    def _confirm(self, i):
        if not _get(self._conf, i):
            _set(self._conf, i)
            self.confirmed += self._len(i)

    def receive_data(self, b, now):
        try:
            self._handle(decode(b), now)
        except TransferError as e:
            e.tid = e.tid or self.id
            self._events.append(e)

    def _handle(self, m, now):
        t, tid = m["t"], m["id"]
        if tid != self.id:
            raise TransferError("reply for another transfer (%s)" % tid, tid)
        if self.result is not None:
            return
        self._last_rx, self.retries = now, 0
        before = self.confirmed
        if t == "want":
            o = _field(m, "o", int, 0, None, tid)
            rs, upto = _ranges(m, self.n, tid)
            if o != self._o or o == self._want_o:
                return                      # stale or duplicated want
            self._want_o = o
            # Eager chunks went out after this offer: its want cannot know
            # them yet, so they stay in flight instead of being sent twice.
            keep = self._inflight if o == self._eager_o else {}
            self._inflight, self._cursor = keep, 0
            for j in range(len(self._need)):
                self._need[j] = 0
            for i in range(upto):
                self._confirm(i)
            needed = False
            for s, e in rs:
                for i in range(s, e):
                    if i not in keep:
                        _set(self._need, i)
                        needed = True
                    if _get(self._conf, i):     # receiver lost it (restart)
                        _clr(self._conf, i)
                        self.confirmed -= self._len(i)
            # Poll again once everything asked for is out -- unless that is
            # only what is already in flight: acks and the result will come.
            self._polled = not needed and upto == self.n
        elif t == "ack":
            rs, upto = _ranges(m, self.n, tid)
            last = m.get("last")
            bad = m.get("bad", [])
            if type(bad) is not list or len(bad) > MAX_WIN:
                raise TransferError("ack 'bad' must be a short list", tid)
            ls = self._inflight.get(last, 0) if type(last) is int else 0
            if _field(m, "have", int, 0, self.n, tid) == self.n:
                for i in range(self.n):     # e.g. re-offer while it verifies
                    self._confirm(i)
            for i in list(self._inflight):
                if i < upto and not _in(rs, i):
                    del self._inflight[i]
                    self._confirm(i)
                elif self._inflight[i] < ls or i in bad:
                    # Sent before a chunk that arrived, yet missing: lost.
                    del self._inflight[i]
                    _set(self._need, i)
                    self._cursor = min(self._cursor, i)
        elif t == "result":
            ok = _field(m, "ok", bool, None, None, tid)
            detail = m.get("state" if ok else "error")
            if ok:
                for i in range(self.n):
                    self._confirm(i)
            self._finish(ok, detail if type(detail) is str else "")
            return
        elif t == "error":
            code = m.get("code")
            if code == "unknown" and self._want_o == self._o:
                self._offer()               # receiver restarted: resume
            raise TransferError("receiver: %s" % m.get("error"), tid)
        else:
            raise TransferError("unexpected %r message for a sender" % t, tid)
        if self.confirmed != before:
            self._events.append(Progress(self.id, self.confirmed, self.size))
