# Signed rollback statements: the only way a remote party can make a node
# run an older version of a module than the one it runs.
#
# A node refuses every package older than the active version (downgrade),
# and every version it has rolled back from, so a captured old package or
# chunk stream replayed later changes nothing.  Going back on purpose needs
# this statement, signed by a trusted key:
#
#   b"AEGISRB1" | CBOR {"stmt": canonical CBOR bytes of
#                          {"op": "rollback", "module": NAME,
#                           "from": VERSION active now, "to": older VERSION,
#                           "node": NODE_ID or "*", "nonce": 16 bytes,
#                           "ts": wall-clock ms when signed},
#                       "sig": Ed25519 over the stmt bytes, "kid": key id}
#
# Replay: a statement applies only while `from` is active, and afterwards
# `from` is blocked on that node, so it can never apply twice; the node also
# remembers recent nonces and refuses statements older than MAX_AGE_MS
# (when its own clock is set).
#
# The same envelope, with {"op": "remove", "module", "from": VERSION active
# now, "node", "nonce", "ts"} (no "to"), is a signed removal (`aegis remove
# --key`): the node stops and deletes the module, under the same replay rules.
#
# Portable (MicroPython too): signing/verifying are callables handed in.
from node.core import cbor
from node.core.package import PackageError, check_name, key_id, parse_version

MAGIC = b"AEGISRB1"
MAX_BYTES = 4096
MAX_AGE_MS = 24 * 3600 * 1000
MAX_AHEAD_MS = 10 * 60 * 1000       # clock skew tolerated for "ts in the future"
CLOCK_SET_MS = 1600000000000       # a node clock below this (2020) is not set


class RollbackError(ValueError):
    pass


def make(module, from_version, to_version, sign, raw_pub, nonce, ts_ms, node="*"):
    """Statement bytes; `sign(msg) -> 64-byte signature`."""
    st = {"op": "rollback", "module": module, "from": from_version, "to": to_version,
          "node": node, "nonce": bytes(nonce), "ts": int(ts_ms)}
    _check(st)
    sb = cbor.dumps(st)
    return MAGIC + cbor.dumps({"stmt": sb, "sig": sign(sb), "kid": key_id(raw_pub)})


def make_remove(module, version, sign, raw_pub, nonce, ts_ms, node="*"):
    """Statement bytes that remove `module` while `version` is active."""
    st = {"op": "remove", "module": module, "from": version, "node": node,
          "nonce": bytes(nonce), "ts": int(ts_ms)}
    _check(st, ("remove",))
    sb = cbor.dumps(st)
    return MAGIC + cbor.dumps({"stmt": sb, "sig": sign(sb), "kid": key_id(raw_pub)})


def peek_op(data):
    """The statement's op ("rollback", "remove"), UNVERIFIED: only to pick
    the handler, which then opens the statement with open_statement."""
    try:
        h = cbor.loads(bytes(data)[8:MAX_BYTES])
        op = cbor.loads(h["stmt"]).get("op")
    except Exception:
        return None
    return op if type(op) is str else None


def _check(st, ops=("rollback",)):
    if type(st) is not dict or st.get("op") not in ops:
        raise RollbackError("not a %s statement" % " or ".join(ops))
    try:
        check_name(st.get("module"))
        frm = parse_version(st.get("from"))
        to = parse_version(st.get("to")) if st["op"] == "rollback" else None
    except PackageError as e:
        raise RollbackError("%s statement: %s" % (st["op"], e))
    if to is not None and not to < frm:
        raise RollbackError("rollback statement must go to an older version (%s -> %s)"
                            % (st["from"], st["to"]))
    node = st.get("node")
    if type(node) is not str or not 1 <= len(node) <= 64:
        raise RollbackError("rollback statement names no node")
    nonce = st.get("nonce")
    if type(nonce) is not bytes or not 8 <= len(nonce) <= 32:
        raise RollbackError("rollback statement needs an 8..32 byte nonce")
    if type(st.get("ts")) is not int or st["ts"] < 0:
        raise RollbackError("rollback statement needs a timestamp")
    return st


def is_statement(data):
    return bytes(data[:8]) == MAGIC


def open_statement(data, verifiers, node_id, now_ms, ops=("rollback",)):
    """Parse and verify statement bytes -> the statement dict.
    `verifiers`: {kid: callable(sig, msg) -> bool}; `ops` the statement
    kinds the caller applies.  Raises RollbackError."""
    data = bytes(data)
    if len(data) > MAX_BYTES or not is_statement(data):
        raise RollbackError("not a rollback statement (bad magic or too large)")
    try:
        h = cbor.loads(data[8:])
    except cbor.CBORError as e:
        raise RollbackError("rollback statement: %s" % e)
    if type(h) is not dict:
        raise RollbackError("rollback statement is not a map")
    sb, sig, kid = h.get("stmt"), h.get("sig"), h.get("kid")
    if type(sb) is not bytes or type(sig) is not bytes or len(sig) != 64 \
            or type(kid) is not bytes or len(kid) != 8:
        raise RollbackError("rollback statement lacks stmt/sig/kid")
    v = verifiers.get(kid)
    if v is None:
        raise RollbackError("rollback statement signed by an unknown key")
    if not v(sig, sb):
        raise RollbackError("bad signature on the rollback statement")
    try:
        st = cbor.loads(sb)
    except cbor.CBORError as e:
        raise RollbackError("rollback statement: %s" % e)
    _check(st, ops)
    if st["node"] != "*" and st["node"] != node_id:
        raise RollbackError("rollback statement is for node %r, not %r" % (st["node"], node_id))
    if now_ms >= CLOCK_SET_MS:
        if st["ts"] < now_ms - MAX_AGE_MS:
            raise RollbackError("rollback statement expired (signed %d s ago)"
                                % ((now_ms - st["ts"]) // 1000))
        if st["ts"] > now_ms + MAX_AHEAD_MS:
            raise RollbackError("rollback statement is dated in the future")
    return st
