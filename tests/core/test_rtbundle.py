from node.core import cbor, package as pk, rtbundle as R
from helpers import TINY_WASM, SigKey, raises

KEY = SigKey(b"operator")
VERIFIERS = {pk.key_id(KEY.raw_pub): KEY.verify}
FILES = [("romfs.img", b"image bytes"), ("lib/wasm3.mpy", b"M\x06native"),
         ("lib/rommap.mpy", b"")]


def make(version="0.2.0", files=FILES, **changes):
    m, payload = R.make_manifest(version, "unix", "x64", files)
    m.update(changes)
    return R.build(m, payload, KEY.sign, KEY.raw_pub)


def test_roundtrip_and_signature():
    data = make()
    hdr = R.parse_header(data)
    pk.verify_signature(hdr, VERIFIERS)
    m = hdr.manifest
    assert hdr.name == R.KIND and hdr.version == "0.2.0"
    assert m["files"] == [["romfs.img", 11], ["lib/wasm3.mpy", 8], ["lib/rommap.mpy", 0]]
    assert data[hdr.offset:] == b"image bytesM\x06native"
    # The signed bytes are domain-separated from a module's bare manifest.
    assert hdr.manifest_bytes[:8] == R.MAGIC


def test_tampered_manifest_fails_signature():
    data = make()
    n = R.header_len(data)
    h = cbor.loads(data[12:12 + n])
    m = cbor.loads(h["manifest"])
    m["board"] = "pico_w"
    h["manifest"] = cbor.dumps(m)
    hb = cbor.dumps(h)
    hdr = R.parse_header(data[:8] + len(hb).to_bytes(4, "big") + hb + data[12 + n:])
    e = raises(pk.PackageError, pk.verify_signature, hdr, VERIFIERS)
    assert "bad signature" in str(e)


def test_never_a_module_and_never_a_runtime():
    mod = pk.build(pk.make_manifest("demo", "1.0.0", TINY_WASM), TINY_WASM, KEY.sign,
                   KEY.raw_pub)
    e = raises(R.BundleError, R.parse_header, R.MAGIC + mod[8:])
    assert "not a runtime manifest" in str(e)
    raises(R.BundleError, R.parse_header, mod)          # wrong magic
    e = raises(pk.PackageError, pk.parse_header, b"AEGISPK1" + make()[8:])
    assert "ABI" in str(e)


def test_paths_and_sizes_checked():
    for bad in ("../x", "/lib/x", "lib//x", "main.py", "aegis.json", "rt_b/lib/x",
                "rtboot.json", "rtboot.py", "MAIN.PY", "RtBoot.py", "Certs/ca.crt",
                "certs/ca.crt", "lib/a b", "lib/./x", ""):
        raises(R.BundleError, make, files=[(bad, b"x")])
    raises(R.BundleError, make, files=[("lib/x", b"1"), ("lib/x", b"2")])
    raises(R.BundleError, make, files=[])
    raises(R.BundleError, make, size=3)
    raises(R.BundleError, make, version="2")
    raises(R.BundleError, make, kind="aegis-module")
    data = make()
    raises(R.BundleError, R.parse_header, data[:20])
    raises(R.BundleError, R.parse_header, b"AEGISRT1\x00\x00\x00\x00")
    raises(R.BundleError, R.parse_header, b"AEGISRT1\x00\x00\x00\x02\xa0\xff")
