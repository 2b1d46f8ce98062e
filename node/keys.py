"""Ed25519 keys for package signing (gateway and operator side).

Files: PREFIX.key is a PKCS#8 PEM private key (mode 0600), PREFIX.pub a
SubjectPublicKeyInfo PEM public key.  Both are what `openssl` reads too.
"""
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey, Ed25519PublicKey)

from node.core.package import key_id


class KeyError_(ValueError):
    pass


def keygen(prefix):
    priv = Ed25519PrivateKey.generate()
    pem = priv.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    d = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(d, exist_ok=True)
    fd = os.open(prefix + ".key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    with open(prefix + ".pub", "wb") as f:
        f.write(pub)
    return prefix + ".key", prefix + ".pub"


def raw_public(pub):
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private(path):
    try:
        with open(path, "rb") as f:
            k = serialization.load_pem_private_key(f.read(), password=None)
    except FileNotFoundError:
        raise KeyError_("private key file not found: %s" % path)
    except (ValueError, TypeError) as e:
        raise KeyError_("%s is not a PEM private key: %s" % (path, e))
    if not isinstance(k, Ed25519PrivateKey):
        raise KeyError_("%s is not an Ed25519 key" % path)
    return k


def load_public(path):
    try:
        with open(path, "rb") as f:
            k = serialization.load_pem_public_key(f.read())
    except FileNotFoundError:
        raise KeyError_("public key file not found: %s" % path)
    except ValueError as e:
        raise KeyError_("%s is not a PEM public key: %s" % (path, e))
    if not isinstance(k, Ed25519PublicKey):
        raise KeyError_("%s is not an Ed25519 public key" % path)
    return k


def verifier(pub):
    def verify(sig, msg):
        try:
            pub.verify(sig, msg)
            return True
        except InvalidSignature:
            return False
    return verify


def load_verifiers(paths):
    """{key id: verify(sig, msg) -> bool} for the trusted public keys."""
    out = {}
    for p in paths:
        pub = load_public(p)
        out[key_id(raw_public(pub))] = verifier(pub)
    return out


def signer(priv):
    """(sign(msg) -> sig, raw public key bytes)."""
    return priv.sign, raw_public(priv.public_key())
