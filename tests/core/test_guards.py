# Portable tests of the node's guards on modules: memory cap, metered-code
# verification, signed rollback statements.  Run on CPython and MicroPython.
from helpers import TINY_WASM, SigKey, raises

from node.core import memcap, meterverify, metering, rollback as rb
from node.core.package import key_id

# (module (memory (export "memory") 1)) with no maximum
NO_MAX = bytes.fromhex("0061736d01000000050301000107" "0a01066d656d6f72790200")
# TINY_WASM's memory is (memory 1 4)


def test_cap_memory_sets_or_lowers_the_maximum():
    assert memcap.memory_max(NO_MAX) is None
    capped = memcap.cap_memory(NO_MAX, 16)
    assert memcap.memory_max(capped) == 16
    assert memcap.memory_max(memcap.cap_memory(TINY_WASM, 2)) == 2
    assert memcap.cap_memory(TINY_WASM, 8) == TINY_WASM      # already within: unchanged
    e = raises(memcap.MemoryLimitError, memcap.cap_memory, NO_MAX, 0)
    assert "needs 1 memory pages, its limit is 0" in str(e)


def test_cap_memory_refuses_garbage():
    for bad in (b"", b"\x00asm", NO_MAX[:-3], b"\x00asm\x01\x00\x00\x00\x05\x02\x01\x03"):
        raises(ValueError, memcap.cap_memory, bad, 4)


def test_verify_accepts_what_the_pass_makes():
    m = metering.instrument(memcap.cap_memory(TINY_WASM, 4))
    meterverify.verify(m)


def test_verify_refuses_unmetered_and_tampered():
    e = raises(meterverify.VerifyError, meterverify.verify, TINY_WASM)
    assert "not metered" in str(e)
    m = metering.instrument(TINY_WASM)
    # Find the first charge `i32.const N; call usegas` and make N negative.
    gas = 1                                   # usegas comes after aegis.emit
    i = m.index(b"\x10" + bytes([gas]))
    j = m.rindex(b"\x41", 0, i)
    tampered = m[:j] + b"\x41\x7b" + m[i:]    # i32.const -5 (same length when N was 1 byte)
    assert len(tampered) == len(m)
    e = raises(meterverify.VerifyError, meterverify.verify, tampered)
    assert "charge" in str(e) or "negative" in str(e)


def test_verify_refuses_usegas_exported():
    # (module (import "metering" "usegas" (func (param i32))) (export "g" (func 0)))
    w = bytes.fromhex("0061736d0100000001050160017f00021301086d65746572696e670675736567"
                      "6173000007050101670000")
    e = raises(meterverify.VerifyError, meterverify.verify, w)
    assert "called directly" in str(e)


def _stmt(key, frm="2.0.0", to="1.0.0", node="*", ts=1700000000000, nonce=b"n" * 16):
    return rb.make("counter", frm, to, key.sign, key.raw_pub, nonce, ts, node=node)


def test_rollback_statement_roundtrip_and_checks():
    k = SigKey(b"ops")
    ver = {key_id(k.raw_pub): k.verify}
    st = rb.open_statement(_stmt(k), ver, "gw1", 1700000001000)
    assert (st["module"], st["from"], st["to"]) == ("counter", "2.0.0", "1.0.0")
    stranger = SigKey(b"x")
    raises(rb.RollbackError, rb.open_statement, _stmt(stranger), ver, "gw1", 1700000001000)
    e = raises(rb.RollbackError, rb.open_statement, _stmt(k, node="gw2"), ver, "gw1", 0)
    assert "for node" in str(e)
    e = raises(rb.RollbackError, rb.open_statement, _stmt(k), ver, "gw1",
               1700000000000 + rb.MAX_AGE_MS + 1)
    assert "expired" in str(e)
    raises(rb.RollbackError, rb.make, "counter", "1.0.0", "2.0.0", k.sign, k.raw_pub,
           b"n" * 16, 0)                      # not a downgrade
    good = _stmt(k)
    flipped = good[:-70] + bytes([good[-70] ^ 1]) + good[-69:]
    raises(rb.RollbackError, rb.open_statement, flipped, ver, "gw1", 0)
    for bad in (b"", b"AEGISRB1", b"AEGISRB1\xa0", b"AEGISRB1" + b"\xff" * 10, good * 100):
        raises(rb.RollbackError, rb.open_statement, bad, ver, "gw1", 0)
