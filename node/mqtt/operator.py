"""Operator-side MQTT session for the CLI (`aegis push`, `aegis status
--broker`): the paho thread posts callbacks into a queue, and the CLI's
own thread runs them -- the same Link as the gateway, without asyncio."""
import os
import queue
import socket
import time

from node.core import fleet as F, fleetwatch as FW
from node.core.envelope import EnvelopeError
from node.mqtt.link import Link, LinkError

# While waiting for answers, a quick ACK every ACK_POLL_S (Linux TCP_QUICKACK).
# A broker that applies Nagle to what it sends us (Mosquitto's default,
# set_tcp_nodelay false) holds each small packet -- a PUBACK, a transfer
# reply -- until we ACK the one before; a client that only listens delays
# that ACK by up to 40 ms, so every reply would wait that long.
ACK_POLL_S = 0.002
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)

# Denied publishes: the operator tools publish only where an operator may.
_NOT_OPERATOR = ("; this needs the operator's credentials (the broker's ACL gives "
                 "nodes only their own topics, docs/SECURITY.md)")


class Session:
    def __init__(self, url, on_message, on_connect=None, on_disconnect=None, **tls):
        self.q = queue.Queue()
        self.fatal = None
        self.link = Link(url, "aegis-cli-%d-%s" % (os.getpid(), os.urandom(3).hex()),
                         lambda fn, *a: self.q.put((fn, a)), on_message,
                         on_connect=on_connect, on_disconnect=on_disconnect,
                         on_error=self._on_error, **tls)

    def _on_error(self, text, kind):
        # A CLI run gives up on what retrying cannot fix (wrong CA, refused
        # certificate or password, ACL); a broker that is down may come back.
        if kind != "net" and self.fatal is None:
            self.fatal = LinkError("%s: %s%s" % (self.link.url, text,
                                                 _NOT_OPERATOR if kind == "denied" else ""),
                                   kind)

    def start(self):
        self.link.start()
        return self

    def run_once(self, timeout, ack_now=False):
        """Wait up to `timeout` s for a callback, then run it and every
        other one already queued (bounded: what is queued now).  Raises
        LinkError once the broker refused us for good.  ack_now: the caller
        waits for answers; meanwhile ACK what arrives every ACK_POLL_S
        (see above)."""
        end = time.monotonic() + timeout
        while True:
            if ack_now:
                self.ack_now()
            left = end - time.monotonic()
            try:
                fn, a = self.q.get(timeout=min(left, ACK_POLL_S) if ack_now else left) \
                    if left > 0 else self.q.get_nowait()
                break
            except queue.Empty:
                if not ack_now or left <= 0:
                    return
        fn(*a)
        for _ in range(self.q.qsize()):
            fn, a = self.q.get_nowait()
            fn(*a)
        if self.fatal:
            raise self.fatal

    def ack_now(self):
        """ACK received data at once instead of after the delayed-ACK timer
        (TCP_QUICKACK sends a pending ACK and leaves delayed-ACK mode for
        a while; Linux only, elsewhere a no-op)."""
        if _QUICKACK is None:
            return
        try:
            sock = self.link.c.socket()
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        except (OSError, AttributeError, ValueError):
            pass    # closed just now, or not a TCP socket

    def wait(self, cond, timeout):
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline:
            self.run_once(min(0.05, max(0.0, deadline - time.monotonic())), ack_now=True)
        return cond()

    def stop(self):
        self.link.stop()


class StatusWatch:
    """Collects the retained statuses of a fleet on a Session.  Retained
    messages come right after the SUBACK; a round trip through the broker
    on a private topic marks the point after which all of them have been
    delivered (`ready`).  Subscribing `extra` filters in the same request
    means they are active by then too."""

    def __init__(self, fleet, node=None):
        self.nodes, self.bad, self.ready = {}, [], False
        self.mark = "aegis/%s/_cli/%s" % (fleet, os.urandom(6).hex())
        # node: watch only that node's status
        self.filt = F.status_topic(fleet, node) if node else FW.status_filter(fleet)

    def subscribe(self, link, extra=()):
        link.c.subscribe([(self.filt, 1)] + [(f, 1) for f in extra] + [(self.mark, 1)])
        link.c.publish(self.mark, b"", qos=1)

    def on_message(self, topic, payload):
        if topic == self.mark:
            self.ready = True
            return
        if not payload or not topic.endswith("/status"):
            return      # a cleared retained status, or not ours
        try:
            s = FW.decode_status(payload)
        except EnvelopeError as e:
            self.bad.append("%s: %s" % (topic, e))
            return
        self.nodes[s["node"]] = s

    def wait(self, sess, url, timeout, until=None):
        """Until every retained status is in, or `until()` holds earlier."""
        if not sess.wait(lambda: self.ready or (until is not None and until()), timeout):
            last = sess.link.last_error
            raise ConnectionError("no answer from the broker at %s within %.0fs%s"
                                  % (url, timeout, " (%s)" % last if last else ""))


def fleet_status(url, fleet, timeout=5.0, settle=0.0, **tls):
    """{node_id: status} from the retained status messages, plus a list of
    messages that failed to parse."""
    w = StatusWatch(fleet)
    s = Session(url, w.on_message, lambda: w.subscribe(s.link), **tls).start()
    try:
        w.wait(s, url, timeout)
        end = time.monotonic() + settle
        while time.monotonic() < end:
            s.run_once(end - time.monotonic())
    finally:
        s.stop()
    return w.nodes, w.bad
