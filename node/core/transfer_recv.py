# The receiving side of the chunked package transfer (node/core/transfer.py
# has the protocol and the codec; transfer_send.py the Sender): a gateway's
# push receiver, and a board's (node/board/deploy.py), which unloads it
# once the package is complete, before handing it to its proxy host.
# Portable (MicroPython too).
import binascii
import hashlib

from node.core import cbor
from node.core.transfer import (MAX_CHUNK, MAX_RANGES, MAX_WIN, MIN_CHUNK, Progress,
                                TransferError, _field, _get, _hash, _msg, _set, decode,
                                transfer_id)

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

_MAX_SIZE = const(16 << 20)     # default package limit of a Receiver


class Started:      # receiver accepted an offer; `have` chunks already stored
    def __init__(self, tid, name, version, size, have, n):
        self.tid, self.name, self.version = tid, name, version
        self.size, self.have, self.n = size, have, n


class Complete:     # receiver: whole package stored and its sha256 checked
    def __init__(self, tid, store_name, name, version, sha256, size):
        self.tid, self.store_name, self.name = tid, store_name, name
        self.version, self.sha256, self.size = version, sha256, size


def _missing(bits, n, limit=MAX_RANGES):
    """([start, end) ranges of clear bits, upto): the list is complete for
    indices below `upto` (== n unless it was cut at `limit` ranges)."""
    out, i, start = [], 0, -1
    while i < n:
        b = bits[i >> 3]
        if not i & 7 and i + 8 <= n and b in (0, 255):
            step = 8                            # whole byte: skip fast
        else:
            step, b = 1, b >> (i & 7) & 1 and 255
        if b == 0 and start < 0:
            if len(out) == limit:
                return out, i
            start = i
        elif b == 255 and start >= 0:
            out.append([start, i])
            start = -1
        i += step
    if start >= 0:
        out.append([start, n])
    return out, n


