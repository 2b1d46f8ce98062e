"""A thin paho-mqtt driver for the operator CLI (node/mqtt/operator.py:
`aegis push`, `aegis status --broker`).  The gateway uses its own asyncio
driver instead (node/mqtt/aio_link.py), which shares parse_url and the TLS
words (node/mqtt/tls.py) with this one.

paho runs its network loop in its own thread; every callback is handed to
`post(fn, *args)` -- a queue put in the CLI -- so the protocol code only
ever runs on the owner's thread.  Calls into paho (publish, subscribe) are
thread-safe and may be made from the owner's thread.
"""
import collections
import socket
import threading
import urllib.parse

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from node.mqtt import tls as T

# MQTT 5 first: its "no local" subscription option keeps the broker from
# echoing a gateway's own events back to it (half the traffic of a busy
# gateway).  A broker that refuses 5 gets 3.1.1 on the next attempt.
V5, V311 = mqtt.MQTTv5, mqtt.MQTTv311
_BAD_VERSION = (1, 132)     # CONNACK "unacceptable / unsupported protocol version"


class UrlError(ValueError):
    pass


class LinkError(ConnectionError):
    """The broker will not have us as we are: TLS or login refused
    (kind 'tls' / 'auth'), or a publish refused by its ACL ('denied')."""

    def __init__(self, text, kind):
        ConnectionError.__init__(self, text)
        self.kind = kind


