"""The gateway's MQTT connection: an asyncio driver around the sans-I/O
client in node/core/mqtt.py (the one boards run).

Why not paho here: paho runs its own thread, so every PUBACK and message
crossed threads, and every publish was its own socket write.  On the event
loop, everything that one read brings in (hundreds of PUBACKs) is parsed and
handed over in one batch, and everything published in one loop turn (a
pump's worth of events) goes out in one write.  The operator CLI keeps paho
(node/mqtt/link.py): it is a short-lived blocking tool.

Same contract as link.Link, minus the thread hand-off (callbacks run on the
loop): on_connect(), on_disconnect(), on_message(topic, payload),
on_puback(mids), on_error(text, kind) with kind "net", "tls", "auth" or
"denied" (node/mqtt/tls.py words them).  MQTT 5 first (its "no local"
subscription option), 3.1.1 after a broker refuses level 5; mqtts with the
fleet's ssl context; retained will; reconnect with backoff (0.2 s doubling
to 2 s, to 30 s while TLS or the login is refused); a bounded in-flight
window (also bounded by the broker's Receive Maximum); unacked publishes are
sent again, in order, after a reconnect.
"""
import asyncio
import socket
import time

from node.core import mqtt as M
from node.core.mqtt5 import Disconnected
from node.mqtt import tls as T
from node.mqtt.link import parse_url

V5, V311 = 5, 4
FAST_S, SLOW_S, FIRST_S = 2.0, 30.0, 0.2     # backoff caps, first delay
CONNECT_TIMEOUT_S = 10.0
RESERVE = 8     # window slots kept for status and deploy replies
# Largest packet we take (a 64 KiB push chunk or envelope fits many times);
# on MQTT 5 the broker is told and drops bigger messages instead of sending.
MAX_IN = 1 << 20

# MQTT 5 PUBACK reason codes a broker may refuse a publish with.
_PUB_REFUSED = {0x80: "Unspecified error", 0x83: "Implementation specific error",
                0x87: "Not authorized", 0x90: "Topic Name invalid",
                0x91: "Packet identifier in use", 0x97: "Quota exceeded",
                0x99: "Payload format invalid"}


def _now_ms():
    return int(time.monotonic() * 1000)


class _Proto(asyncio.Protocol):
    def __init__(self, link):
        self.link = link

    def data_received(self, data):
        self.link._received(data)

    def connection_lost(self, exc):
        self.link._lost(self, exc)


