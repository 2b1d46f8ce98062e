"""The fleet CA: `aegis ca init` and `aegis ca issue`, with `cryptography`.

Every QUIC link (and optionally MQTT over TLS) is mutual TLS under one CA
per fleet; a node's id is its certificate's common name.  Keys are ECDSA
P-256 (what TLS 1.3 stacks, aioquic and MicroPython's mbedTLS all take).

    DIR/ca.crt, DIR/ca.key                    aegis ca init --out DIR [--fleet F]
    PREFIX.crt, PREFIX.key, PREFIX.ca.crt     aegis ca issue NAME --ca DIR --out PREFIX
"""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.gateway.config import ConfigError, check_id

CA_DAYS = 3650
LEAF_DAYS = 825


class CAError(Exception):
    pass


def _write(path, data, secret=False):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def init(out_dir, fleet="aegis", force=False):
    """Create a fleet CA in out_dir; returns (crt path, key path)."""
    try:
        check_id(fleet, "fleet")
    except ConfigError as e:
        raise CAError(str(e))
    crt, keyp = os.path.join(out_dir, "ca.crt"), os.path.join(out_dir, "ca.key")
    if os.path.exists(keyp) and not force:
        raise CAError("%s exists; a fleet has one CA (pass --force to replace it)" % keyp)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, fleet),
                      x509.NameAttribute(NameOID.COMMON_NAME, "aegis fleet CA %s" % fleet)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write(keyp, _key_pem(key), secret=True)
    _write(crt, cert.public_bytes(serialization.Encoding.PEM))
    return crt, keyp


def load_ca(ca_dir):
    try:
        with open(os.path.join(ca_dir, "ca.crt"), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(os.path.join(ca_dir, "ca.key"), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except FileNotFoundError as e:
        raise CAError("no fleet CA in %s (%s); run `aegis ca init --out %s`"
                      % (ca_dir, e.filename, ca_dir))
    except ValueError as e:
        raise CAError("%s: not a CA made by `aegis ca init`: %s" % (ca_dir, e))
    return cert, key


def issue(name, ca_dir, prefix, dns=(), ips=()):
    """Issue a node/operator certificate; returns the three paths written."""
    try:
        check_id(name, "certificate name")
    except ConfigError as e:
        raise CAError(str(e))
    ca_cert, ca_key = load_ca(ca_dir)
    try:
        addrs = [ipaddress.ip_address(i) for i in ips]
    except ValueError as e:
        raise CAError("bad --ip: %s" % e)
    key = ec.generate_private_key(ec.SECP256R1())
    fleet = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, fleet),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    san = [x509.DNSName(name)] + [x509.DNSName(d) for d in dns] + [x509.IPAddress(a) for a in addrs]
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (prefix + ".crt", prefix + ".key", prefix + ".ca.crt")
    _write(paths[1], _key_pem(key), secret=True)
    _write(paths[0], cert.public_bytes(serialization.Encoding.PEM))
    _write(paths[2], ca_cert.public_bytes(serialization.Encoding.PEM))
    return paths


def common_name(cert):
    """The node id a certificate names (its CN)."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None