def parse_url(url):
    """(tls, host, port) from mqtt://host[:port] or mqtts://host[:port]."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise UrlError("broker URL %r must look like mqtt://host:port or mqtts://host:port"
                       % url)
    tls = u.scheme == "mqtts"
    try:
        port = u.port or (8883 if tls else 1883)
    except ValueError:
        raise UrlError("broker URL %r has a bad port" % url)
    return tls, u.hostname, port


class Link:
    """One MQTT connection.  Callbacks (all run via `post`):
    on_connect(), on_disconnect(), on_message(topic, payload),
    on_puback(mids) with a list of message ids, on_error(text, kind) when
    a connect fails or the broker refuses a publish (kind: "net", "tls",
    "auth", "denied"; see node/mqtt/tls.py).  `will` = (topic, payload)
    published retained QoS 1.  mqtts: `ca`, `cert`, `key` (or cert =
    PREFIX of `aegis ca issue`); bad files raise tls.TlsFileError here.

    Messages and PUBACKs are queued by the paho thread and handed over in
    batches: one `post` wakes the owner for everything that arrived since
    its last turn, instead of one wakeup per packet."""

    def __init__(self, url, client_id, post, on_message, on_connect=None,
                 on_disconnect=None, on_puback=None, will=None, ca=None, cert=None,
                 key=None, username=None, password=None, keepalive=15, inflight=100,
                 on_error=None):
        self.tls, self.host, self.port = parse_url(url)
        self.url, self.keepalive, self.post = url, keepalive, post
        self.connected = False
        self.connects = 0
        self.last_error = self.last_error_kind = None
        self._on_error, self._slow = on_error, False
        if not self.tls and (ca or cert or key):
            raise T.TlsFileError("ca/cert/key need an mqtts:// broker URL, not %s" % url)
        self._ctx = T.context(*T.resolve(ca, cert, key)) if self.tls else None
        self.protocol = V5
        self._rx = collections.deque()      # (topic, payload) from the paho thread
        self._acks = collections.deque()    # PUBACKed mids from the paho thread
        self._rx_posted = self._acks_posted = False
        self._args = (client_id, will, ca, cert, key, username, password, inflight)
        self.c = self._client(V5)
        self._cb = (on_message, on_connect, on_disconnect, on_puback)

    def _client(self, protocol):
        client_id, will, ca, cert, key, username, password, inflight = self._args
        c = T.ReportingClient(self._failed, mqtt.CallbackAPIVersion.VERSION2,
                              client_id=client_id, protocol=protocol,
                              clean_session=True if protocol != V5 else None)
        if self.tls:
            c.tls_set_context(self._ctx)
        if username is not None:
            c.username_pw_set(username, password)
        if will:
            c.will_set(will[0], will[1], qos=1, retain=True)
        # Bounded in-flight window; the rest waits in our own queue (outbox,
        # sender window), not paho's, so a dead link never grows RAM.
        c.max_inflight_messages_set(inflight)
        c.max_queued_messages_set(0)
        # Fast first retries: a restarted broker is back within a second.
        c.reconnect_delay_set(min_delay=0.2, max_delay=2)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_socket_open = _no_delay
        return c

    # paho thread -> owner thread
    def _on_connect(self, c, userdata, flags, rc, props=None):
        if rc == 0 or getattr(rc, "value", rc) == 0:
            c.connected()
            if self._slow:      # credentials work again: fast retries again
                self._slow = False
                c.reconnect_delay_set(min_delay=0.2, max_delay=2)
            self.post(self._connected)
        elif c is self.c and self.protocol == V5 and getattr(rc, "value", rc) in _BAD_VERSION:
            self.post(self._downgrade)
        else:
            self._failed(T.describe_refusal(rc), "auth")

    def _failed(self, text, kind):
        # paho thread.  Wrong files or credentials will not heal by
        # hammering the broker: back off up to 30 s until a connect works.
        if kind in ("tls", "auth") and not self._slow:
            self._slow = True
            self.c.reconnect_delay_set(min_delay=0.2, max_delay=30)
        self.post(self._error, text, kind)

    def _error(self, text, kind):
        self.last_error, self.last_error_kind = text, kind
        if self._on_error:
            self._on_error(text, kind)

    def _downgrade(self):
        if self.protocol != V5:
            return
        old, self.protocol = self.c, V311
        self.c = self._client(V311)
        self.c.connect_async(self.host, self.port, self.keepalive)
        self.c.loop_start()
        # Stopping the old client joins its thread (up to its reconnect
        # delay): not on the owner's thread.
        threading.Thread(target=lambda: (old.disconnect(), old.loop_stop()),
                         daemon=True).start()

    def _connected(self):
        self.connected = True
        self.connects += 1
        if self._cb[1]:
            self._cb[1]()

    def _on_disconnect(self, c, userdata, flags, rc, props=None):
        self.post(self._disconnected)

    def _disconnected(self):
        was, self.connected = self.connected, False
        if was and self._cb[2]:
            self._cb[2]()

    def _on_message(self, c, userdata, msg):
        # Append, then post only if the owner has not been asked yet; the
        # owner clears the flag before draining, so nothing is stranded.
        self._rx.append((msg.topic, msg.payload))
        if not self._rx_posted:
            self._rx_posted = True
            self.post(self._drain_rx)

    def _drain_rx(self):
        self._rx_posted = False
        q, fn = self._rx, self._cb[0]
        for _ in range(len(q)):
            try:
                fn(*q.popleft())
            except BaseException:
                if q and not self._rx_posted:   # the rest still gets its turn
                    self._rx_posted = True
                    self.post(self._drain_rx)
                raise

    def _on_publish(self, c, userdata, mid, rc=None, props=None):
        if getattr(rc, "is_failure", False):
            # MQTT 5 PUBACK "not authorized": the broker's ACL dropped it.
            self.post(self._error, "the broker refused a publish: %s" % rc, "denied")
        if self._cb[3]:
            self._acks.append(mid)
            if not self._acks_posted:
                self._acks_posted = True
                self.post(self._drain_acks)

    def _drain_acks(self):
        self._acks_posted = False
        q = self._acks
        mids = [q.popleft() for _ in range(len(q))]
        if mids:
            self._cb[3](mids)

    # owner thread
    def start(self):
        self.c.connect_async(self.host, self.port, self.keepalive)
        self.c.loop_start()
        return self

    def publish(self, topic, payload, qos=1, retain=False):
        """The message id (for on_puback), or None when not connected (the
        caller keeps the message and sends it after the next connect)."""
        if not self.connected:
            return None
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        # NO_CONN: the link dropped just now; paho keeps a QoS>0 message
        # and sends it after reconnecting, so it still counts as in flight.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return None
        return info.mid

    def subscribe(self, filters, qos=1, no_local=False):
        """no_local: the broker does not send back what this client
        published itself (MQTT 5; on 3.1.1 the receiver's own-src check
        drops those)."""
        if filters:
            if self.protocol == V5:
                self.c.subscribe([(f, SubscribeOptions(qos=qos, noLocal=no_local))
                                  for f in filters])
            else:
                self.c.subscribe([(f, qos) for f in filters])

    def stop(self, last=None):
        """Disconnect cleanly (after publishing `last` = (topic, payload)
        retained, e.g. an offline status, so no will is needed)."""
        if last and self.connected:
            info = self.c.publish(last[0], last[1], qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        self.c.disconnect()
        self.c.loop_stop()


def _no_delay(client, userdata, sock):
    # Transfer and PUBACK traffic is request/response: without this, Nagle
    # holds a small reply until the peer's delayed ACK (40 ms on Linux).
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass    # not a TCP socket (e.g. a unix socket or a TLS wrapper quirk)