class AioLink:
    def __init__(self, url, client_id, on_message, on_connect=None, on_disconnect=None,
                 on_puback=None, will=None, ca=None, cert=None, key=None, username=None,
                 password=None, keepalive=15, inflight=100, on_error=None):
        self.tls, self.host, self.port = parse_url(url)
        self.url = url
        if not self.tls and (ca or cert or key):
            raise T.TlsFileError("ca/cert/key need an mqtts:// broker URL, not %s" % url)
        self._ctx = T.context(*T.resolve(ca, cert, key)) if self.tls else None
        self.connected = False
        self.connects = 0
        self.last_error = self.last_error_kind = None
        self.last_drop = None           # why the last connection ended
        self.protocol = V5
        self._cb = (on_message, on_connect, on_disconnect, on_puback, on_error)
        self.c = M.Client(client_id, keepalive=keepalive, clean_session=True,
                          will=(will[0], will[1], 1, True) if will else None,
                          username=username,
                          password=password if username is not None else None,
                          max_packet=MAX_IN,
                          max_inflight=inflight + RESERVE, ping_timeout=10000, version=V5)
        # On a 3.1.1 broker (which cannot be told MAX_IN) a bigger PUBLISH
        # arrives without payload, dropped below, instead of ending the
        # connection: it would come back at every reconnect.
        self.c.drop_big = True
        self._tr = self._proto = None   # transport, protocol of the connection
        self._done = None               # future: the current connection ended
        self._why, self._again = None, False
        self._slow = False              # TLS/login refused: back off to SLOW_S
        self._flush_due = False
        self._task = self._ticker = None
        self._stopping = False
        self._acked = set()             # pids stop() waits for

    # ---- app side (event loop thread) ------------------------------------
    def start(self):
        self._task = asyncio.ensure_future(self._run())
        return self

    def room(self):
        """Publishes the forwarder may add now: the window (ours or the
        broker's Receive Maximum) minus what is unacked, minus a reserve
        (up to RESERVE) for status and deploy replies."""
        c = self.c
        if not self.connected:
            return 0
        w = c.window()
        return w - min(RESERVE, w // 8) - c.inflight()

    def publish(self, topic, payload, qos=1, retain=False):
        """The message id (for on_puback), or None when not connected or the
        window is full (the caller keeps the message and tries later)."""
        if not self.connected:
            return None
        pid = self.c.publish(topic, payload, qos, retain)
        if pid is not None:
            self._kick()
        return pid

    def subscribe(self, filters, qos=1, no_local=False):
        """no_local: the broker does not send back what this client published
        itself (MQTT 5; on 3.1.1 the receiver's own-src check drops those)."""
        if filters and self.connected:
            self.c.subscribe([(f, qos, no_local) for f in filters])
            self._kick()

    async def stop(self, last=None):
        """Disconnect cleanly (after publishing `last` = (topic, payload)
        retained and waiting up to 2 s for its PUBACK, so no will is needed)."""
        self._stopping = True
        if last and self.connected:
            pid = self.publish(last[0], last[1], 1, True)
            deadline = time.monotonic() + 2.0
            while pid is not None and pid not in self._acked and self.connected \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        if self._tr is not None:
            self.c.disconnect()
            self._flush()
            self._tr.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    # ---- connection loop -----------------------------------------------------
    async def _run(self):
        fails = 0
        while not self._stopping:
            before = self.connects
            try:
                again = await self._session()
            except Exception as e:      # a bug must not end the link for good
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "mqtt link session failed", "exception": e})
                again = False
            if self._stopping:
                return
            if again:           # fell back to 3.1.1: try that right away
                continue
            fails = 0 if self.connects > before else fails + 1
            cap = SLOW_S if self._slow else FAST_S
            await asyncio.sleep(min(cap, FIRST_S * (1 << min(max(fails - 1, 0), 8))))

    async def _session(self):
        """One connection, from TCP connect to its end.  True: retry now."""
        loop = asyncio.get_running_loop()
        c = self.c
        c.reset()
        try:
            tr, proto = await asyncio.wait_for(loop.create_connection(
                lambda: _Proto(self), self.host, self.port, ssl=self._ctx,
                server_hostname=self.host if self.tls else None), CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            self._error("network: no answer from %s:%d within %.0fs"
                        % (self.host, self.port, CONNECT_TIMEOUT_S), "net")
            return False
        except Exception as e:
            if not self._stopping:
                self._error(*T.describe(e))
            return False
        sock = tr.get_extra_info("socket")
        try:    # PUBACKs and transfer replies are request/response: no Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        self._tr, self._proto, self._done = tr, proto, loop.create_future()
        self._why, self._again = None, False
        c.connect(_now_ms())
        self._flush()
        self._ticker = loop.call_later(1.0, self._tick)
        try:
            await self._done
        finally:
            self._ticker.cancel()
            self._tr = None
            tr.close()
            was, self.connected = self.connected, False
            self.last_drop = self._why
            if was:
                self._call(self._cb[2])
        return self._again

    def _end(self, why, error=None):
        """Close this connection; `error` = (text, kind) to report."""
        if self._done is None or self._done.done():
            return
        self._why = why
        if error and not self._stopping:
            self._error(*error)
        self._done.set_result(None)

    def _lost(self, proto, exc):
        if proto is not self._proto:
            return
        if self.connected:
            self._end("connection lost: %s" % (exc or "closed by the broker"))
        else:
            # Before CONNACK: a refused client certificate arrives as a TLS
            # alert on the first read, after the handshake itself succeeded
            # (or as a reset, if that overtakes the alert).
            text, kind = T.describe(exc) if exc is not None else (
                "network: the broker closed the connection before answering CONNECT", "net")
            if self.tls and kind == "net":
                text += " (over TLS this can be the broker refusing our certificate)"
            self._end("connect failed", (text, kind))

    # ---- bytes in, events out --------------------------------------------------
    def _received(self, data):
        c = self.c
        c.receive_data(data, _now_ms())
        self._dispatch()
        self._flush()

    def _tick(self):
        self.c.tick(_now_ms())
        self._dispatch()
        self._flush()
        if self._done is not None and not self._done.done():
            self._ticker = asyncio.get_running_loop().call_later(1.0, self._tick)

    def _dispatch(self):
        on_message, on_connect, _, on_puback, _ = self._cb
        acks = []
        for ev in self.c.events():
            t = type(ev)
            if t is M.Published:
                acks.append(ev.packet_id)
                if ev.code >= 0x80:
                    self._error("the broker refused a publish: %s"
                                % _PUB_REFUSED.get(ev.code, "reason 0x%02x" % ev.code),
                                "denied")
            elif t is M.Message:
                if acks:
                    self._acks(acks)
                    acks = []
                if ev.payload is None:
                    self._error("dropped a message on %s: over %d bytes" % (ev.topic, MAX_IN),
                                "too_big")
                else:
                    self._call(on_message, ev.topic, bytes(ev.payload))
                # PUBACK once handled (as paho does after on_message): the
                # broker holds back more than its window of unacked ones.
                self.c.ack(ev)
            elif t is M.Connected:
                self.connected = True
                self.connects += 1
                if self._slow:      # credentials work again: fast retries again
                    self._slow = False
                self._call(on_connect)
            elif t is M.ConnectRefused:
                if self.protocol == V5 and ev.code in (1, 0x84):
                    self._downgrade()
                    self._end("MQTT 5 refused")
                else:
                    self._end("refused", (T.describe_refusal(ev.text), "auth"))
            elif t is M.PingTimeout:
                self._end("no answer from the broker (keepalive)",
                          None if self.connected else ("network: no CONNACK from the "
                                                       "broker", "net"))
            elif t is M.ProtocolError or t is Disconnected:
                self._end(ev.text, None if self.connected else
                          ("MQTT: %s" % ev.text, "net"))
        if acks:
            self._acks(acks)

    def _acks(self, pids):
        if self._stopping:
            self._acked.update(pids)
        if self._cb[3]:
            self._call(self._cb[3], pids)

    def _call(self, fn, *a):
        if fn is None:
            return
        try:
            fn(*a)
        except Exception as e:      # one bad callback must not end the link
            asyncio.get_running_loop().call_exception_handler(
                {"message": "mqtt link callback failed", "exception": e})

    def _downgrade(self):
        """3.1.1 from now on; unacked MQTT 5 publishes are re-encoded (their
        empty property list dropped) so they still go out, in order."""
        self.protocol = self.c.version = V311
        for e in self.c._inflight:
            e[1] = _v311_publish(e[1])
        self._again = True

    def _kick(self):
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self):
        self._flush_due = False
        data = self.c.data_to_send()
        if data and self._tr is not None:
            self._tr.write(data)

    def _error(self, text, kind):
        if kind in ("tls", "auth"):
            self._slow = True   # will not heal by hammering the broker
        self.last_error, self.last_error_kind = text, kind
        self._call(self._cb[4], text, kind)


def _v311_publish(pkt):
    """A QoS 1 MQTT 5 PUBLISH without its (empty) property list."""
    i = 1
    while pkt[i] & 0x80:
        i += 1
    i += 1
    tl = (pkt[i] << 8) | pkt[i + 1]
    at = i + 2 + tl + 2                 # the property length byte
    body = bytes(pkt[i:at]) + bytes(pkt[at + 1:])
    return M._packet(pkt[0], (body,), len(body))
