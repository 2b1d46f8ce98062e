"""The TLS files of a board's [mqtt] for `aegis flash` (node/flash.py).

Same keys as a gateway's config (docs/SECURITY.md): `ca`, `cert`, `key`
(or `cert = PREFIX` of `aegis ca issue`), `username` with `password` or
`password_file`.  The files are checked here, on the host, with the same
code the gateway uses (node/mqtt/tls.py: missing file, not PEM, key not
matching its certificate), so a bad file is a flash error rather than a
board that silently never connects.  MicroPython's mbedTLS takes DER, so
they are converted: certs/ca.der, certs/client.der, certs/client.key.der
(PKCS#8).  A CA file with several certificates keeps only the first (the
fleet CA): mbedTLS parses one DER certificate per load.
"""
import os

CA, CERT, KEY = "certs/ca.der", "certs/client.der", "certs/client.key.der"


class CertError(ValueError):
    pass


def _path(base, p):
    return p if os.path.isabs(p) else os.path.join(base, p)


def board_mqtt(mq, base, where, stage_dir):
    """(board [mqtt] dict, {board path: host file}) from a node config's
    [mqtt]; DER files are written into stage_dir (key mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from node.mqtt import tls
    m = dict(mq)
    url = m["url"]
    if not (url.startswith("mqtt://") or url.startswith("mqtts://")):
        raise CertError("%s: [mqtt] url %r must be mqtt://host:port or mqtts://host:port"
                        % (where, url))
    if "password_file" in m:
        pf = _path(base, m.pop("password_file"))
        try:
            with open(pf) as f:
                m["password"] = f.readline().rstrip("\r\n")
        except OSError as e:
            raise CertError("%s: [mqtt] password_file: %s" % (where, e))
    for k in ("username", "password"):
        if k in m and not isinstance(m[k], str):
            raise CertError("%s: [mqtt] %s must be a string" % (where, k))
    paths = {k: _path(base, m[k]) for k in ("ca", "cert", "key") if isinstance(m.get(k), str)}
    for k in ("ca", "cert", "key"):
        m.pop(k, None)
    if not url.startswith("mqtts://"):
        return m, {}
    try:
        ca, cert, key = tls.resolve(paths.get("ca"), paths.get("cert"), paths.get("key"))
        if ca is None:
            raise CertError("%s: mqtts:// on a board needs [mqtt] ca (the fleet CA; boards have "
                            "no system trust store)" % where)
        tls.context(ca, cert, key)      # exists, PEM, key belongs to cert
    except tls.TlsFileError as e:
        raise CertError("%s: %s" % (where, e))
    os.makedirs(stage_dir, exist_ok=True)
    files = {}

    def put(dst, data, secret=False):
        p = os.path.join(stage_dir, os.path.basename(dst))
        fd = os.open(p + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        os.fchmod(fd, 0o600 if secret else 0o644)   # a stale .tmp keeps its old mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(p + ".tmp", p)
        files[dst] = p

    der = serialization.Encoding.DER
    with open(ca, "rb") as f:
        cas = x509.load_pem_x509_certificates(f.read())
    put(CA, cas[0].public_bytes(der))
    m["ca"] = CA
    if cert:
        with open(cert, "rb") as f:
            put(CERT, x509.load_pem_x509_certificates(f.read())[0].public_bytes(der))
        with open(key, "rb") as f:
            k = serialization.load_pem_private_key(f.read(), None)
        put(KEY, k.private_bytes(der, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()), secret=True)
        m["cert"], m["key"] = CERT, KEY
    return m, files
