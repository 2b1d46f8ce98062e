"""MQTT over TLS: client contexts from the fleet CA files, and errors a
person can act on.

    ca, cert, key = resolve(ca, cert, key)   # `--cert PREFIX` convention
    ctx = context(ca, cert, key)             # ssl.SSLContext or TlsFileError
    text, kind = describe(exc)               # "tls" | "net" | "auth"

`aegis ca issue NAME --out PREFIX` writes PREFIX.crt, PREFIX.key and
PREFIX.ca.crt, so `cert = PREFIX` (no key) means all three.  Without `ca`
the system trust store is used (a public broker); with it, only the fleet
CA.  Host names are always checked against the broker's certificate.
"""
import os
import ssl

import paho.mqtt.client as mqtt


class TlsFileError(ValueError):
    """A local TLS file is missing or unusable: fix the config, not the net."""


def resolve(ca=None, cert=None, key=None):
    """(ca, cert, key) with the PREFIX convention applied: a `cert` that is
    not a file but PREFIX.crt is, and no `key`, means PREFIX.crt/.key and
    (unless `ca` is given) PREFIX.ca.crt."""
    if cert and key is None and not os.path.isfile(cert) and os.path.isfile(cert + ".crt"):
        prefix = cert
        cert, key = prefix + ".crt", prefix + ".key"
        if ca is None and os.path.isfile(prefix + ".ca.crt"):
            ca = prefix + ".ca.crt"
    if cert and key is None and not os.path.isfile(cert):
        raise TlsFileError("mqtts cert: neither %s nor %s.crt exists (cert = PREFIX of "
                           "`aegis ca issue NAME --out PREFIX`, or cert and key files)"
                           % (cert, cert))
    if (cert is None) != (key is None):
        raise TlsFileError("a client certificate needs both cert and key (or cert = PREFIX "
                           "from `aegis ca issue NAME --out PREFIX`)")
    return ca, cert, key


def context(ca=None, cert=None, key=None):
    """A client SSLContext (TLS 1.2+, CA and host name checked)."""
    for what, p in (("ca", ca), ("cert", cert), ("key", key)):
        if p is not None and not os.path.isfile(p):
            raise TlsFileError("mqtts %s file %s does not exist" % (what, p))
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except ssl.SSLError as e:
        raise TlsFileError("mqtts ca %s is not a PEM CA certificate: %s" % (ca, _reason(e)))
    except OSError as e:
        raise TlsFileError("mqtts ca %s: %s" % (ca, e))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as e:
            r = _reason(e)
            if "KEY_VALUES_MISMATCH" in r:
                raise TlsFileError("mqtts key %s does not belong to cert %s" % (key, cert))
            raise TlsFileError("mqtts cert %s / key %s unusable: %s" % (cert, key, r))
        except OSError as e:
            raise TlsFileError("mqtts cert %s / key %s: %s" % (cert, key, e))
    return ctx


def _reason(e):
    return getattr(e, "reason", None) or str(e)


# CONNACK return codes of MQTT 3.1.1 (paho hands them over as ReasonCode).
_REFUSED = {
    "bad user name or password": "the broker refused the login: bad user name or password",
    "not authorized": "the broker refused the login: not authorized (wrong or no user "
                      "name and password for this listener)",
    "identifier rejected": "the broker rejected the client id",
}


def describe_refusal(rc):
    """Text for a refused CONNACK (always kind 'auth')."""
    s = str(rc)
    return _REFUSED.get(s.lower(), "the broker refused the connection: %s" % s)


def describe(e):
    """(text, kind) for an exception from connecting or from the socket.
    kind 'tls' and 'auth' will not heal by retrying with the same files;
    'net' may (broker down, restarting)."""
    if isinstance(e, ssl.SSLCertVerificationError):
        msg = e.verify_message or _reason(e)
        if "mismatch" in msg.lower() or "hostname" in msg.lower():
            return ("TLS: the broker's certificate does not name this host (%s); issue it "
                    "with `aegis ca issue broker --dns NAME --ip ADDR`" % msg, "tls")
        return ("TLS: the broker's certificate is not trusted (%s); is ca (--ca) the CA "
                "that signed the broker's certificate?" % msg, "tls")
    if isinstance(e, ssl.SSLError):
        return _ssl_text(_reason(e))
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is the broker listening there?)", "net"
    if isinstance(e, OSError):
        return "network: %s" % (e.strerror or e), "net"
    return str(e), "net"


def _ssl_text(reason):
    r = reason.upper()
    if "CERTIFICATE_REQUIRED" in r:
        return ("TLS: the broker requires a client certificate (set cert and key, or "
                "`--cert PREFIX`)", "tls")
    if "UNKNOWN_CA" in r or "CERTIFICATE" in r:
        return ("TLS: the broker refused our client certificate (%s); is it issued by "
                "the broker's CA (`aegis ca issue`)?" % reason, "tls")
    if "WRONG_VERSION" in r or "RECORD" in r:
        return ("TLS: handshake failed (%s); is this a TLS port? mqtts:// needs the "
                "broker's TLS listener" % reason, "tls")
    return "TLS: %s" % reason, "tls"


class ReportingClient(mqtt.Client):
    """A paho client that says why a connection attempt failed: paho's own
    loop swallows the exception of a failed connect, and a broker that
    refuses our certificate does so after the TLS 1.3 handshake, as an
    alert on the first read, which paho only logs.  `report(text, kind)`
    is called on the paho thread.  Logging is on only while connecting
    (call connected()), so the publish path pays nothing for it."""

    def __init__(self, report, *a, **kw):
        super().__init__(*a, **kw)
        self._report = report
        self.on_log = self._log

    def reconnect(self):
        self.on_log = self._log
        try:
            return super().reconnect()
        except OSError as e:
            self._report(*describe(e))
            raise

    def connected(self):
        self.on_log = None

    def _log(self, client, userdata, level, buf):
        head = "failed to receive on socket: "
        if level == mqtt.MQTT_LOG_ERR and buf.startswith(head):
            why = buf[len(head):]
            self._report(*(_ssl_text(why) if "SSL" in why else ("network: " + why, "net")))


def cert_cn(path):
    """The CN of a PEM certificate (a node's id under the fleet CA), or None."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    try:
        with open(path, "rb") as f:
            c = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):
        return None
    cn = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cn[0].value if cn else None
