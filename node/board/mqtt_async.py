# asyncio driver for node/core/mqtt.py, for MicroPython (1.29 asyncio) and
# CPython alike: owns the TCP socket, the clock and reconnection; the
# protocol is all in the core.  Three tasks per connection, because
# MicroPython's asyncio lets only one task wait on a socket per direction:
# a reader (the only reader), a writer (the only writer, woken by `_ev`)
# and a ticker (keepalive).  Whoever finds the link dead calls _end(); run()
# then cancels the three, backs off and reconnects.
#
#   link = MQTTLink("broker", 1883, "node-1", subscriptions=[("a/#", 1)])
#   asyncio.create_task(link.run())
#   pid = await link.publish_wait("aegis/acme/ev/node-1/t", payload)
#   async for ev in link: ...    # core events, plus LinkDown(reason)
#       link.ack(msg) after the message is durably handled (QoS 1)
#
# TLS (mqtts://; node/board/tls.py, loaded only then): tls=(ca, cert, key)
# names DER files on flash (what `aegis flash` writes; MicroPython's mbedTLS
# takes DER); cert/key may be None (password login on a server-TLS
# listener).  The context is built once, the handshake happens on the first
# read/write, so its failure shows up before CONNACK and is reported as kind
# "tls" (see LinkDown).
import asyncio

from node.core import mqtt

try:
    from time import ticks_ms, ticks_diff
except ImportError:             # CPython (the tests)
    from node.board.hostcompat import ticks_ms, ticks_diff  # type: ignore  # CPython only

try:
    from random import getrandbits
except ImportError:             # ports built without random
    from node.board.hostcompat import getrandbits  # type: ignore


class LinkDown:
    """The connection ended (reason text); the link reconnects by itself.
    kind: "net" (broker unreachable or gone), "tls" (handshake refused or
    TLS files unusable), "auth" (CONNACK refused the login), "proto"."""

    def __init__(self, reason, kind="net"):
        self.reason = reason
        self.kind = kind


