from node.core import cbor
from helpers import raises

# The pure codec: cbor.loads/dumps on MicroPython; kept as pure_* on CPython,
# where cbor_fast.py puts cbor2 behind loads/dumps.
pure_dumps = getattr(cbor, "pure_dumps", cbor.dumps)
pure_loads = getattr(cbor, "pure_loads", cbor.loads)

SAMPLES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 32, 2 ** 63, -1, -24, -25, -2 ** 63,
           "", "a", "é/ü", b"", b"\x00\xff", [], [1, [2, [3]]], {}, {"b": 1, "a": 2, "aa": 3},
           {1: "x", "k": [b"v", None, True, False]}, 1.5, -0.25]


def test_roundtrip_pure_and_default():
    for s in SAMPLES:
        b = pure_dumps(s)
        assert pure_loads(b) == s
        assert cbor.loads(b) == s
        assert cbor.loads(cbor.dumps(s)) == s


def test_canonical_bytes_match():
    # dumps (cbor2 on CPython) and the pure codec agree byte for byte on
    # everything but floats: signatures over manifests depend on it.
    for s in SAMPLES:
        if type(s) is float:
            continue
        assert cbor.dumps(s) == pure_dumps(s), s
    assert pure_dumps({"bb": 1, "a": 2, "c": 3}) == bytes.fromhex("a361610261630362626201")


def test_half_and_single_floats_decode():
    assert pure_loads(b"\xf9\x3c\x00") == 1.0
    assert pure_loads(b"\xf9\xc4\x00") == -4.0
    assert pure_loads(b"\xfa\x47\xc3\x50\x00") == 100000.0
    assert cbor.loads(b"\xf9\x3e\x00") == 1.5


def test_hostile_inputs_rejected():
    bad = [b"", b"\x81", b"\x82\x01", b"\xc1\x01", b"\x01\x02", b"\xa2\x01\x01\x01\x02",
           b"\x9f\xff", b"\x7f\xff", b"\x62\xff\xfe", b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
           b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x81" * 100 + b"\x01", b"\xf7", b"\xa1\x80\x01",
           b"\x1c"]
    for b in bad:
        raises(cbor.CBORError, pure_loads, b)
        raises(cbor.CBORError, cbor.loads, b)


def test_cannot_encode_unknown_types():
    raises(cbor.CBORError, pure_dumps, object())
    raises(cbor.CBORError, cbor.dumps, object())


def test_integer_limits():
    for n in (2 ** 64 - 1, -2 ** 64, 2 ** 32 - 1, 2 ** 16, 2 ** 8 - 1):
        assert pure_dumps(n) == cbor.dumps(n), n
        assert pure_loads(pure_dumps(n)) == n
    assert pure_dumps(2 ** 64 - 1) == b"\x1b" + b"\xff" * 8
    for n in (2 ** 64, -2 ** 64 - 1):   # (cbor2 writes these as bignum tags)
        raises(cbor.CBORError, pure_dumps, n)


def test_simple_values_and_special_floats():
    assert pure_dumps([None, True, False]) == b"\x83\xf6\xf5\xf4"
    assert pure_loads(b"\x83\xf6\xf5\xf4") == [None, True, False]
    assert pure_loads(b"\xf9\x7c\x00") == float("inf")
    assert pure_loads(b"\xf9\xfc\x00") == -float("inf")
    v = pure_loads(b"\xf9\x7e\x00")
    assert v != v                               # NaN
    assert pure_loads(b"\xf9\x00\x01") == 2.0 ** -24     # smallest subnormal
    for b in (b"\xf8\x20", b"\xf0", b"\xfc", b"\xff", b"\xfb\x00", b"\x5a\x00\x00\x00\x05ab",
              b"\xc0\x01", b"\xd8\x20\x01", b"\xa1\xf5\x01", b"\xa1\x81\x01\x01"):
        raises(cbor.CBORError, pure_loads, b)
        raises(cbor.CBORError, cbor.loads, b)


def test_nesting_limit():
    deep = b"\x81" * 32 + b"\x01"
    assert pure_loads(deep) == cbor.loads(deep)
    raises(cbor.CBORError, pure_loads, b"\x81" * 33 + b"\x01")
    raises(cbor.CBORError, cbor.loads, b"\x81" * 40 + b"\x01")
    v = 1
    for _ in range(33):
        v = [v]
    raises(cbor.CBORError, pure_dumps, v)
