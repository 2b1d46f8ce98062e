"""Section `mqtt` (issue 3): module push and event forwarding over a real
Mosquitto, each against raw paho doing the same MQTT work in the same run.

(a) push_64k: `aegis push` machinery (node.mqtt.push) of a 64 KiB package
    to one gateway until it reports the module active, vs raw paho
    publishing the same bytes in the same 4 KiB chunks at QoS 1 with the
    same window, waiting for every PUBACK.  Target ratio <= 1.3.
(b) forward: events/s from a wasm handler (echo module) through the
    outbox to an external QoS 1 subscriber, vs raw paho QoS 1 publish ->
    subscribe of the same envelope payloads.  Target ratio >= 1.0.
(c) lost: events missing at a persistent subscriber after a broker restart
    in the middle of a stream.  Target 0.
(a') push_64k_nodelay: (a) again after restarting the broker with
    set_tcp_nodelay true (no Nagle stalls; bench/README.md explains).
Both publishers of (b) run in their own processes (bench/mqtt_feed.py), so
the timed subscriber has this process to itself in both measurements.
"""
import os
import socket
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt

from benchlib import HERE, ROOT, echo_wasm, median, pad_wasm, result, settle, target

sys.path.insert(0, os.path.join(ROOT, "tests"))
SECTION = "mqtt"
FLEET = "bench"
# Both sides of (b) get 200 in flight.  The raw baseline speaks MQTT 3.1.1,
# which has no broker limit; the gateway speaks MQTT 5 (for "no local") and
# must keep at most the broker's Receive Maximum unacked, which Mosquitto
# sets from max_inflight_messages (default 20).  The raw rate is the same
# either way (measured: bench/README.md).
BROKER_CONF = "max_inflight_messages 200\n"


