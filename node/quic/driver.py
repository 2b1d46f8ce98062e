"""The thin aioquic asyncio driver: one `Link` per QUIC connection, its
streams cut into frames (node/core/quicwire.py) and handed to handlers.

In the style of aioquic's asyncio/protocol.py: a QuicConnectionProtocol
subclass turns QUIC events into calls, and writes go straight to the
QuicConnection followed by a transmit.  No StreamReader/Writer pairs: the
handlers are sans-I/O objects, called on the event loop thread.

Stream handlers have `on_frame(payload)` and `on_close(reason)`.  Incoming
streams are announced to `app.on_stream(link, stream, kind)` (kind from
the stream's hello), which returns the handler or None to refuse it.
"""
import asyncio
import functools
import logging
import socket

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve as aioquic_serve
from aioquic.quic import events
from aioquic.quic.connection import QuicConnection

from node.core.quicwire import Deframer, FrameError, frame, hello, parse_hello
from node.quic import tls as qtls

MAX_FRAME = 65536 + 1024        # a full push chunk plus its CBOR
MAX_SEND_BUFFER = 4 << 20       # unacked bytes on one stream before we give up on the peer
MAX_STREAMS = 16                # streams one connection may open
ERR_PROTOCOL = 0x1              # application close codes
ERR_SLOW = 0x2
ERR_SHUTDOWN = 0x3

# aioquic logs each connection error on the "quic" logger as plain text;
# the gateway writes its own JSON line for each (refusals, closes), so keep
# the stderr log one JSON object per line.
logging.getLogger("quic").setLevel(logging.CRITICAL)


class LinkClosed(ConnectionError):
    def __init__(self, text, tls=False):
        super().__init__(text)
        self.tls = tls      # closed by a TLS alert: a retry will not help


class Stream:
    def __init__(self, link, sid, handler=None):
        self.link, self.id, self.handler = link, sid, handler
        self.deframer = Deframer(MAX_FRAME)
        self.kind = None

    def send(self, payload):
        """Write one frame.  Raises LinkClosed when the link is gone or the
        peer has stopped reading (the link is then closed)."""
        lk = self.link
        if lk.closed:
            raise LinkClosed(lk.close_reason or "link closed")
        if self.buffered() > MAX_SEND_BUFFER:
            lk.abort("peer stopped reading: %d bytes unacknowledged on stream %d"
                     % (self.buffered(), self.id), ERR_SLOW)
            raise LinkClosed(lk.close_reason)
        lk._quic.send_stream_data(self.id, frame(payload))
        lk._transmit_soon()

    def buffered(self):
        """Bytes written but not yet acknowledged by the peer's QUIC stack
        (aioquic keeps them in the stream's send buffer)."""
        st = self.link._quic._streams.get(self.id)
        if st is None:
            return 0
        s = st.sender
        return s._buffer_stop - s._buffer_start


class Link(QuicConnectionProtocol):
    """One connection.  `peer` is the authenticated node id of the other
    end; `ready` completes once it is known (or fails with the reason)."""

    def __init__(self, quic, stream_handler=None, app=None, log=None, addr=None):
        super().__init__(quic)
        self.app, self.log = app, log or (lambda *a, **k: None)
        self.addr = addr
        self.peer = None
        self.streams = {}
        self.closed = False
        self.close_reason = None
        self.close_code = None          # QUIC error code of the peer's close
        self._ended = False
        self.refused = None             # TLS refusal reason (server side)
        self.ready = asyncio.get_running_loop().create_future()
        # Nobody awaits a server link's `ready`: mark its failure as seen so
        # asyncio does not print "Future exception was never retrieved".
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.resumed = False
        self._resume_peer = None

    # ---- outgoing ----------------------------------------------------
    def open_stream(self, kind, handler):
        sid = self._quic.get_next_available_stream_id()
        s = self.streams[sid] = Stream(self, sid, handler)
        s.kind = kind
        s.send(hello(kind))
        return s

    def abort(self, reason, code=ERR_PROTOCOL):
        if self.closed:
            return
        self.log("warn", "quic link closed by us", peer=self.peer, addr=self._addr(),
                 reason=reason)
        self.close_reason = reason
        self.close(error_code=code, reason_phrase=reason[:200])
        self._terminated(reason)

    def _addr(self):
        a = self.addr
        if a is None:
            return None
        return "%s:%s" % (a[0].replace("::ffff:", ""), a[1])

    # ---- aioquic events ------------------------------------------------
    def datagram_received(self, data, addr):
        if self.addr is None:
            self.addr = addr
        super().datagram_received(data, addr)

    def quic_event_received(self, ev):
        if isinstance(ev, events.StreamDataReceived):
            self._stream_data(ev)
        elif isinstance(ev, events.HandshakeCompleted):
            self._handshake_done(ev)
        elif isinstance(ev, events.ConnectionTerminated):
            why = ev.reason_phrase or "error 0x%x" % ev.error_code
            if self.close_reason is None:
                self.close_reason = why
                self.close_code = ev.error_code
            self._terminated(why)
        elif isinstance(ev, events.StreamReset):
            s = self.streams.pop(ev.stream_id, None)
            if s is not None and s.handler is not None:
                s.handler.on_close("stream reset by the peer")

    def _handshake_done(self, ev):
        self.resumed = ev.session_resumed
        peer = qtls.peer_node_id(self._quic)
        if peer is None:
            # Resumed: no certificate this time; the identity is the one the
            # ticket was issued under (server: TicketStore; client: remembered
            # on the ticket by connect()).
            peer = qtls.resumed_identity(self._quic) or self._resume_peer
        if peer is None:
            self.abort("peer identity unknown after the handshake")
            return
        self.peer = peer
        if not self.ready.done():
            self.ready.set_result(peer)
        if self.app is not None and hasattr(self.app, "on_link"):
            self.app.on_link(self)

    def _stream_data(self, ev):
        if self.closed:
            return
        if self.peer is None:
            # Never happens with 0-RTT off; refuse rather than trust it.
            self.abort("stream data before the peer was authenticated")
            return
        s = self.streams.get(ev.stream_id)
        if s is None:
            if len(self.streams) >= MAX_STREAMS:
                self.abort("more than %d streams" % MAX_STREAMS)
                return
            s = self.streams[ev.stream_id] = Stream(self, ev.stream_id)
        try:
            for payload in s.deframer.feed(ev.data):
                if s.kind is None:
                    s.kind = parse_hello(payload)
                    s.handler = self.app.on_stream(self, s, s.kind) if self.app else None
                    if s.handler is None:
                        raise FrameError("%s streams are not served here" % s.kind)
                    continue
                if s.handler is None:
                    raise FrameError("frame on a stream without a handler")
                s.handler.on_frame(payload)
                if self.closed:
                    return
        except FrameError as e:
            self.abort("garbage on stream %d: %s" % (ev.stream_id, e))
            return
        except Exception as e:  # a handler bug: drop this link, keep the node serving
            self.log("error", "quic stream handler failed", peer=self.peer, error=repr(e))
            self.abort("internal error handling stream %d" % ev.stream_id)
            return
        if ev.end_stream:
            self.streams.pop(ev.stream_id, None)
            if s.handler is not None:
                s.handler.on_close("stream finished by the peer")

    def tls_refused(self):
        """True when the peer closed with a TLS alert (a refused
        certificate): retrying will not help."""
        return self.close_code is not None and 0x100 <= self.close_code <= 0x1FF

    def _terminated(self, why):
        if self._ended:
            return
        self._ended = self.closed = True
        if not self.ready.done():
            self.ready.set_exception(LinkClosed(self.refused or why, self.tls_refused()))
        streams, self.streams = list(self.streams.values()), {}
        for s in streams:
            if s.handler is not None:
                try:
                    s.handler.on_close(why)
                except Exception as e:      # a handler bug must not hide the close
                    self.log("error", "stream close handler failed", error=repr(e))
        if self.app is not None and hasattr(self.app, "on_link_closed"):
            self.app.on_link_closed(self, why)

    def connection_lost(self, exc):
        self._terminated("socket closed")


