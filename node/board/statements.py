# Signed statements on a board's deploy topic (docs/ROLLBACK.md): a
# rollback to the version kept before the active one, or a removal.  The
# portable core (node/core/rollback.py) parses and checks them; the board's
# Ed25519 (node/board/ed25519.py) verifies.  Same rules as a gateway:
# trusted key, this node or "*", `from` active now, not expired (once the
# clock is set), nonce never seen (rb/nonces.cbor, written before the
# switch).  A version rolled back from is blocked for good
# (rb/blocked.cbor, kept across removal).  Loaded for one statement and
# unloaded after (deploy.py), like the package verifier.
import hashlib

from node.core import cbor, rollback as RB
from node.board import verify
from node.board.deploy import log, record, load
from node.board.runtime import wall_ms

try:
    from micropython import const
except ImportError:
    def const(x):  # type: ignore[misc]  # CPython only
        return x

_NONCES_KEPT = const(64)    # flash is small; statements expire after 24 h anyway
_NONCES = "rb/nonces.cbor"  # statement nonces spent (loaded with this module only)


def statement_id(data):
    return "".join("%02x" % x for x in hashlib.sha256(data).digest()[:16])


def remove(b, name):
    """Stop module `name` and delete it from flash (a signed removal; here,
    not in deploy.py, so pushes never load it).  Deleting its record is
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
    if b.parts.get("proxy") is not None:     # loaded (runtime.Board.__getattr__)
        b.proxy.stop(name)
    for p in (rec["pkg"], rec.get("prev")):
        if p:
            b.store.delete(p)
    b.counts["deploy_removed"] = b.counts.get("deploy_removed", 0) + 1
    b._status_due = True


def apply(b, data):
    """Apply statement bytes on board `b`; the answer goes to the pusher's
    reply topic (now for a refusal or a removal, once the target runs for
    a rollback)."""
    data = bytes(data)
    tid = statement_id(data)
    try:
        feed = b.wdt.feed if b.wdt is not None else None
        keys = verify.verifiers(b.keys, feed)
        st = RB.open_statement(data, keys, b.id, wall_ms(), ("rollback", "remove"))
        op, name, frm = st["op"], st["module"], st["from"]
        used = load(b.store, _NONCES, [])
        if st["nonce"] in used:
            raise RB.RollbackError("%s statement already used (replayed nonce)" % op)
        cur = b.mods.get(name)
        if cur is None or cur["v"] != frm:
            raise RB.RollbackError("%s statement is for %s@%s, but the active version is %s"
                                   % (op, name, frm, cur["v"] if cur else "none"))
        if op == "rollback":
            to = st["to"]
            pkg = "pkgs/%s@%s.pkg" % (name, to)
            if b.store.size(pkg) < 0:
                raise RB.RollbackError("%s@%s is not on this board's flash (a board keeps only "
                                       "the version before the active one)" % (name, to))
            hdr = verify.check(b.store, pkg, keys)      # flash may have rotted: check again
            if hdr.name != name or hdr.version != to:
                raise RB.RollbackError("%s holds %s@%s" % (pkg, hdr.name, hdr.version))
        # Spend the nonce before switching: a reset half-way must not leave
        # a statement that works twice.
        b.store.write(_NONCES, cbor.dumps((used + [st["nonce"]])[-_NONCES_KEPT:]))
    except Exception as e:      # RollbackError, PackageError, MemoryError
        b.counts["deploy_refused"] += 1
        b._status_due = True
        log("refused statement:", e)
        b.deploys.reply(tid, False, str(e))
        return
    if cur.get("mode") == "proxy":
        b.proxy.statement(data)     # its host switches or removes too (same checks)
    if op == "remove":
        remove(b, name)
        log("module %s@%s removed by signed statement" % (name, frm))
        b.deploys.reply(tid, True, "removed", "%s@%s" % (name, frm))
        return
    rec = record(hdr, pkg)
    rec["tid"], rec["state"], rec["rb_from"] = tid, "starting", frm
    b._pending["%s@%s" % (name, to)] = rec
    b.deploys.stmts.append(tid)
    log("rolling back %s %s -> %s (signed statement)" % (name, frm, to))
    b.run(rec, tid)
