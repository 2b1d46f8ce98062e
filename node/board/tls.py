# TLS for the board's MQTT link (node/board/mqtt_async.py), in a module of
# its own so that a board on plain mqtt:// never loads it (docs/BOARDS.md
# "Heap budget"): imported when the link first builds its context or explains a
# failed handshake, and unloaded again right after (~0.8 KiB of a board's
# heap; the names it interned stay).
import sys


def _unload():
    # Out of sys.modules and the package: the running function keeps this
    # module's globals until it returns, then nothing holds them.
    sys.modules.pop(__name__, None)
    parent = sys.modules.get("node.board")
    if parent is not None and hasattr(parent, "tls"):
        delattr(parent, "tls")


def tls_context(ca, cert=None, key=None, read=None):
    """A client SSLContext from DER files (MicroPython 1.29 ssl API; works
    on CPython too for the CA).  ValueError naming the file that is bad."""
    _unload()
    import ssl
    read = read or _read
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Explicit: measured on 1.29, a client context defaults to CERT_NONE
    # (verify_mode 0) and completes handshakes with any broker; required,
    # mbedTLS checks the chain and the host name (server_hostname).
    ctx.verify_mode = ssl.CERT_REQUIRED     # type: ignore[attr-defined]  # not in the stubs
    try:
        ctx.load_verify_locations(cadata=read(ca))
    except (OSError, ValueError) as e:
        raise ValueError("TLS ca %s unusable (%s); re-run aegis flash" % (ca, _why(e)))
    if cert:
        try:
            ctx.load_cert_chain(read(cert), read(key))
        except (OSError, ValueError) as e:
            raise ValueError("TLS cert %s / key %s unusable (%s); re-run aegis flash"
                             % (cert, key, _why(e)))
    return ctx


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _why(e):
    if isinstance(e, OSError) and e.args and e.args[0] == 2:
        return "file missing"
    return str(e).strip() or repr(e)


def tls_reason(e):
    """Text for a failed TLS session, from what MicroPython's mbedTLS raises
    (measured: an untrusted broker certificate is a ValueError with the
    mbedTLS text; a broker refusing our certificate closes the socket
    mid-handshake, EPIPE/ECONNRESET)."""
    _unload()
    if e is None or isinstance(e, OSError) and e.args and e.args[0] in (32, 104, 128):
        e = e or OSError(0)
        return ("TLS: the broker closed the handshake (errno %d): our client certificate "
                "missing, or not from the broker's CA?" % e.args[0])
    t = str(e).strip()
    if "Common Name" in t or "CN" in t:
        return "TLS: the broker's certificate does not name this host (%s)" % t
    if "trusted CA" in t or "verif" in t or "certificate" in t.lower():
        return ("TLS: the broker's certificate is not trusted (%s); is ca the CA that "
                "signed the broker's certificate?" % t)
    return "TLS: handshake failed (%s)" % (t or repr(e))
