from node.core import cbor, package as pk
from helpers import TINY_WASM, SigKey, raises

KEY = SigKey(b"operator")
OTHER = SigKey(b"mallory")
VERIFIERS = {pk.key_id(KEY.raw_pub): KEY.verify}


def make(version="1.0.0", wasm=TINY_WASM, key=KEY, **kw):
    m = pk.make_manifest("demo", version, wasm, ["sensor/#"], ["out/"], [], **kw)
    return pk.build(m, wasm, key.sign, key.raw_pub)


def test_roundtrip():
    data = make()
    hdr, wasm = pk.open_package(data, VERIFIERS)
    assert bytes(wasm) == TINY_WASM
    assert hdr.name == "demo" and hdr.version == "1.0.0"
    assert hdr.manifest["subscribe"] == ["sensor/#"]
    assert hdr.manifest["limits"]["memory_pages"] == 16


def test_signature_and_key_checks():
    e = raises(pk.PackageError, pk.open_package, make(key=OTHER), VERIFIERS)
    assert "unknown key" in str(e)
    # Same key id, wrong signature.
    forged = {pk.key_id(OTHER.raw_pub): KEY.verify}
    e = raises(pk.PackageError, pk.open_package, make(key=OTHER), forged)
    assert "bad signature" in str(e)


def test_tampered_and_truncated():
    data = make()
    e = raises(pk.PackageError, pk.open_package, data[:-1], VERIFIERS)
    assert "truncated" in str(e)
    flipped = data[:-1] + bytes((data[-1] ^ 1,))
    e = raises(pk.PackageError, pk.open_package, flipped, VERIFIERS)
    assert "hash" in str(e)
    raises(pk.PackageError, pk.open_package, b"", VERIFIERS)
    raises(pk.PackageError, pk.open_package, b"NOTAPKG!" + data[8:], VERIFIERS)
    raises(pk.PackageError, pk.open_package, data[:20], VERIFIERS)
    # Header length lies.
    raises(pk.PackageError, pk.open_package, data[:8] + b"\xff\xff\xff\xff" + data[12:], VERIFIERS)


def test_manifest_must_be_canonical_and_valid():
    m = pk.make_manifest("demo", "1.0.0", TINY_WASM)
    for k, v in [("name", "Bad Name"), ("version", "1.0"), ("abi", 2), ("size", -1),
                 ("subscribe", ["a/#/b"]), ("emit", ["a/+"]), ("sha256", b"x")]:
        m2 = dict(m)
        m2[k] = v
        raises(pk.PackageError, pk.check_manifest, m2)
    # The same manifest in a non-canonical key order is refused even if signed,
    # so one manifest has exactly one signed byte string.
    items = sorted(m.items(), key=lambda kv: kv[0], reverse=True)
    enc = getattr(cbor, "pure_dumps", cbor.dumps)     # the pure codec on either interpreter
    mb = cbor._head(5, len(items)) + b"".join(enc(k) + enc(v) for k, v in items)
    assert cbor.loads(mb) == m and mb != cbor.dumps(m)
    hdr = cbor.dumps({"manifest": mb, "sig": KEY.sign(mb), "kid": pk.key_id(KEY.raw_pub)})
    data = pk.MAGIC + len(hdr).to_bytes(4, "big") + hdr + TINY_WASM
    e = raises(pk.PackageError, pk.open_package, data, VERIFIERS)
    assert "canonical" in str(e)


def test_semver_order():
    p = pk.parse_version
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
             "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0"]
    for a, b in zip(order, order[1:]):
        assert p(a) < p(b), (a, b)
    assert p("1.0.0+build.5") == p("1.0.0")
    for bad in ["", "1", "1.0", "01.0.0", "1.0.0-", "a.b.c", "1.0.0-a..b", None]:
        raises(pk.PackageError, p, bad)


def test_bad_version_numbers_limits_and_names_are_refused():
    # parse_version's numbers: plain ASCII digits, no sign, space, "_" or
    # leading zero; a PackageError for each (never another exception).
    for v in ("01.0.0", "1.+2.0", "1.-0.0", "1. 2.0", " 1.0.0", "1.2_0.0", "1.x.0", "1..0",
              "1.\u00b2.0", "1.\u0661.0"):
        raises(pk.PackageError, pk.parse_version, v)
    assert pk.parse_version("10.0.7") == (10, 0, 7, 1, ())
    m = pk.make_manifest("demo", "1.0.0", TINY_WASM)
    # Every limit pkgmake writes is checked by package.check_manifest.
    for k in pk.DEFAULT_LIMITS:
        for bad in (-1, "1", None, 1 << 41):
            m2 = dict(m)
            m2["limits"] = dict(m["limits"])
            m2["limits"][k] = bad
            raises(pk.PackageError, pk.check_manifest, m2)
    for k, v in [("ports", [""]), ("ports", ["p" * 65]), ("ports", [1]), ("emit", [""]),
                 ("emit", ["a/#"]), ("emit", ["e" * 256]), ("subscribe", ["#/a"]),
                 ("subscribe", "a/b"), ("ports", ["p"] * 65)]:
        m2 = dict(m)
        m2[k] = v
        raises(pk.PackageError, pk.check_manifest, m2)
    m2 = dict(m)
    m2["ports"], m2["emit"] = ["p" * 64], ["e" * 255]
    assert pk.check_manifest(m2) is m2
