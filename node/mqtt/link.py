"""A thin paho-mqtt driver.

paho runs its network loop in its own thread; every callback is handed to
`post(fn, *args)` -- `loop.call_soon_threadsafe` on a gateway, a queue put in
the CLI -- so the protocol code (and the single-threaded module host) only
ever runs on the owner's thread.  Calls into paho (publish, subscribe) are
thread-safe and may be made from the owner's thread.
"""
import ssl
import urllib.parse

import paho.mqtt.client as mqtt


class UrlError(ValueError):
    pass


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
    on_puback(mid).  `will` = (topic, payload) published retained QoS 1."""

    def __init__(self, url, client_id, post, on_message, on_connect=None,
                 on_disconnect=None, on_puback=None, will=None, ca=None, cert=None,
                 key=None, username=None, password=None, keepalive=15, inflight=100):
        self.tls, self.host, self.port = parse_url(url)
        self.url, self.keepalive, self.post = url, keepalive, post
        self.connected = False
        self.connects = 0
        c = self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                 clean_session=True)
        if self.tls:
            c.tls_set(ca_certs=ca, certfile=cert, keyfile=key,
                      cert_reqs=ssl.CERT_REQUIRED)
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
        self._cb = (on_message, on_connect, on_disconnect, on_puback)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish

    # paho thread -> owner thread
    def _on_connect(self, c, userdata, flags, rc, props=None):
        if rc == 0 or getattr(rc, "value", rc) == 0:
            self.post(self._connected)
        else:
            self.post(self._refused, str(rc))

    def _connected(self):
        self.connected = True
        self.connects += 1
        if self._cb[1]:
            self._cb[1]()

    def _refused(self, why):
        self.last_error = "broker refused the connection: %s" % why
        if self._cb[2]:
            self._cb[2]()

    def _on_disconnect(self, c, userdata, flags, rc, props=None):
        self.post(self._disconnected)

    def _disconnected(self):
        was, self.connected = self.connected, False
        if was and self._cb[2]:
            self._cb[2]()

    def _on_message(self, c, userdata, msg):
        self.post(self._cb[0], msg.topic, msg.payload)

    def _on_publish(self, c, userdata, mid, rc=None, props=None):
        if self._cb[3]:
            self.post(self._cb[3], mid)

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

    def subscribe(self, filters, qos=1):
        if filters:
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
