"""`aegis push FILE --quic HOST:PORT --cert PREFIX`: stream a signed package
straight to one gateway over QUIC (mutual TLS with the fleet certificate).

The same transfer.Sender as the MQTT push runs over one QUIC stream.  When
the link drops (gateway restart, network change, idle timeout) the client
reconnects with backoff, resuming the TLS session with the ticket the
gateway gave it, and `sender.reconnected()` re-offers: the gateway's `want`
lists only the chunks it is missing.
"""
import asyncio
import sys
import time

from node.core import package as pk
from node.core import transfer as T
from node.core.transfer_send import Sender
from node.quic import driver
from node.quic.tls import TLSFiles

DEFAULT_CHUNK = 65536           # the largest transfer.py allows: fewest messages
DEFAULT_WINDOW = 16             # 1 MiB in flight = the stream flow-control window
BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0, 3.0)
SILENT_S = 2.0          # no reply this long: probe the link
FIRST_CONNECT_S = 15.0  # never reached the gateway this long: give up


class PushError(Exception):
    pass


class UsageError(PushError):
    pass


def parse_hostport(s):
    host, sep, port = s.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError("--quic wants HOST:PORT, got %r" % s)
    return host, int(port)


def now_ms():
    return int(time.monotonic() * 1000)


class _Stream:
    def __init__(self, sender, wake):
        self.sender, self.wake = sender, wake

    def on_frame(self, payload):
        self.sender.receive_data(payload, now_ms())
        self.wake.set()

    def on_close(self, why):
        self.wake.set()


class QuicPush:
    def __init__(self, hostport, prefix, data, chunk=DEFAULT_CHUNK, window=DEFAULT_WINDOW,
                 timeout_s=300.0, log=None):
        self.host, self.port = parse_hostport(hostport)
        self.files = TLSFiles.from_prefix(prefix)
        try:
            self.hdr = pk.parse_header(data[:12 + pk.HEADER_MAX])
        except pk.PackageError as e:
            raise PushError("not a package: %s" % e)
        self.sender = Sender(data, chunk=chunk, window=window, name=self.hdr.name,
                               version=self.hdr.version, timeout=3000, max_retries=20)
        self.timeout_s = timeout_s
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.ticket = None
        self.node = None
        self.connects = 0
        self.resumed = 0
        self.result = None
        self._shown = -1
        self._errors = 0

    def _on_ticket(self, t):
        self.ticket = t

    async def run(self):
        """(ok, detail).  Raises PushError for what no retry can fix."""
        started = time.monotonic()
        deadline = started + self.timeout_s
        fails = 0
        while self.result is None and time.monotonic() < deadline:
            try:
                link = await driver.connect(self.host, self.port, self.files,
                                            ticket=self.ticket, on_ticket=self._on_ticket,
                                            timeout=min(5.0, max(0.1, deadline - time.monotonic())))
            except ValueError as e:     # unreadable cert/key/CA files
                raise UsageError(str(e))
            except (OSError, asyncio.TimeoutError, driver.LinkClosed) as e:
                why = str(e) or type(e).__name__
                if getattr(e, "tls", False):
                    raise PushError("TLS handshake with %s:%d failed: %s"
                                    % (self.host, self.port, why))
                delay = BACKOFF[min(fails, len(BACKOFF) - 1)]
                fails += 1
                if not self.connects and time.monotonic() - started > min(FIRST_CONNECT_S,
                                                                          self.timeout_s):
                    raise ConnectionError(
                        "no QUIC answer from %s:%d (%s); is the gateway's [quic] listen "
                        "reachable over UDP?" % (self.host, self.port, why))
                if fails in (1, 3) or fails % 10 == 0:
                    self.log("cannot reach %s:%d (%s); retrying" % (self.host, self.port, why))
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                continue
            fails = 0
            self.connects += 1
            self.resumed += link.resumed
            self.node = link.peer
            if self.connects == 1:
                self.log("pushing %s@%s (%d bytes) to %s at %s:%d over QUIC"
                         % (self.hdr.name, self.hdr.version, self.sender.size, link.peer,
                            self.host, self.port))
            else:
                self.log("reconnected to %s (%s); resuming" % (
                    link.peer, "session resumed" if link.resumed else "full handshake"))
                self.sender.reconnected(now_ms())
            try:
                await self._run_link(link, deadline)
            finally:
                await driver.close_link(link)
            if self.result is None and link.tls_refused():
                raise PushError("refused by the gateway: %s" % link.close_reason)
            if self.result is None and link.closed:
                self.log("link to %s lost (%s)" % (link.peer, link.close_reason))
        if self.result is None:
            s = self.sender
            return False, "timed out after %.0fs (%d%% confirmed)" % (
                self.timeout_s, 100 * s.confirmed // s.size)
        return self.result

    async def _run_link(self, link, deadline):
        wake = asyncio.Event()
        stream = link.open_stream("push", _Stream(self.sender, wake))
        last_rx = time.monotonic()
        while self.result is None and not link.closed and time.monotonic() < deadline:
            try:
                for m in self.sender.messages_to_send(now_ms()):
                    stream.send(m)
            except driver.LinkClosed:
                break
            self._events()
            if self.result is not None:
                break
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), 0.05)
                last_rx = time.monotonic()
            except asyncio.TimeoutError:
                if time.monotonic() - last_rx > SILENT_S:
                    await self._probe(link)
                    last_rx = time.monotonic()
        self._events()

    async def _probe(self, link):
        """The gateway went quiet: a restarted one does not know this
        connection and drops its packets without a word, so ask for a
        ping and reconnect when none comes back (rather than waiting for
        the idle timeout)."""
        try:
            await asyncio.wait_for(link.ping(), SILENT_S)
        except (asyncio.TimeoutError, ConnectionError):
            link.abort("gateway did not answer a ping for %.0fs" % SILENT_S)

    def _events(self):
        while True:
            ev = self.sender.next_event()
            if ev is None:
                return
            if isinstance(ev, T.Progress):
                pct = 100 * ev.done // max(1, ev.total)
                if pct // 10 != self._shown // 10 or pct == 100 and self._shown != 100:
                    self._shown = pct
                    n = pct * 20 // 100
                    self.log("%s: %3d%% [%s%s] %d/%d bytes" % (
                        self.node, pct, "#" * n, "." * (20 - n), ev.done, ev.total))
            elif isinstance(ev, T.Result):
                self.result = (ev.ok, ev.detail)
            elif isinstance(ev, T.TransferError):
                self._errors += 1
                if self._errors <= 5:
                    self.log("%s: %s" % (self.node, ev.text))


def push(hostport, prefix, data, **kw):
    """Run a QUIC push; returns (QuicPush, (ok, detail))."""
    p = QuicPush(hostport, prefix, data, **kw)
    return p, asyncio.run(p.run())
