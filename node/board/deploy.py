# Module pushes on a board: the core transfer receiver on flash, the
# signature and hash checks, and the answer to the pusher once the module
# runs (docs/BOARDS.md).  Code needed only while a push is in flight is
# loaded for it and unloaded after: transfer.py (~6 KiB of heap run from
# ROMFS, ~20 KiB as a plain .mpy) after 30 idle ticks, then this module
# itself (runtime.py); the verifier (~6 KiB / ~13 KiB) right after the check.
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
NONCES = "rb/nonces.cbor"   # statement nonces spent (node/board/statements.py)
BLOCKED = "rb/blocked.cbor"  # {module: [versions rolled back from]}
MAGIC_STMT = b"AEGISRB1"    # node.core.rollback.MAGIC, without importing it


def log(*a):
    print("aegis:", *a)


def transfer():
    """node.core.transfer, loaded on demand."""
    from node.core import transfer as T
    # Hash packages in small pieces: a 16 KiB read needs a 16 KiB
    # contiguous block, which a fragmented 192 KiB heap may not have.
    T._HASH_PIECE = 2048
    return T


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


def blocked(store, name):
    v = load(store, BLOCKED, {}).get(name)
    return v if type(v) is list else []


def block(store, name, version):
    """Refuse `version` of module `name` from now on (atomic write)."""
    d = load(store, BLOCKED, {})
    vs = [v for v in (d.get(name) or []) if v != version] + [version]
    d[name] = vs[-_BLOCKED_KEPT:]
    store.write(BLOCKED, cbor.dumps(d))


_REC_KEYS = ("name", "v", "pkg", "size", "sub", "emit", "ports", "tid", "prev")


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
    b.store.write("mods/%s.cbor" % name, cbor.dumps({k: rec.get(k) for k in _REC_KEYS}))
    for p in old:
        if p and p != rec["pkg"] and p != rec.get("prev"):
            b.store.delete(p)


def remove(b, name):
    """Stop module `name` and delete it from flash.  Deleting its record is
    the commit point (one unlink, atomic on littlefs); packages left by a
    reset right after are swept at boot (runtime._restore)."""
    rec = b.mods.get(name)
    if rec is None:
        return
    b.store.delete("mods/%s.cbor" % name)
    del b.mods[name]
    b.bus.unsubscribe(name)
    still = [f for r in b.mods.values() for f in r["sub"]]
    b.link.unsubscribe([b.ev_in + "+/" + f for f in rec["sub"] if f not in still])
    if b.native is not None and hasattr(b.native, "stop"):
        b.native.stop(name)
    if b._proxy is not None:
        b._proxy.stop(name)
    for p in (rec["pkg"], rec.get("prev")):
        if p:
            b.store.delete(p)
    b.counts["deploy_removed"] = b.counts.get("deploy_removed", 0) + 1
    b._status_due = True


def record(hdr, pkg_name):
    """What the board keeps per module (mods/<name>.cbor): small, so the
    manifest's capabilities are checked without re-reading the package."""
    m = hdr.manifest
    return {"name": hdr.name, "v": hdr.version, "pkg": pkg_name, "size": m["size"],
            "sub": m["subscribe"], "emit": m["emit"], "ports": m["ports"], "tid": ""}


class Deploys:
    def __init__(self, board):
        self.b = board
        self.rx = None          # transfer.Receiver while pushes are in progress
        self.bad = 0            # its bad-message count, kept across unloads
        self._idle = 0
        self.stmts = []         # ids of statements whose result is still due

    def receiver(self):
        if self.rx is None:
            # Two transfers: a sender's last poll can open a new one just after
            # a refusal ended the old; idle ones expire soon to free the slot.
            self.rx = transfer().Receiver(
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
            if rx.active() or self.b._pending:
                self._idle = 0
                return
            self._idle += 1
            if self._idle < _IDLE_TICKS:
                return
            self.bad += rx.bad
            self.rx = None      # progress is on flash: the next offer resumes
        if not self.b.handing_over() and "node.core.transfer" in sys.modules:
            unload("node.core.transfer", "node.core.transfer_send")

    def out(self):
        if self.rx is None:
            return
        for _, b in self.rx.messages_to_send():
            self.b.link.publish(self.b.t_reply, b, 1)

    def on_message(self, payload):
        if bytes(payload[:8]) == MAGIC_STMT:
            gc.collect()
            from node.board import statements
            try:
                statements.apply(self.b, payload)
            finally:
                del statements
                unload("node.board.statements", "node.core.rollback", "node.board.verify",
                       "node.board.ed25519", "node.core.package")
            return
        T = transfer()
        rx = self.receiver()
        rx.receive_data(bytes(payload), self.b.now())
        while True:
            ev = rx.next_event()
            if ev is None:
                break
            t = type(ev)
            if t is T.Complete:
                self._complete(ev)
            elif t is T.Started:
                log("receiving %s@%s: %d bytes, %d/%d chunks held"
                    % (ev.name, ev.version, ev.size, ev.have, ev.n))
        self.out()

    def reply(self, tid, ok, detail, module=None):
        """The answer to a signed statement, as a gateway gives it."""
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
        try:
            self.receiver().finish(tid, ok, detail)
        except ValueError:          # transfer.TransferError: already finished
            pass
        self.out()

    def _is_active(self, tid, name, version, sha):
        if name == "aegis-runtime" and name not in self.b.mods \
                and version == self.b.rt.version():
            return "runtime %s already active" % version     # no transfer for a no-op
        rec = self.b.mods.get(name)
        if rec and rec["v"] == version and rec.get("tid") == tid and rec["state"] == "running":
            return "running (%s, already active)" % rec["mode"]
        return None

    def _complete(self, c):
        b = self.b
        gc.collect()
        if b.store.read_at(c.store_name, 0, 8) == b"AEGISRT1":    # a runtime bundle
            from node.board import rtupdate
            return rtupdate.complete(self, c)
        from node.board import verify
        from node.core import package as pk
        try:
            feed = b.wdt.feed if b.wdt is not None else None
            hdr = verify.check(b.store, c.store_name, verify.verifiers(b.keys, feed))
            cur = b.mods.get(hdr.name)
            if cur is not None and pk.parse_version(hdr.version) < pk.parse_version(cur["v"]):
                raise pk.PackageError("%s@%s is older than the active %s; refusing a downgrade"
                                      % (hdr.name, hdr.version, cur["v"]))
            if hdr.version in blocked(b.store, hdr.name):
                raise pk.PackageError("%s@%s was rolled back on this node; refusing it again "
                                      "(publish a newer version)" % (hdr.name, hdr.version))
        except Exception as e:      # PackageError, or MemoryError on a full heap
            hdr = None
            log("refused pushed package:", e)
            b.counts["deploy_refused"] += 1
            b._status_due = True    # operators see the refusal count
            self.finish(c.tid, False, str(e))
        finally:
            del verify, pk
            unload("node.board.verify", "node.board.ed25519", "node.core.package")
        if hdr is None:
            return
        pkg = "pkgs/%s@%s.pkg" % (hdr.name, hdr.version)
        b.store.rename(c.store_name, pkg)
        rec = record(hdr, pkg)
        rec["tid"], rec["state"] = c.tid, "starting"
        b._pending["%s@%s" % (hdr.name, hdr.version)] = rec
        log("package %s@%s verified (%d bytes)" % (hdr.name, hdr.version, c.size))
        b.run(rec, c.tid)
