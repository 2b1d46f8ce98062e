# Module pushes on a board: the core transfer receiver on flash, the
# signature and hash checks, and the answer to the pusher once the module
# runs (docs/BOARDS.md).  Code needed only while a push is in flight is
# loaded for it and unloaded after: the receiver (transfer_recv.py, 3.7 KiB
# of heap run from ROMFS) as soon as the package is complete, unless
# another transfer is arriving (then after 30 idle ticks); the codec and
# the sender once no handover is in flight; then this module itself
# (runtime.py); the verifier (~6 KiB) right after the check.  A proxy
# handover so never holds the receiver and the sender at once.
import gc
import sys

from node.core import cbor

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

_IDLE_TICKS = const(30)
_BLOCKED_KEPT = const(8)    # versions refused per module after a rollback
# Files: rb/blocked.cbor {module: [versions rolled back from]} here, and
# rb/nonces.cbor (statement nonces spent) in node/board/statements.py.
# Module-level names are qstrs the board keeps for good: few of them.


def log(*a):
    print("aegis:", *a)


def unload(*names):
    for n in names:
        sys.modules.pop(n, None)
        pkg, _, leaf = n.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and hasattr(parent, leaf):
            delattr(parent, leaf)
    gc.collect()


def load(store, name, default):
    """A small CBOR file on flash, or `default` when missing or unreadable."""
    try:
        v = cbor.loads(store.read(name) or b"")
    except ValueError:
        return default
    return v if type(v) is type(default) else default


def block(store, name, version):
    """Refuse `version` of module `name` from now on (atomic write)."""
    d = load(store, "rb/blocked.cbor", {})
    vs = [v for v in (d.get(name) or []) if v != version] + [version]
    d[name] = vs[-_BLOCKED_KEPT:]
    store.write("rb/blocked.cbor", cbor.dumps(d))


def switched(b, cur, rec):
    """Module `rec` now runs in place of `cur` (None: a new module).  The
    package it replaces stays as the rollback target (one per module); a
    rollback blocks the version it left, before the record moves, so a
    reset in between never leaves the rolled-back version acceptable."""
    name = rec["name"]
    frm = rec.pop("rb_from", None)
    old = [cur["pkg"], cur.get("prev")] if cur is not None else []
    if frm is not None:
        block(b.store, name, frm)
        rec["prev"] = None
    elif cur is not None and cur["pkg"] != rec["pkg"]:
        rec["prev"] = cur["pkg"]
    b.store.write("mods/%s.cbor" % name, cbor.dumps(
        {k: rec.get(k) for k in ("name", "v", "pkg", "size", "sub", "emit", "ports", "tid",
                                 "prev")}))
    for p in old:
        if p and p != rec["pkg"] and p != rec.get("prev"):
            b.store.delete(p)


def record(hdr, pkg):
    """What the board keeps per module (mods/<name>.cbor): small, so the
    manifest's capabilities are checked without re-reading the package."""
    m = hdr.manifest
    return {"name": hdr.name, "v": hdr.version, "pkg": pkg, "size": m["size"],
            "sub": m["subscribe"], "emit": m["emit"], "ports": m["ports"], "tid": ""}