class MQTTLink:
    def __init__(self, host, port, client_id, subscriptions=(), tick_ms=1000,
                 backoff_ms=(250, 30000), connect_timeout_ms=10000,
                 max_events=16, read_size=512, write_max=0, tls=None, **client_kw):
        self.client = mqtt.Client(client_id, **client_kw)
        self.client.drop_big = True         # a message over max_packet: counted, not a reconnect
        self.host = host
        self.port = port
        self.tls = tls                      # (ca, cert, key) DER paths, or None;
                                            # the SSLContext once built from them
        self.kind = None                    # kind of the last LinkDown
        self._exc = None                    # first exception of this session
        self.subscriptions = list(subscriptions)
        self.tick_ms = tick_ms
        self.backoff_ms = backoff_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.max_events = max_events        # unread events before reading pauses
        self.write_max = write_max          # bytes per socket write (0: all queued)
        self._buf = bytearray(read_size)    # one reused receive buffer
        self._events = []
        # Two Events (~230 bytes each on a board).  _ev: the link changed
        # (events queued or taken, a PUBACK freed room in the window, the
        # core has bytes to send); every waiter (get, publish_wait, the
        # reader's backpressure, the writer) re-checks its own condition.
        # Set it only on a real change: a waiter that set it while finding
        # nothing would wake the others, and they it, for ever.
        self._ev = asyncio.Event()
        # _done: this connection is over; also set by stop() to cut a
        # backoff short.  _error: why it ended (the first reason wins);
        # not None from then until the next session starts.
        self._done = asyncio.Event()
        self._error = None
        self._stop = False
        # run() has returned: True, or stop()'s Event to set (made only then).
        self._ended = None
        self.connected = False
        self.sessions = 0                   # CONNACKs seen; tests and stats
        self._last = ticks_ms()
        self._t = 0

    def now(self):
        # Monotonic ms for the core, from ticks that wrap on boards (the
        # ticker calls this every second, far inside the wrap period).
        n = ticks_ms()
        self._t += ticks_diff(n, self._last)
        self._last = n
        return self._t

    # --- app side ---------------------------------------------------------

    def publish(self, topic, payload, qos=1, retain=False):
        """Packet id (0 for QoS 0), or None when the window is full or QoS 0
        meets a down link.  QoS 1 is queued while the link is down."""
        pid = self.client.publish(topic, payload, qos, retain, self.now())
        if pid is not None:     # bytes for the writer; a refusal queued none, and
            self._ev.set()      # setting then would wake publish_wait's others in a loop
        return pid

    async def publish_wait(self, topic, payload, qos=1, retain=False):
        while True:
            pid = self.publish(topic, payload, qos, retain)
            if pid is not None:
                return pid
            self._ev.clear()
            await self._ev.wait()

    def subscribe(self, filters):
        """Remembered, and re-sent whenever the broker lost our session."""
        self.subscriptions.extend(filters)
        if self.connected:
            self.client.subscribe(filters, self.now())
            self._ev.set()

    def unsubscribe(self, filters):
        """Forget filters (plain strings): not re-sent after a session loss,
        and UNSUBSCRIBEd now when connected (else the next session's
        SUBSCRIBE, for a lost session, leaves them out anyway)."""
        self.subscriptions = [s for s in self.subscriptions if s[0] not in filters]
        if self.connected and filters:
            self.client.unsubscribe(list(filters), self.now())
            self._ev.set()

    def ack(self, msg):
        if self.client.ack(msg):
            self._ev.set()

    async def get(self):
        while not self._events:
            self._ev.clear()
            await self._ev.wait()
        self._ev.set()          # room for the reader and publish_wait
        return self._events.pop(0)

    def __aiter__(self):
        return self

    __anext__ = get         # `async for ev in link`: one function, not two

    async def stop(self, timeout_ms=2000):
        """Send DISCONNECT (so the broker drops the will), end run() and wait
        for it; QoS 1 publishes still unacked stay in self.client."""
        self._stop = True
        self.client.disconnect()
        self._ev.set()
        if self._error is not None:     # between sessions: end the backoff
            self._done.set()
        if self._ended is True:
            return
        # A second stop() waits on the same Event (a new one would leave the
        # first caller waiting out its whole timeout).
        self._ended = ended = self._ended or asyncio.Event()
        try:
            await asyncio.wait_for(ended.wait(), timeout_ms / 1000)
        except asyncio.TimeoutError:
            pass

    # --- connection loop ----------------------------------------------------

    async def run(self):
        fails = 0
        try:
            while not self._stop:
                before = self.sessions
                self.kind = "net"
                why = await self._session()
                self._error = why           # also: not in a session (stop())
                self.connected = False
                up = self.sessions > before
                if not up and self.tls and self.kind == "net" and (
                        self._exc is not None or why == "closed by broker"):
                    self.kind = "tls"       # died before CONNACK, inside the handshake
                    from node.board.tls import tls_reason
                    why = tls_reason(self._exc)
                self._events.append(LinkDown(why, self.kind))
                self._ev.set()
                if self._stop:
                    return
                fails = 0 if up else fails + 1
                # Exponential backoff, capped, with jitter in [d/2, d] so a fleet
                # that lost its broker does not come back in lockstep.  A refused
                # handshake or login will not heal by itself: wait the longest.
                d = min(self.backoff_ms[1], self.backoff_ms[0] << min(fails, 16))
                if not up and self.kind in ("tls", "auth"):
                    d = self.backoff_ms[1]
                d = d // 2 + getrandbits(16) % (d // 2 + 1)
                self._done.clear()          # stop() sets it: no need to wait on
                if self._stop:
                    return
                try:
                    await asyncio.wait_for(self._done.wait(), d / 1000)
                except asyncio.TimeoutError:
                    pass
        finally:
            ended, self._ended = self._ended, True
            if ended is not None:
                ended.set()

    async def _session(self):
        c = self.client
        c.reset()
        self._done.clear()
        self._error = None
        self._exc = None
        kw = {}
        if self.tls:
            if type(self.tls) is tuple:     # not built yet (or it failed)
                try:
                    from node.board.tls import tls_context
                    self.tls = tls_context(*self.tls)
                except (ValueError, OSError, MemoryError) as e:
                    self.kind = "tls"
                    return str(e)
            kw = {"ssl": self.tls, "server_hostname": self.host}
        try:
            conn = asyncio.open_connection(self.host, self.port, **kw)
            r, w = await asyncio.wait_for(conn, self.connect_timeout_ms / 1000)  # type: ignore[var-annotated]
        except Exception as e:
            return "connect failed: %r" % (e,)
        if self._stop:
            w.close()
            return "stopped"
        c.connect(self.now())
        tasks = [asyncio.create_task(self._reader(r)), asyncio.create_task(self._writer(w)),
                 asyncio.create_task(self._tick())]
        await self._done.wait()
        for t in tasks:
            t.cancel()
        try:
            w.close()
            await w.wait_closed()
        except Exception:
            pass
        return self._error

    def _end(self, why):
        if self._error is None:
            self._error = why
        self._done.set()

    def _pump(self):
        c = self.client
        for ev in c.events():
            t = type(ev)
            if t is mqtt.Connected:
                self.connected = True
                self.sessions += 1
                if not ev.session_present and self.subscriptions:
                    c.subscribe(self.subscriptions, self.now())
            elif t is mqtt.PingTimeout:
                self._end("no answer from broker")
            elif t is mqtt.ConnectRefused:
                self.kind = "auth"
                self._end("the broker refused the login: " + ev.text)
            elif t is mqtt.ProtocolError:
                self.kind = "proto"
                self._end(ev.text)
            self._events.append(ev)
        self._ev.set()

    async def _reader(self, r):
        buf = self._buf
        mv = memoryview(buf)
        into = hasattr(r, "readinto")       # MicroPython: no garbage per read
        try:
            while True:
                while len(self._events) >= self.max_events:
                    self._ev.clear()        # backpressure: the app is behind
                    await self._ev.wait()
                if into:
                    n = await r.readinto(buf)
                    if n is None:       # TLS: a handshake/record step, no data yet
                        continue
                    data = mv[:n] if n else b""
                else:
                    data = await r.read(len(buf))
                    if data is None:
                        continue
                if not data:
                    return self._end("closed by broker")
                self.client.receive_data(data, self.now())
                self._pump()
        except Exception as e:
            self._exc = self._exc or e
            self._end("%s: %r" % ("read", e))      # one format qstr for both

    async def _writer(self, w):
        try:
            while True:
                data = self.client.data_to_send(self.write_max)
                if data:
                    w.write(data)
                    await w.drain()
                elif self._stop:
                    return self._end("stopped")
                else:
                    self._ev.clear()
                    await self._ev.wait()
        except Exception as e:
            self._exc = self._exc or e
            self._end("%s: %r" % ("write", e))

    async def _tick(self):
        while True:
            await asyncio.sleep(self.tick_ms / 1000)
            self.client.tick(self.now())
            self._pump()
