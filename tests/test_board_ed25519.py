"""The board's pure-Python Ed25519 verifier (node/board/ed25519.py) agrees
with `cryptography` on RFC 8032 vectors, real package signatures and
tampered ones, on CPython and on the real MicroPython binary (which has
neither Ed25519 nor SHA-512)."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import ROOT
from node.board import ed25519

MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")

# RFC 8032 section 7.1, tests 1-3: (public key, message, signature).
RFC = [
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]


def cases():
    """(pub, msg, sig, expected) incl. real keys and tampered inputs."""
    out = [(p, m, s, True) for p, m, s in RFC]
    for i in range(4):
        k = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"k%d" % i).digest())
        pub = k.public_key().public_bytes_raw()
        msg = hashlib.sha512(b"manifest %d" % i).digest() * (i + 1)
        sig = k.sign(msg)
        out.append((pub.hex(), msg.hex(), sig.hex(), True))
        bad = bytearray(sig)
        bad[i * 7] ^= 1
        out.append((pub.hex(), msg.hex(), bytes(bad).hex(), False))
        out.append((pub.hex(), (msg + b"x").hex(), sig.hex(), False))
    # S >= L must be refused (malleability), and a key not on the curve.
    p, m, s = RFC[1]
    s_big = bytes.fromhex(s)[:32] + (int.from_bytes(bytes.fromhex(s)[32:], "little")
                                     + ed25519.L).to_bytes(32, "little")
    out.append((p, m, s_big.hex(), False))
    out.append(("02" + "00" * 31, m, s, False))
    return out


def test_matches_cryptography_on_cpython():
    for p, m, s, want in cases():
        assert ed25519.verify(bytes.fromhex(p), bytes.fromhex(m), bytes.fromhex(s)) is want
    assert ed25519.sha512(b"abc") == hashlib.sha512(b"abc").digest()
    for n in (0, 111, 112, 127, 128, 239, 1000):
        assert ed25519.sha512(b"\xa5" * n) == hashlib.sha512(b"\xa5" * n).digest()


@pytest.mark.skipif(not os.path.exists(MICROPYTHON), reason="no MicroPython binary")
def test_matches_on_micropython(tmp_path):
    data = tmp_path / "cases.json"
    data.write_text(json.dumps(cases()))
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, json\nsys.path.insert(0, %r)\n"
        "from node.board import ed25519\n"
        "res = [ed25519.verify(bytes.fromhex(p), bytes.fromhex(m), bytes.fromhex(s)) is w\n"
        "       for p, m, s, w in json.load(open(%r))]\n"
        "print(json.dumps(res))\n" % (ROOT, str(data)))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=192K", str(script)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert len(res) == len(cases()) and all(res)