class _T:
    def __init__(self, tid, size, chunk, sha256, name, version):
        self.tid, self.size, self.chunk, self.sha256 = tid, size, chunk, sha256
        self.name, self.version = name, version
        self.n = (size + chunk - 1) // chunk
        self.bits = bytearray((self.n + 7) // 8)
        self.have = self.unsaved = self.since_ack = 0
        self.win, self.seen, self.verifying = 16, 0, False
        # sha256 of chunks 0..hashed-1, fed as they arrive in order (the
        # usual case), so completing re-reads only what came out of order.
        self.h, self.hashed = hashlib.sha256(), 0


class Receiver:
    """Receives packages into `store` under `prefix`.  is_active(tid, name,
    version, sha256) -> falsy, or a state text when that exact package is
    already installed and running (the offer is then answered as done)."""

    def __init__(self, store, max_size=_MAX_SIZE, max_transfers=4, is_active=None,
                 idle_ms=120000, persist_every=16, prefix="incoming/"):
        self.store, self.max_size, self.max_transfers = store, max_size, max_transfers
        self.is_active, self.idle_ms, self.prefix = is_active, idle_ms, prefix
        self.persist_every = persist_every
        self._t = {}                    # tid -> _T
        self._ended = []                # recently answered with a result (bounded)
        self._out, self._events = [], []
        self.dups = 0
        self.bad = 0

    def next_event(self):
        return self._events.pop(0) if self._events else None

    def messages_to_send(self):
        """[(tid, message bytes)]: reply on the channel that tid came from."""
        out, self._out = self._out, []
        return out

    def _send(self, t, tid, **kw):
        if t == "result" and tid not in self._ended:
            # Chunks an eager sender put behind its offer may still come:
            # drop them quietly instead of answering each "unknown".
            self._ended.append(tid)
            if len(self._ended) > 8:
                self._ended.pop(0)
        self._out.append((tid, _msg(t, tid, **kw)))

    def _error(self, tid, code, text):
        self._events.append(TransferError(text, tid))
        self._send("error", tid, code=code, error=text)

    def _names(self, tid):
        p = self.prefix + tid
        return p + ".part", p + ".state", p + ".pkg"

    def receive_data(self, b, now):
        try:
            m = decode(b)
        except TransferError as e:
            self.bad += 1
            self._events.append(e)
            return
        t, tid = m["t"], m["id"]
        try:
            if t == "offer":
                self._offer(m, tid, now)
            elif t == "chunk":
                self._chunk(m, tid, now)
            else:
                raise TransferError("unexpected %r message for a receiver" % t, tid)
        except TransferError as e:
            self.bad += 1
            self._error(tid, "bad", e.text)

    def _offer(self, m, tid, now):
        try:
            size = _field(m, "size", int, 1, None, tid)
            if size > self.max_size:
                raise TransferError("package is %d bytes; this node accepts at most %d"
                                    % (size, self.max_size), tid)
            chunk = _field(m, "chunk", int, MIN_CHUNK, MAX_CHUNK, tid)
            sha = _field(m, "sha256", bytes, 32, 32, tid)
            if transfer_id(sha) != tid:
                raise TransferError("id must be the hex of the first 16 bytes of sha256", tid)
            name = _field(m, "name", str, 0, 64, tid) if "name" in m else ""
            version = _field(m, "version", str, 0, 64, tid) if "version" in m else ""
            win = _field(m, "win", int, 1, MAX_WIN, tid) if "win" in m else 16
            o = _field(m, "o", int, 0, None, tid) if "o" in m else 0
        except TransferError as e:
            # A bad offer can never succeed: answer with a final result.
            self.bad += 1
            self._events.append(e)
            self._send("result", tid, ok=False, error=e.text)
            return
        new = _T(tid, size, chunk, sha, name, version)
        new.win, new.seen = win, now
        st = self.is_active and self.is_active(tid, name, version, sha)
        if st:
            self._send("result", tid, ok=True, state=st if type(st) is str else "active")
            return
        t = self._t.get(tid)
        if t is not None and (t.size, t.chunk, t.sha256) != (size, chunk, sha):
            self._drop(t)       # same package, new chunking: start over
            t = None
        if t is None:
            self.tick(now)
            if len(self._t) >= self.max_transfers:
                self._error(tid, "busy", "node is busy with %d transfers; retry later"
                            % len(self._t))
                return
            t = self._t[tid] = new
            self._resume(t)
            self._events.append(Started(tid, name, version, size, t.have, t.n))
        t.win, t.seen = win, now
        if t.verifying:
            self._ack(t, -1)
        else:
            rs, upto = _missing(t.bits, t.n)
            self._send("want", tid, o=o, n=t.n, ranges=rs, upto=upto)

    def _resume(self, t):
        part, state, pkg = self._names(t.tid)
        st = self.store
        if st.size(pkg) == t.size and \
                _hash(lambda o, n: st.read_at(pkg, o, n), t.size) == t.sha256:
            # Crashed after completing; hand it to the node again.
            t.have, t.verifying = t.n, True
            self._events.append(Complete(t.tid, pkg, t.name, t.version, t.sha256, t.size))
            return
        st.delete(pkg)
        raw = st.read(state)
        try:
            s = cbor.loads(raw) if raw is not None else None
            if (type(s) is dict and s.get("size") == t.size and s.get("chunk") == t.chunk
                    and s.get("sha256") == t.sha256 and type(s.get("bits")) is bytes
                    and len(s["bits"]) == len(t.bits) and st.size(part) >= 0):
                t.bits = bytearray(s["bits"])
                t.have = sum(_get(t.bits, i) for i in range(t.n))
                return
        except cbor.CBORError:
            pass
        st.delete(part)
        st.delete(state)
        # Partial files of transfers nobody resumed stay bounded too.
        stale = [x for x in st.list(self.prefix) if x.endswith(".part")
                 and x[len(self.prefix):-5] not in self._t]
        for x in stale[:max(0, len(stale) - self.max_transfers)]:
            st.delete(x)
            st.delete(x[:-5] + ".state")

    def _chunk(self, m, tid, now):
        t = self._t.get(tid)
        if t is None:
            if tid in self._ended:
                self.dups += 1
                return
            self._error(tid, "unknown", "unknown transfer %s: send an offer first" % tid)
            return
        i = _field(m, "i", int, 0, t.n - 1, tid)
        if t.verifying or _get(t.bits, i):
            self.dups += 1                  # harmless: never rewritten, but
            t.since_ack += 1                # acked so the sender's window moves
            if not t.verifying and t.since_ack >= max(1, t.win // 2):
                self._ack(t, i)
            return
        want = min(t.chunk, t.size - i * t.chunk)
        d = m.get("d")
        if type(d) is not bytes or len(d) != want:
            raise TransferError("chunk %d must be %d bytes of data" % (i, want), tid)
        h = _field(m, "h", bytes, 8, 8, tid)
        if hashlib.sha256(d).digest()[:8] != h:
            self.bad += 1
            self._events.append(TransferError("chunk %d failed its hash check" % i, tid))
            self._ack(t, -1, bad=[i])
            return
        part = self._names(tid)[0]
        self.store.write_at(part, i * t.chunk, d)
        if i == t.hashed:
            t.h.update(d)
            t.hashed += 1
        _set(t.bits, i)
        t.have += 1
        t.unsaved += 1
        t.since_ack += 1
        t.seen = now
        if t.have == t.n:
            self._complete(t)
        else:
            if t.unsaved >= self.persist_every:
                self._persist(t)
            if t.since_ack >= max(1, t.win // 2):
                self._ack(t, i)

    def _ack(self, t, last, bad=None):
        rs, upto = _missing(t.bits, t.n)
        kw = {"bad": bad} if bad else {}
        self._send("ack", t.tid, n=t.n, have=t.have, ranges=rs, upto=upto, last=last, **kw)
        t.since_ack = 0
        d = t.have * t.chunk     # bytes held: the last chunk may be short
        if _get(t.bits, t.n - 1):
            d -= t.n * t.chunk - t.size
        self._events.append(Progress(t.tid, d, t.size))

    def _persist(self, t):
        part, state, _ = self._names(t.tid)
        # Data first, then the record of it: a chunk recorded as held is
        # always on disk; one on disk but unrecorded is just asked again.
        self.store.sync(part)
        self.store.write(state, cbor.dumps({"size": t.size, "chunk": t.chunk, "sha256": t.sha256,
                                            "bits": bytes(t.bits)}))
        t.unsaved = 0

    def _complete(self, t):
        part, state, pkg = self._names(t.tid)
        st = self.store
        # Durable before the node uses it.  A store that can (the gateway's
        # DirStore) fsyncs in the background while the node verifies; the
        # install then waits for it with sync() before moving the file into
        # place.  Others sync now.
        soon = getattr(st, "sync_soon", None)
        if soon is not None:
            soon(part)
        else:
            st.sync(part)
        # The running hash covers the in-order prefix exactly as written;
        # the rest (out-of-order or resumed chunks) is read back.
        got = _hash(lambda o, n: st.read_at(part, o, n), t.size, t.h,
                    min(t.size, t.hashed * t.chunk))
        if st.size(part) != t.size or got != t.sha256:
            self._drop(t)
            text = ("package sha256 mismatch (got %s, offered %s); the data was discarded, "
                    "check the package and push again"
                    % (binascii.hexlify(got).decode(), binascii.hexlify(t.sha256).decode()))
            self._events.append(TransferError(text, t.tid))
            self._send("result", t.tid, ok=False, error=text)
            return
        st.rename(part, pkg)
        st.delete(state)
        t.verifying = True
        self._ack(t, -1)
        self._events.append(Complete(t.tid, pkg, t.name, t.version, t.sha256, t.size))

    def _drop(self, t):
        self._t.pop(t.tid, None)
        for x in self._names(t.tid):
            self.store.delete(x)

    def received_head(self, tid):
        """(object name, n): the first n bytes of transfer `tid`'s package
        are on the store under that name (chunks that came in order; what
        the running hash covers).  (None, 0) when there is no such transfer
        receiving.  Lets the node check a package's head early."""
        t = self._t.get(tid)
        if t is None or t.verifying:
            return None, 0
        return self._names(tid)[0], min(t.size, t.hashed * t.chunk)

    def refuse(self, tid, text):
        """The node will not take this package whatever the rest holds
        (e.g. its signed header failed): the final result now, the data
        dropped, chunks still on their way dropped quietly."""
        t = self._t.get(tid)
        if t is None or t.verifying:
            raise TransferError("no transfer %s receiving" % tid, tid)
        self._drop(t)
        self._send("result", tid, ok=False, error=str(text))

    def finish(self, tid, ok, detail):
        """The node's verdict on a Complete package: sends the final result.
        On failure the package file is deleted; on success it is the node's."""
        t = self._t.get(tid)
        if t is None or not t.verifying:
            raise TransferError("no completed transfer %s to finish" % tid, tid)
        del self._t[tid]
        if ok:
            self._send("result", tid, ok=True, state=str(detail))
        else:
            self.store.delete(self._names(tid)[2])
            self._send("result", tid, ok=False, error=str(detail))

    def tick(self, now):
        """Forget transfers idle for idle_ms (progress stays on the store, a
        new offer resumes it).  Completed ones wait for finish()."""
        for t in list(self._t.values()):
            if not t.verifying and now - t.seen >= self.idle_ms:
                if t.unsaved:
                    self._persist(t)
                del self._t[t.tid]
                self._events.append(TransferError(
                    "transfer idle for %d ms; progress kept, a new offer resumes it"
                    % (now - t.seen), t.tid))

    def active(self):
        return list(self._t)
