"""Operator-side MQTT session for the CLI (`aegis push`, `aegis status
--broker`): the paho thread posts callbacks into a queue, and the CLI's
own thread runs them -- the same Link as the gateway, without asyncio."""
import os
import queue
import time

from node.core import fleet as F
from node.core.envelope import EnvelopeError
from node.mqtt.link import Link


class Session:
    def __init__(self, url, on_message, on_connect=None, on_disconnect=None, **tls):
        self.q = queue.Queue()
        self.link = Link(url, "aegis-cli-%d-%s" % (os.getpid(), os.urandom(3).hex()),
                         lambda fn, *a: self.q.put((fn, a)), on_message,
                         on_connect=on_connect, on_disconnect=on_disconnect, **tls)

    def start(self):
        self.link.start()
        return self

    def run_once(self, timeout):
        """Wait up to `timeout` s for a callback, then run it and every
        other one already queued (bounded: what is queued now)."""
        try:
            fn, a = self.q.get(timeout=timeout) if timeout > 0 else self.q.get_nowait()
        except queue.Empty:
            return
        fn(*a)
        for _ in range(self.q.qsize()):
            fn, a = self.q.get_nowait()
            fn(*a)

    def wait(self, cond, timeout):
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline:
            self.run_once(min(0.05, max(0.0, deadline - time.monotonic())))
        return cond()

    def stop(self):
        self.link.stop()


def fleet_status(url, fleet, timeout=5.0, settle=0.0, **tls):
    """{node_id: status} from the retained status messages, plus a list of
    messages that failed to parse.  Retained messages come right after the
    SUBACK; a round trip through the broker on a private topic marks the
    point after which all of them have been delivered."""
    nodes, bad, marks = {}, [], []
    mark = "aegis/%s/_cli/%s" % (fleet, os.urandom(6).hex())
    filt = F.status_filter(fleet)

    def on_message(topic, payload):
        if topic == mark:
            marks.append(1)
            return
        if not payload:
            return      # a cleared retained status
        try:
            s = F.decode_status(payload)
        except EnvelopeError as e:
            bad.append("%s: %s" % (topic, e))
            return
        nodes[s["node"]] = s

    def on_connect():
        s.link.c.subscribe([(filt, 1), (mark, 1)])
        s.link.c.publish(mark, b"", qos=1)

    s = Session(url, on_message, on_connect, **tls).start()
    try:
        if not s.wait(lambda: marks, timeout):
            raise ConnectionError("no answer from the broker at %s within %.0fs" % (url, timeout))
        end = time.monotonic() + settle
        while time.monotonic() < end:
            s.run_once(end - time.monotonic())
    finally:
        s.stop()
    return nodes, bad
