"""Mutual TLS for aegis QUIC links, on aioquic.

aioquic (pinned 1.7.2) verifies the *server* against a CA, but as a server
it neither asks for a client certificate (`tls.Context._request_client_
certificate` is private, "for test purposes") nor checks the chain of one
it gets (only the CertificateVerify signature).  `require_client_cert`
closes that gap on each server-side connection, inside the TLS handshake:

  * the server sends a CertificateRequest;
  * an empty Certificate (no client cert) fails the handshake with
    `certificate_required`;
  * after the client's CertificateVerify has proven it holds the key, the
    chain is verified against the fleet CA with aioquic's own
    `verify_certificate` (dates, issuer), and the CN must be a valid node id.

All of this runs before the client's Finished is accepted, i.e. before the
server has 1-RTT keys, so no stream byte of an unauthenticated client is
ever decrypted.  tests/test_quic.py proves each refusal against the real
handshake, so an aioquic upgrade that changes these internals fails there.

Session resumption: tickets are issued only after a verified handshake and
remember the node id they were issued to (`TicketStore`, server RAM,
single-use, bounded).  A resumed connection carries no certificate; its
identity is the ticket's.  0-RTT is switched off (tickets carry no early
data allowance), so every stream byte is sent under 1-RTT keys after the
handshake: nothing of a push or a mesh stream is replayable.  Resumption
still saves the certificate exchange and both signatures.
"""
import ssl

from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration

from node.ca import common_name
from node.core.envelope import EnvelopeError, check_node_id

ALPN = "aegis/1"
TICKETS_MAX = 1024


class CertRequired(tls.Alert):
    description = tls.AlertDescription.certificate_required


class TLSFiles:
    """cert, key and fleet CA paths; `from_prefix` reads `aegis ca issue`'s
    PREFIX.crt, PREFIX.key and PREFIX.ca.crt."""

    def __init__(self, cert, key, ca):
        self.cert, self.key, self.ca = cert, key, ca

    @classmethod
    def from_prefix(cls, prefix):
        return cls(prefix + ".crt", prefix + ".key", prefix + ".ca.crt")


def _load(cfg, files):
    try:
        cfg.load_cert_chain(files.cert, files.key)
        with open(files.ca, "rb"):
            pass
    except (OSError, ValueError) as e:
        raise ValueError("cannot load TLS files (cert %s, key %s, ca %s): %s"
                         % (files.cert, files.key, files.ca, e))
    cfg.cafile = files.ca


def cert_cn(path):
    """CN of the certificate in a PEM file (ValueError if unreadable)."""
    from cryptography import x509
    try:
        with open(path, "rb") as f:
            return common_name(x509.load_pem_x509_certificate(f.read()))
    except OSError as e:
        raise ValueError("cannot read certificate %s: %s" % (path, e))


def server_config(files, idle_timeout=20.0, max_stream_data=1 << 20, max_data=4 << 20):
    cfg = QuicConfiguration(is_client=False, alpn_protocols=[ALPN], idle_timeout=idle_timeout,
                            max_stream_data=max_stream_data, max_data=max_data,
                            verify_mode=ssl.CERT_REQUIRED)
    _load(cfg, files)
    return cfg


def client_config(files, server_name, ticket=None, idle_timeout=20.0,
                  max_stream_data=1 << 20, max_data=4 << 20):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], idle_timeout=idle_timeout,
                            max_stream_data=max_stream_data, max_data=max_data,
                            verify_mode=ssl.CERT_REQUIRED, server_name=server_name)
    _load(cfg, files)
    if ticket is not None and ticket.is_valid:
        cfg.session_ticket = ticket
    return cfg


def peer_node_id(quic):
    """The node id (certificate CN) of the other end of a connection whose
    handshake completed, or None on a resumed one (see TicketStore)."""
    cert = quic.tls._peer_certificate
    return common_name(cert) if cert is not None else None


class TicketStore:
    """Server side: session tickets -> (ticket, node id).  Single use (a
    ticket is popped when presented), at most TICKETS_MAX (oldest evicted);
    aioquic refuses an expired one (24 h lifetime)."""

    def __init__(self, cap=TICKETS_MAX):
        self.cap = cap
        self._t = {}

    def add(self, ticket, node_id):
        if len(self._t) >= self.cap:
            self._t.pop(next(iter(self._t)))      # oldest first (dict order)
        self._t[ticket.ticket] = (ticket, node_id)

    def pop(self, label):
        return self._t.pop(label, None)

    def __len__(self):
        return len(self._t)


def require_client_cert(quic, cafile, tickets, on_identity, on_refused):
    """Arm a server-side QuicConnection (before its first datagram) for
    mutual TLS.  on_identity(node_id, resumed) is called once the client is
    authenticated; on_refused(reason) when it is not (the handshake then
    fails with the matching TLS alert)."""
    init = quic._initialize

    def _initialize(peer_cid):
        init(peer_cid)
        ctx = quic.tls
        ctx._request_client_certificate = True
        ctx._max_early_data = None          # no 0-RTT (see module doc)
        state = {"ticket_node": None}
        handle_hello = ctx._server_handle_hello
        handle_cert = ctx._server_handle_certificate
        handle_verify = ctx._server_handle_certificate_verify

        def on_hello(input_buf, initial_buf, handshake_buf):
            handle_hello(input_buf, initial_buf, handshake_buf)
            # A resumed (PSK) handshake sends no CertificateRequest, yet
            # aioquic would still wait for a client Certificate; the client
            # is authenticated by the ticket (binder checked), so expect its
            # Finished.  Only when resumption really happened: a ticket that
            # failed validation leaves a full handshake with the request.
            if ctx.session_resumed and ctx.state == tls.State.SERVER_EXPECT_CERTIFICATE:
                ctx._server_expect_finished()

        def refuse(exc, reason):
            on_refused(reason)
            raise exc(reason)

        def on_certificate(buf):
            handle_cert(buf)
            if ctx._peer_certificate is None:
                refuse(CertRequired, "no client certificate (a fleet certificate is required)")

        def on_verify(buf):
            handle_verify(buf)              # proves the client holds the key
            cert = ctx._peer_certificate
            try:
                tls.verify_certificate(certificate=cert, chain=ctx._peer_certificate_chain,
                                       cafile=cafile)
            except tls.Alert as e:
                refuse(type(e), "client certificate not signed by this fleet's CA: %s" % e)
            node = common_name(cert)
            try:
                check_node_id(node, "certificate CN")
            except EnvelopeError as e:
                refuse(tls.AlertBadCertificate, str(e))
            on_identity(node, False)

        def fetch(label):
            hit = tickets.pop(label)
            if hit is None:
                return None
            state["ticket_node"] = hit[1]
            return hit[0]

        def issued(ticket):
            if ctx.session_resumed:
                node = state["ticket_node"]
            else:
                node = common_name(ctx._peer_certificate)
            if node is not None:
                tickets.add(ticket, node)

        ctx._server_handle_hello = on_hello
        ctx._server_handle_certificate = on_certificate
        ctx._server_handle_certificate_verify = on_verify
        ctx.get_session_ticket_cb = fetch
        ctx.new_session_ticket_cb = issued
        quic._aegis_ticket_state = state
    quic._initialize = _initialize


def resumed_identity(quic):
    """Node id a resumed (PSK) connection's ticket was issued to, or None."""
    st = getattr(quic, "_aegis_ticket_state", None)
    if st is None or not quic.tls.session_resumed:
        return None
    return st["ticket_node"]
