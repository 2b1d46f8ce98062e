"""The board MQTT client (node/core/mqtt.py + node/board/mqtt_async.py)
against a real Mosquitto, run by the real MicroPython binary with a Pico W
sized heap, and by CPython: round trip, broker kill -9 and restart with
unacked QoS 1 publishes in flight, and the last will on kill -9 of the node.
Everything waits for conditions with deadlines; nothing sleeps to sync."""
import json
import os
import signal
import subprocess
import sys
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker import Broker
from gateway_proc import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
HEAP = "192K"       # a Pico W's MicroPython heap

# The node side, one script for both interpreters.  argv: port mode id [n]
#   basic:  subscribe, publish 3 x QoS 1, take one inbound QoS 1, stop
#   stream: publish n x QoS 1 through the window, report progress, stop
#   idle:   connect and report events forever; [n] is the keepalive in s
SCRIPT = r"""
import sys
sys.path.insert(0, %r)
import asyncio, gc, json
gc.collect()
HEAP = [gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0]
from node.core import mqtt
from node.board.mqtt_async import MQTTLink, LinkDown
gc.collect()
HEAP.append(gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0)

def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    if hasattr(sys.stdout, "flush"):
        sys.stdout.flush()

def report(ev):
    t = type(ev).__name__
    if t == "Message":
        out(ev=t, topic=ev.topic, payload=bytes(ev.payload).decode(), qos=ev.qos)
    elif t == "LinkDown":
        out(ev=t, reason=ev.reason)
    else:
        out(ev=t, pid=getattr(ev, "packet_id", None))

async def main():
    port, mode, cid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ka = int(sys.argv[4]) if mode == "idle" and len(sys.argv) > 4 else 30
    link = MQTTLink("127.0.0.1", port, cid, keepalive=ka, ping_timeout=1000, tick_ms=100,
                    backoff_ms=(100, 1000), subscriptions=[("t/%%s/in/#" %% cid, 1)],
                    will=("t/%%s/will" %% cid, b"gone", 1, False))
    asyncio.create_task(link.run())
    if mode == "basic":
        acked = 0
        got = False
        async for ev in link:
            report(ev)
            t = type(ev)
            if t is mqtt.Subscribed:
                gc.collect()
                out(heap=HEAP + [gc.mem_alloc() if HEAP[0] else 0])
                for i in range(3):
                    link.publish("t/%%s/out/%%d" %% (cid, i), b"hello %%d" %% i, qos=1)
            elif t is mqtt.Published:
                acked += 1
            elif t is mqtt.Message:
                link.ack(ev)
                got = True
            if acked == 3 and got:
                break
    elif mode == "stream":
        async def events():
            async for ev in link:
                if type(ev) is not mqtt.Published:
                    report(ev)
        asyncio.create_task(events())
        for i in range(int(sys.argv[4])):
            await link.publish_wait("t/%%s/out" %% cid, b"%%d" %% i)
            out(queued=i, inflight=link.client.inflight())
            await asyncio.sleep(0.005)
        while link.client.inflight():
            await asyncio.sleep(0.05)
    else:
        async for ev in link:
            report(ev)
    await link.stop()
    out(done=True)

asyncio.run(main())
""" % ROOT