def no_delay(client, userdata, sock):
    """The socket option node.mqtt.link sets: the raw baselines get it too."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def metered(wasm):
    """What `aegis pack` ships by default (nodes refuse unmetered code)."""
    from node.cli.packing import prepare_wasm
    return prepare_wasm(wasm, 16)


class Sub:
    def __init__(self, port, flt, cid=None):
        self.n, self.seen, self.ev = 0, set(), threading.Event()
        self.want = None
        c = self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid or "",
                                 clean_session=cid is None)
        c.on_connect = lambda c, u, f, rc, p: c.subscribe(flt, 1)
        ok = threading.Event()
        c.on_subscribe = lambda *a: ok.set()
        c.on_message = self._msg
        c.reconnect_delay_set(0.2, 1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        ok.wait(10)

    def _msg(self, c, u, m):
        self.n += 1
        self.seen.add(m.payload)
        if self.want is not None and self.n >= self.want:
            self.ev.set()

    def expect(self, n):
        self.n, self.want = 0, n
        self.ev.clear()

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def raw_push(port, data, chunk=4096, window=16):
    """Connect, publish every chunk at QoS 1 with `window` in flight, wait
    for the last PUBACK."""
    done, lock = threading.Event(), threading.Lock()
    left = [(len(data) + chunk - 1) // chunk]
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.max_inflight_messages_set(window)
    c.on_socket_open = no_delay

    def on_pub(*a):
        with lock:
            left[0] -= 1
            if not left[0]:
                done.set()
    c.on_publish = on_pub
    t0 = time.perf_counter()
    c.connect("127.0.0.1", port)
    c.loop_start()
    for off in range(0, len(data), chunk):
        c.publish("bench/raw/deploy", data[off:off + chunk], qos=1)
    done.wait(30)
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return dt


def feed_rate(sub, n, args):
    """Start a bench/mqtt_feed.py publisher, let it connect, then time from
    "go" until `sub` has received n messages; events/s."""
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "mqtt_feed.py")] + args,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("feeder %s did not start" % args[0])
        sub.expect(n)
        t0 = time.perf_counter()
        p.stdin.write("go\n")
        p.stdin.flush()
        if not sub.ev.wait(120):
            raise RuntimeError("%s: only %d of %d events arrived" % (args[0], sub.n, n))
        dt = time.perf_counter() - t0
        p.stdout.readline()
    finally:
        p.stdin.close()
        p.wait(30)
    return n / dt


def start_gateway(d, url, pub):
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "gw.toml")
    with open(cfg, "w") as f:
        f.write('node_id = "b1"\nfleet = "%s"\nstore_dir = "store"\ncontrol_socket = "s.sock"\n'
                'trusted_keys = ["%s"]\n[mqtt]\nurl = "%s"\ninflight = 200\n'
                'outbox_max = 200000\noutbox_bytes = 67108864\n' % (FLEET, pub, url))
    log = open(os.path.join(d, "gw.log"), "a")
    p = subprocess.Popen([sys.executable, "-m", "node.cli.main", "gateway", "--config", cfg],
                         cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while '"mqtt connected"' not in open(os.path.join(d, "gw.log")).read():
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("bench gateway did not start")
        time.sleep(0.05)
    return p, os.path.join(d, "s.sock")


def measure_push(ctx, b, wasm, metric, v0, what):
    from node.mqtt.push import push
    t_push, t_raw = [], []
    for r in range(ctx.rounds):
        v = "1.0.%d" % (v0 + r)
        pkg = ctx.package("echo", v, pad_wasm(wasm, 65536 - 600, v.encode()), metered=True,
                          subscribe=["in/#"], emit=["echo/"])
        settle()
        t0 = time.perf_counter()
        _, res = push(b.url, FLEET, pkg, "b1", chunk=4096, window=16, log=lambda m: None)
        t_push.append(time.perf_counter() - t0)
        assert res["b1"][0], res
        settle()
        t_raw.append(raw_push(b.port, pkg))
    return result(SECTION, metric, median(t_push) * 1000, "ms", median(t_raw) * 1000,
                  "raw paho QoS1 chunks", target("<=", 1.3, "ratio"),
                  samples=[round(x * 1000, 2) for x in t_push],
                  baseline_samples=[round(x * 1000, 2) for x in t_raw],
                  note="%s; push includes status discovery, offer, hash, signature and "
                  "metering checks, install (fsync) and the result" % what)


def wait_online(url, timeout=20):
    from node.mqtt.operator import fleet_status
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if fleet_status(url, FLEET, timeout=2)[0].get("b1", {}).get("online"):
                return
        except ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError("bench gateway did not come back online")


def run(ctx):
    from broker import Broker
    from node.control import Client
    ctx.keys()
    pub = os.path.join(ctx.tmpdir, "bench-key.pub")
    b = Broker(ctx.mkdtemp("mqtt-broker"), extra=BROKER_CONF).start()
    gw, sock = start_gateway(ctx.mkdtemp("mqtt-gw"), b.url, pub)
    out = []
    try:
        wasm = metered(echo_wasm()[0])
        # (a) push 64 KiB, a new version each round so every push is real.
        out.append(measure_push(ctx, b, wasm, "push_64k", 0,
                                "default Mosquitto config (set_tcp_nodelay false)"))
        # (b) forwarding throughput from the wasm handler.  Both publishers
        # (raw paho, and the emitter feeding the gateway) run in their own
        # process, so the timed subscriber has this process to itself.
        n = 3000 if ctx.quick else 10000
        sub = Sub(b.port, "aegis/%s/ev/b1/echo/#" % FLEET)
        rs = Sub(b.port, "bench/raw/ev/#")
        fw, raw = [], []
        for r in range(ctx.rounds):
            settle()
            fw.append(feed_rate(sub, n, ["emit", sock, "in/x", str(n)]))
            settle()
            raw.append(feed_rate(rs, n, ["raw", str(b.port), "bench/raw/ev/b1/echo/in/x",
                                         str(n), "200"]))
        sub.close()
        rs.close()
        out.append(result(SECTION, "forward", median(fw), "events/s", median(raw),
                          "raw paho QoS1 pub->sub", target(">=", 1.0, "ratio"),
                          samples=[round(x) for x in fw], baseline_samples=[round(x) for x in raw],
                          note="emits streamed over the control socket from a feeder process "
                          "-> echo.wasm (metered) -> outbox -> QoS 1; raw: a paho process "
                          "publishing the same envelopes, same inflight (200: the broker's MQTT 5 "
                          "Receive Maximum raised to match) and TCP_NODELAY"))
        cl = Client(sock)
        # (c) loss across a broker restart (persistent QoS 1 subscriber).
        m = 1000 if ctx.quick else 3000
        ps = Sub(b.port, "aegis/%s/ev/b1/echo/#" % FLEET, cid="bench-persist")
        ps.seen.clear()
        for i in range(m):
            cl.request("emit", topic="in/loss", data=b"L%07d" % i)
            if i == m // 2:
                b.stop()
                b.start()
        deadline = time.monotonic() + 60
        while len(ps.seen) < m and time.monotonic() < deadline:
            time.sleep(0.05)
        lost = m - len(ps.seen)
        ps.close()
        cl.close()
        out.append(result(SECTION, "lost_across_restart", lost, "events", None, None,
                          target("<=", 0), note="%d events, broker restarted mid-stream" % m))
        # (a') the push again on a broker with set_tcp_nodelay true: without
        # the broker's Nagle stall the raw baseline is the bare transport.
        b.write_config(BROKER_CONF + "set_tcp_nodelay true\n")
        b.restart()
        wait_online(b.url)
        out.append(measure_push(ctx, b, wasm, "push_64k_nodelay", 100,
                                "Mosquitto with set_tcp_nodelay true"))
    finally:
        gw.terminate()
        gw.wait(15)
        b.kill()
    return out