class ServerLink(Link):
    def __init__(self, quic, stream_handler=None, app=None, log=None, cafile=None,
                 tickets=None):
        super().__init__(quic, app=app, log=log)
        self._who = None

        def identity(node, resumed):
            self._who = node

        def refused(reason):
            self.refused = reason
            self.log("warn", "quic client refused", addr=self._addr(), reason=reason)
            if self.app is not None and hasattr(self.app, "on_refused"):
                self.app.on_refused(self, reason)
        qtls.require_client_cert(quic, cafile, tickets, identity, refused)

    def _terminated(self, why):
        if not self._ended and self.peer is None and self.refused is None:
            # e.g. the client did not trust our certificate, or gave up.
            self.log("info", "quic handshake not completed", addr=self._addr(), reason=why)
        super()._terminated(why)


async def serve(host, port, files, app, log, idle_timeout=20.0):
    """Listen for mutually authenticated QUIC connections; returns the
    aioquic server (close() it) and the TicketStore."""
    cfg = qtls.server_config(files, idle_timeout=idle_timeout)
    tickets = qtls.TicketStore()
    server = await aioquic_serve(
        host, port, configuration=cfg,
        create_protocol=functools.partial(ServerLink, app=app, log=log, cafile=files.ca,
                                          tickets=tickets))
    return server, tickets


def bound_port(server):
    return server._transport.get_extra_info("sockname")[1]


async def connect(host, port, files, app=None, log=None, ticket=None, on_ticket=None,
                  timeout=10.0, idle_timeout=20.0):
    """A Link to host:port once both ends are authenticated.  `ticket` (a
    session ticket from an earlier on_ticket call) resumes the session.
    Raises LinkClosed (refused, unreachable) or asyncio.TimeoutError."""
    loop = asyncio.get_running_loop()
    cfg = qtls.client_config(files, host, ticket=ticket, idle_timeout=idle_timeout)
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    addr = infos[0][4]
    if len(addr) == 2:
        addr = ("::ffff:" + addr[0], addr[1], 0, 0)
    holder = []

    def got_ticket(t):
        # Remember whom the ticket is from: a resumed handshake shows no
        # certificate, so this is how the next link knows its peer.
        t.aegis_peer = holder[0].peer if holder else None
        if on_ticket is not None and t.aegis_peer is not None:
            on_ticket(t)
    quic = QuicConnection(configuration=cfg, session_ticket_handler=got_ticket)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0, 0, 0))
    except OSError:
        sock.close()
        raise
    transport, link = await loop.create_datagram_endpoint(
        lambda: Link(quic, app=app, log=log, addr=addr), sock=sock)
    holder.append(link)
    if cfg.session_ticket is not None:
        link._resume_peer = getattr(cfg.session_ticket, "aegis_peer", None)
    link.connect(addr)
    try:
        await asyncio.wait_for(asyncio.shield(link.ready), timeout)
    except BaseException:
        link.close()
        transport.close()
        raise
    link._udp = transport
    return link


async def close_link(link, code=0, reason=""):
    """Close a client link and its socket, waiting briefly for the close."""
    if not link.closed:
        link.close(error_code=code, reason_phrase=reason)
    try:
        await asyncio.wait_for(link.wait_closed(), 1.0)
    except asyncio.TimeoutError:
        pass
    udp = getattr(link, "_udp", None)
    if udp is not None:
        udp.close()