class Node:
    """The script in a subprocess; its JSON lines collected by a thread."""

    def __init__(self, tmp_path, interp, *args):
        path = tmp_path / "node_script.py"
        path.write_text(SCRIPT)
        cmd = [interp] + (["-X", "heapsize=" + HEAP] if interp == MICROPYTHON else [])
        self.proc = subprocess.Popen(cmd + [str(path)] + [str(a) for a in args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.raw = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def wait(self, pred, timeout=15, what="node output"):
        try:
            return wait_for(lambda: [x for x in list(self.lines) if pred(x)], timeout, what)
        except TimeoutError:
            raise AssertionError("%s; node said:\n%s" % (what, "".join(self.raw)))

    def events(self, name):
        return [x for x in self.lines if x.get("ev") == name]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class Sub:
    """paho subscriber with a persistent session, reconnecting by itself."""

    def __init__(self, port, topic, cid="observer"):
        self.msgs = []
        self.subacks = 0
        c = self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid,
                                 clean_session=False, protocol=paho.MQTTv311)
        c.on_message = lambda cl, u, m: self.msgs.append((m.topic, m.payload))
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
        c.on_subscribe = self._subscribed
        c.reconnect_delay_set(0.05, 0.5)
        c.connect("127.0.0.1", port, keepalive=60)
        c.loop_start()
        wait_for(lambda: self.subacks, 10, "paho SUBACK")

    def _subscribed(self, *a):
        self.subacks += 1

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


class Closer:
    def __init__(self, fn):
        self.close = fn


@pytest.fixture
def broker(tmp_path):
    # Saved to disk every second and on changes: the kill -9 test needs the
    # observer's session in the db before the broker dies.
    b = Broker(tmp_path / "broker", extra="autosave_interval 1\nautosave_on_changes true")
    b.db = os.path.join(b.dir, "mosquitto.db")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def cleanup():
    things = []
    yield things
    for t in things:
        t.close()


@pytest.mark.parametrize("interp", [MICROPYTHON, sys.executable], ids=["micropython", "cpython"])
def test_round_trip(tmp_path, broker, cleanup, interp):
    sub = Sub(broker.port, "t/rt/#")
    cleanup.append(sub)
    node = Node(tmp_path, interp, broker.port, "basic", "rt")
    cleanup.append(node)
    node.wait(lambda x: x.get("ev") == "Subscribed", what="node subscribed")
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="pusher")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    cleanup.append(Closer(pub.loop_stop))
    pub.publish("t/rt/in/module", b"push me", qos=1).wait_for_publish(10)
    node.wait(lambda x: x.get("done"), what="node done")
    assert node.proc.wait(10) == 0, "".join(node.raw)
    msgs = node.events("Message")
    assert msgs == [{"ev": "Message", "topic": "t/rt/in/module", "payload": "push me", "qos": 1}]
    assert len(node.events("Published")) == 3
    # A clean stop() sent DISCONNECT, so no will.  The node's socket closed
    # before this sentinel was sent, so the will would have come first.
    pub.publish("t/rt/sentinel", b"", qos=1).wait_for_publish(10)
    wait_for(lambda: ("t/rt/sentinel", b"") in sub.msgs, 10, "paho sees the sentinel")
    assert sorted(sub.msgs) == sorted([("t/rt/out/%d" % i, b"hello %d" % i) for i in range(3)]
                                      + [("t/rt/in/module", b"push me"), ("t/rt/sentinel", b"")])
    if interp == MICROPYTHON:
        # gc.mem_alloc(): at start, after importing both modules, once
        # connected and subscribed -- inside a 192 KiB heap.
        start, imported, up = [x["heap"] for x in node.lines if "heap" in x][0]
        print("\nMicroPython heap: start %d, +%d imports, +%d connected" % (
            start, imported - start, up - imported))
        assert up - start < 48 * 1024


def test_broker_killed_and_restarted_unacked_publishes_arrive(tmp_path, broker, cleanup):
    n = 60
    sub = Sub(broker.port, "t/kb/out")
    cleanup.append(sub)
    # The db holds the observer's session before anything can happen to it.
    wait_for(lambda: os.path.exists(broker.db), 10, "mosquitto saved its db")
    node = Node(tmp_path, MICROPYTHON, broker.port, "stream", "kb", n)
    cleanup.append(node)
    wait_for(lambda: len(sub.msgs) >= 10, 15, "first deliveries")
    # Freeze the broker so PUBACKs stop: the node's window fills with
    # publishes the broker never processed; then kill -9 it.
    broker.proc.send_signal(signal.SIGSTOP)
    node.wait(lambda x: x.get("inflight") == 8, what="window full of unacked publishes")
    queued = max(x["queued"] for x in node.lines if "queued" in x)
    broker.kill()
    node.wait(lambda x: x.get("ev") == "LinkDown", what="node notices the dead broker")
    broker.start()
    node.wait(lambda x: x.get("done"), timeout=30, what="node finished the stream")
    assert node.proc.wait(10) == 0, "".join(node.raw)
    assert len(node.events("Connected")) >= 2
    want = set(b"%d" % i for i in range(n))
    wait_for(lambda: want <= set(p for _, p in sub.msgs), 15,
             "paho sees all %d (queued %d before the kill)" % (n, queued))
    assert queued < n - 1       # the kill really landed mid-stream


def test_last_will_on_kill_9(tmp_path, broker, cleanup):
    sub = Sub(broker.port, "t/lw/will")
    cleanup.append(sub)
    node = Node(tmp_path, MICROPYTHON, broker.port, "idle", "lw")
    cleanup.append(node)
    node.wait(lambda x: x.get("ev") == "Subscribed", what="node up")
    assert sub.msgs == []
    node.proc.send_signal(signal.SIGKILL)
    wait_for(lambda: sub.msgs, 10, "the will")
    assert sub.msgs == [("t/lw/will", b"gone")]