class Deploys:
    def __init__(self, board):
        self.b = board
        self.rx = None          # transfer_recv.Receiver while pushes are in progress
        self.bad = 0            # its bad-message count, kept across unloads
        self._idle = 0
        self.stmts = []         # ids of statements whose result is still due
        # A push complete on flash has its Receiver released before the
        # check and the start (so a proxy handover never holds the receiver
        # and the sender at once): while its module starts, its id is in
        # the record in b._pending (late offers are answered from there) and
        # finish() sends the result.  Ids answered so (the last 8): their
        # late chunks are dropped quietly for 30 idle ticks (unless a new
        # transfer of the same id is receiving), as a Receiver drops them.
        self.ended = []

    def receiver(self):
        if self.rx is None:
            # Two transfers: a sender's last poll can open a new one just after
            # a refusal ended the old; idle ones expire soon to free the slot.
            from node.core.transfer_recv import Receiver
            self.rx = Receiver(
                self.b.store, max_size=int(self.b.cfg.get("max_package", 262144)),
                max_transfers=2, idle_ms=15000, is_active=self._is_active)
        self._idle = 0
        return self.rx

    def bad_count(self):
        return self.bad + (self.rx.bad if self.rx else 0)

    def tick(self, now):
        rx = self.rx
        if rx is not None:
            rx.tick(now)
            self.out()
            if rx.active():
                self._idle = 0
                return
            self._idle += 1
            if self._idle < _IDLE_TICKS:
                return
            self.bad += rx.bad
            self.rx = None      # progress is on flash: the next offer resumes
        elif self.ended:
            # Results finish() sent itself: their late chunks are dropped
            # quietly for as long as a receiver keeps its own record of
            # them (30 idle ticks); runtime.py unloads this module after.
            self._idle += 1
            if self._idle >= _IDLE_TICKS:
                self.ended = []
        p = self.b.parts.get("proxy")      # loaded, and handing a package over?
        if (p is None or not p.busy()) and "node.core.transfer" in sys.modules:
            unload("node.core.transfer", "node.core.transfer_recv", "node.core.transfer_send")

    def out(self):
        if self.rx is None:
            return
        for _, b in self.rx.messages_to_send():
            self.b.link.publish(self.b.t_reply, b, 1)

    def on_message(self, payload):
        if bytes(payload[:8]) == b"AEGISRB1":     # node.core.rollback.MAGIC
            gc.collect()
            from node.board import statements
            try:
                statements.apply(self.b, payload)
            finally:
                del statements
                unload("node.board.statements", "node.core.rollback", "node.board.verify",
                       "node.board.ed25519", "node.core.package")
            return
        from node.core import transfer as T
        if self.b._pending or self.ended:
            try:
                m = T.decode(payload)
            except ValueError:          # TransferError: the receiver counts it
                m = None
            if m is not None:
                tid = m["id"]
                if [r for r in self.b._pending.values() if r.get("tid") == tid]:
                    return self._late(m)        # its module is starting
                if tid in self.ended and m["t"] == "chunk" and (
                        self.rx is None or tid not in self.rx.active()):
                    return      # sent before its result: dropped quietly
        rx = self.receiver()
        rx.receive_data(bytes(payload), self.b.now())
        done = []
        while True:
            ev = rx.next_event()
            if ev is None:
                break
            t = type(ev).__name__
            if t == "Complete":
                # Plain values: a Complete would keep transfer_recv's code
                # alive (through its class) during the check.
                done.append((ev.tid, ev.store_name, ev.size))
            elif t == "Started":
                log("receiving %s@%s: %d bytes, %d/%d chunks held"
                    % (ev.name, ev.version, ev.size, ev.have, ev.n))
        self.out()
        del rx, T       # _complete may unload the codec: nothing here holds it
        for tid, name, size in done:
            self._complete(tid, name, size)

    def _late(self, m):
        """A message for a package already complete here: an offer (the
        pusher is unsure) is answered as the Receiver answers one for a
        package it verifies -- every chunk held --; chunks are dropped."""
        if m["t"] != "offer":
            return
        from node.core import transfer as T
        tid = m["id"]
        try:
            size = T._field(m, "size", int, 1, None, tid)
            chunk = T._field(m, "chunk", int, T.MIN_CHUNK, T.MAX_CHUNK, tid)
            n = (size + chunk - 1) // chunk
        except ValueError:              # TransferError
            self.bad += 1
            return
        self.b.link.publish(self.b.t_reply,
                            T._msg("ack", tid, n=n, have=n, ranges=[], upto=n, last=-1), 1)

    def reply(self, tid, ok, detail, module=None):
        """A final result: to a signed statement, as a gateway gives it, or
        to a push whose Receiver was released (as Receiver.finish sends)."""
        m = {"t": "result", "id": tid, "ok": ok}
        if ok:
            m["state"] = detail
            if module:
                m["module"] = module
        else:
            m["error"] = detail
        self.b.link.publish(self.b.t_reply, cbor.dumps(m), 1)

    def finish(self, tid, ok, detail, module=None):
        if tid in self.stmts:
            self.stmts.remove(tid)
            return self.reply(tid, ok, "running" if ok else detail, module)
        rx = self.rx
        if rx is not None and tid in rx.active():
            try:
                rx.finish(tid, ok, detail)
            except ValueError:      # TransferError: not complete yet
                pass
            return self.out()
        # Released by _complete: answered as Receiver.finish would.
        self.ended = [t for t in self.ended[-7:] if t != tid] + [tid]
        self._idle = 0
        if not ok:
            self.b.store.delete("incoming/%s.pkg" % tid)
        self.reply(tid, ok, str(detail))

    def _is_active(self, tid, name, version, sha256):
        if name == "aegis-runtime" and name not in self.b.mods \
                and version == self.b.rt["v"]:
            return "runtime %s already active" % version     # no transfer for a no-op
        rec = self.b.mods.get(name)
        if rec and rec["v"] == version and rec.get("tid") == tid and rec["state"] == "running":
            return "running (%s, already active)" % rec["mode"]
        return None

    def _complete(self, tid, name, size):
        b = self.b
        if self.rx is not None and self.rx.active() == [tid]:
            # Nothing else arriving: the Receiver's code goes before the
            # verifier's and the engine's load; progress is on flash.
            self.bad += self.rx.bad
            self.rx = None
            # The codec and any sender too unless a handover is sending (it
            # loads them again): the check below is the push's largest moment.
            p = b.parts.get("proxy")
            unload("node.core.transfer_recv", *(() if p is not None and p.busy() else
                                                ("node.core.transfer", "node.core.transfer_send")))
        gc.collect()
        if b.store.read_at(name, 0, 8) == b"AEGISRT1":    # a runtime bundle
            from node.board import rtupdate
            return rtupdate.complete(self, tid, name)
        from node.board import verify
        from node.core import package as pk
        try:
            feed = b.wdt.feed if b.wdt is not None else None
            if feed is None and b.cfg.get("heap_probe"):
                feed = b._probe     # the bench's heap probe samples inside the check too
            hdr = verify.check(b.store, name, verify.verifiers(b.keys, feed))
            cur = b.mods.get(hdr.name)
            if cur is not None and pk.parse_version(hdr.version) < pk.parse_version(cur["v"]):
                raise pk.PackageError("%s@%s is older than the active %s; refusing a downgrade"
                                      % (hdr.name, hdr.version, cur["v"]))
            vs = load(b.store, "rb/blocked.cbor", {}).get(hdr.name)
            if type(vs) is list and hdr.version in vs:
                raise pk.PackageError("%s@%s was rolled back on this node; refusing it again "
                                      "(publish a newer version)" % (hdr.name, hdr.version))
        except Exception as e:      # PackageError, or MemoryError on a full heap
            hdr = None
            log("refused pushed package:", e)
            b.counts["deploy_refused"] += 1
            b._status_due = True    # operators see the refusal count
            self.finish(tid, False, str(e))
        finally:
            del verify, pk
            unload("node.board.verify", "node.board.ed25519", "node.core.package")
        if hdr is None:
            return
        pkg = "pkgs/%s@%s.pkg" % (hdr.name, hdr.version)
        b.store.rename(name, pkg)
        rec = record(hdr, pkg)
        rec["tid"], rec["state"] = tid, "starting"
        b._pending["%s@%s" % (hdr.name, hdr.version)] = rec
        log("package %s@%s verified (%d bytes)" % (hdr.name, hdr.version, size))
        b.run(rec, tid)
