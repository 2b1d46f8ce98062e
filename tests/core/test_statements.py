# Signed rollback and removal statements (node/core/rollback.py), on both
# interpreters: the board applies them with this same code.
from node.core import package as pk, rollback as rb
from helpers import SigKey, raises

KEY = SigKey(b"operator")
VERIFIERS = {pk.key_id(KEY.raw_pub): KEY.verify}
NOW = 1800000000000
NONCE = b"0123456789abcdef"


def test_removal_statement_roundtrip_and_dispatch():
    s = rb.make_remove("demo", "2.0.0", KEY.sign, KEY.raw_pub, NONCE, NOW, node="b1")
    assert rb.is_statement(s) and rb.peek_op(s) == "remove"
    st = rb.open_statement(s, VERIFIERS, "b1", NOW, ("rollback", "remove"))
    assert st["op"] == "remove" and st["module"] == "demo" and st["from"] == "2.0.0"
    assert "to" not in st
    # A caller that applies only rollbacks (the gateway's host.rollback) refuses it.
    e = raises(rb.RollbackError, rb.open_statement, s, VERIFIERS, "b1", NOW)
    assert "not a rollback statement" in str(e)
    e = raises(rb.RollbackError, rb.open_statement, s, VERIFIERS, "b2", NOW, ("remove",))
    assert "for node 'b1', not 'b2'" in str(e)


def test_rollback_statement_still_checked_as_before():
    s = rb.make("demo", "2.0.0", "1.0.0", KEY.sign, KEY.raw_pub, NONCE, NOW)
    assert rb.peek_op(s) == "rollback"
    st = rb.open_statement(s, VERIFIERS, "any", NOW, ("rollback", "remove"))
    assert st["to"] == "1.0.0"
    raises(rb.RollbackError, rb.make, "demo", "1.0.0", "2.0.0", KEY.sign, KEY.raw_pub, NONCE, NOW)
    raises(rb.RollbackError, rb.make_remove, "demo", "x.y", KEY.sign, KEY.raw_pub, NONCE, NOW)
    e = raises(rb.RollbackError, rb.open_statement, s, VERIFIERS, "any", NOW + rb.MAX_AGE_MS + 1)
    assert "expired" in str(e)


def test_peek_op_on_garbage_is_none():
    for junk in (b"", b"AEGISRB1", b"AEGISRB1\xff", b"AEGISRB1\xa1\x64stmt\x01", b"x" * 40):
        assert rb.peek_op(junk) is None
