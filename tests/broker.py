"""A real Mosquitto broker for tests: free port on 127.0.0.1, generated
config with persistence, stop/kill/restart on the SAME port."""
import os
import socket
import time

import pytest

# One broker starter for tests and the demo: free port, readiness wait, kill
# on failure live in host_sim/mosquitto.py.
from host_sim.mosquitto import accepts, find_mosquitto, free_port, launch  # noqa: F401

MOSQUITTO = find_mosquitto() or "/usr/sbin/mosquitto"


class Broker:
    def __init__(self, dir, port=None, extra=""):
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.url = "mqtt://127.0.0.1:%d" % self.port
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        self.proc = None
        self.write_config(extra)

    def write_config(self, extra=""):
        with open(self.conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\n"
                    "persistence true\npersistence_location %s/\n"
                    "log_dest stderr\nlog_type error\nlog_type warning\n"
                    "max_queued_messages 100000\n%s%s\n"
                    % (self.port, self.dir, "user root\n" if os.getuid() == 0 else "", extra))

    def start(self, timeout=10.0):
        self.proc, self.log = launch(MOSQUITTO, self.conf, self.log_path, self.port, timeout)
        return self

    def _end(self, sig_kill):
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if sig_kill else self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.proc:
            self.log.close()
        # The port is free once nothing accepts on it any more.
        deadline = time.monotonic() + 5
        while accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self):
        self._end(False)

    def kill(self):
        self._end(True)

    def restart(self):
        self.stop()
        return self.start()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.kill()


class Subscriber:
    """A plain paho client recording (topic, payload) of what it receives."""

    def __init__(self, broker, *filters, nodelay=False):
        import paho.mqtt.client as mqtt
        self.msgs = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if nodelay:     # paho leaves Nagle on: a bench timing round trips turns it off
            self.c.on_socket_open = lambda c, u, s: s.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.c.on_message = lambda c, u, m: self.msgs.append((m.topic, m.payload))
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe([(x, 1) for x in filters])
        self.subscribed = False
        self.c.on_subscribe = lambda *a: setattr(self, "subscribed", True)
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()
        deadline = time.monotonic() + 10
        while not self.subscribed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.subscribed, "subscriber did not subscribe"

    def envelopes(self, part="/ev/"):
        import cbor2
        return [cbor2.loads(p) for t, p in list(self.msgs) if part in t]

    def publish(self, topic, payload, qos=1, retain=False):
        self.c.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()