def test_half_open_link_detected_by_keepalive(tmp_path, broker, cleanup):
    """A frozen broker keeps the TCP connection open but answers nothing:
    only the keepalive ping notices.  The node must time out, keep trying
    (CONNECTs go unanswered too) and be back once the broker thaws."""
    node = Node(tmp_path, MICROPYTHON, broker.port, "idle", "ka", 1)
    cleanup.append(node)
    node.wait(lambda x: x.get("ev") == "Subscribed", what="node up")
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        node.wait(lambda x: x.get("ev") == "PingTimeout", timeout=10, what="ping timeout")
        node.wait(lambda x: x.get("reason") == "no answer from broker", what="link down")
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    node.wait(lambda x: len(node.events("Connected")) >= 2, timeout=15, what="reconnected")


# stop() while the link backs off between connection attempts (nothing
# listens on the port): it must cut the backoff short, not wait it out,
# also for a second stop() made meanwhile.
STOP_SCRIPT = r"""
import sys
sys.path.insert(0, %r)
import asyncio, json, time
from node.board.mqtt_async import MQTTLink, LinkDown

async def main():
    link = MQTTLink("127.0.0.1", int(sys.argv[1]), "s", backoff_ms=(30000, 30000))
    task = asyncio.create_task(link.run())
    ev = await link.get()
    t0 = time.time()
    # Two callers at once (say a signal handler and the app): both return
    # as soon as run() has ended, neither waits out its timeout.
    await asyncio.gather(link.stop(timeout_ms=5000), link.stop(timeout_ms=5000))
    took = time.time() - t0
    await asyncio.sleep(0)
    print(json.dumps({"ev": type(ev).__name__, "kind": ev.kind, "took": took,
                      "ended": link._ended is True, "done": task.done()}))

asyncio.run(main())
""" % ROOT


def _run_against_a_closed_port(tmp_path, interp, script):
    """Run `script` (argv[1]: a loopback port nothing listens on, so every
    connect is refused) on `interp`; its last stdout line, as JSON."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    path = tmp_path / "script.py"
    path.write_text(script)
    cmd = [interp] + (["-X", "heapsize=" + HEAP] if interp == MICROPYTHON else [])
    r = subprocess.run(cmd + [str(path), str(port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("interp", [MICROPYTHON, sys.executable], ids=["micropython", "cpython"])
def test_stop_cuts_the_backoff_short(tmp_path, interp):
    out = _run_against_a_closed_port(tmp_path, interp, STOP_SCRIPT)
    # The first connect failed; the backoff (15..30 s) ended at stop().
    assert out["ev"] == "LinkDown" and out["kind"] == "net", out
    assert out["ended"] and out["done"], out
    assert out["took"] < 4, out


# Two tasks in publish_wait() on a full window share the link's one Event
# with everything else: a failed publish() must not set it, or each waiter
# wakes the other for ever (a busy loop that starves the board).
WAIT_SCRIPT = r"""
import sys
sys.path.insert(0, %r)
import asyncio, json
from node.board.mqtt_async import MQTTLink

async def main():
    link = MQTTLink("127.0.0.1", int(sys.argv[1]), "w", backoff_ms=(30000, 30000),
                    max_inflight=1)
    calls = [0]
    publish = link.client.publish

    def counted(*a):
        calls[0] += 1
        return publish(*a)
    link.client.publish = counted
    first = await link.publish_wait("t/w", b"0")     # queued while down: window full
    waiters = [asyncio.create_task(link.publish_wait("t/w", b"%%d" %% i)) for i in (1, 2)]
    task = asyncio.create_task(link.run())
    ev = await link.get()           # the refused connect: LinkDown, _ev set
    before = calls[0]
    await asyncio.sleep(0.5)
    spins = calls[0] - before
    await link.stop(timeout_ms=5000)
    print(json.dumps({"first": first, "ev": type(ev).__name__, "spins": spins,
                      "waiting": [not w.done() for w in waiters], "ended": task.done()}))

asyncio.run(main())
""" % ROOT


@pytest.mark.parametrize("interp", [MICROPYTHON, sys.executable], ids=["micropython", "cpython"])
def test_two_publish_waits_on_a_full_window_do_not_spin(tmp_path, interp):
    out = _run_against_a_closed_port(tmp_path, interp, WAIT_SCRIPT)   # the link stays down
    assert out["first"] == 1 and out["ev"] == "LinkDown", out
    assert out["waiting"] == [True, True] and out["ended"], out
    # Each waiter retried at most a few times after the one wakeup, not in a loop.
    assert out["spins"] <= 4, out
