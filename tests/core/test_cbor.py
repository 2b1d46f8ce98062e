from node.core import cbor
from helpers import raises

SAMPLES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 32, 2 ** 63, -1, -24, -25, -2 ** 63,
           "", "a", "é/ü", b"", b"\x00\xff", [], [1, [2, [3]]], {}, {"b": 1, "a": 2, "aa": 3},
           {1: "x", "k": [b"v", None, True, False]}, 1.5, -0.25]


def test_roundtrip_pure_and_default():
    for s in SAMPLES:
        b = cbor.pure_dumps(s)
        assert cbor.pure_loads(b) == s
        assert cbor.loads(b) == s
        assert cbor.loads(cbor.dumps(s)) == s


def test_canonical_bytes_match():
    # dumps (cbor2 on CPython) and the pure codec agree byte for byte on
    # everything but floats: signatures over manifests depend on it.
    for s in SAMPLES:
        if type(s) is float:
            continue
        assert cbor.dumps(s) == cbor.pure_dumps(s), s
    assert cbor.pure_dumps({"bb": 1, "a": 2, "c": 3}) == bytes.fromhex("a361610261630362626201")


def test_half_and_single_floats_decode():
    assert cbor.pure_loads(b"\xf9\x3c\x00") == 1.0
    assert cbor.pure_loads(b"\xf9\xc4\x00") == -4.0
    assert cbor.pure_loads(b"\xfa\x47\xc3\x50\x00") == 100000.0
    assert cbor.loads(b"\xf9\x3e\x00") == 1.5


def test_hostile_inputs_rejected():
    bad = [b"", b"\x81", b"\x82\x01", b"\xc1\x01", b"\x01\x02", b"\xa2\x01\x01\x01\x02",
           b"\x9f\xff", b"\x7f\xff", b"\x62\xff\xfe", b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
           b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x81" * 100 + b"\x01", b"\xf7", b"\xa1\x80\x01",
           b"\x1c"]
    for b in bad:
        raises(cbor.CBORError, cbor.pure_loads, b)
        raises(cbor.CBORError, cbor.loads, b)


def test_cannot_encode_unknown_types():
    raises(cbor.CBORError, cbor.pure_dumps, object())
    raises(cbor.CBORError, cbor.dumps, object())
