"""Publisher processes for bench/sec_mqtt.py (b), so that the subscriber
being timed has its process (and GIL) to itself in both measurements:

  mqtt_feed.py raw PORT TOPIC N INFLIGHT   raw paho: N QoS 1 publishes of the
                                           bench envelopes, INFLIGHT window
  mqtt_feed.py emit SOCKET TOPIC N         control-socket emits into a
                                           gateway, pipelined

Each connects first, prints "ready", waits for a line on stdin, sends,
and prints "sent" once every publish is acknowledged (raw) or every emit
answered (emit)."""
import os
import socket
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def payloads(n):
    from node.core import envelope as E
    return [E.encode("b1", i, 1, "echo/in/x", b"%08d" % i, "echo@1.0.0") for i in range(n)]


def raw(port, topic, n, inflight):
    import paho.mqtt.client as mqtt
    data = payloads(n)
    done, left, lock = threading.Event(), [n], threading.Lock()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.max_inflight_messages_set(inflight)       # the gateway's `inflight`
    # The socket option node.mqtt.link sets on the gateway's connection.
    c.on_socket_open = lambda cl, u, s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    up = threading.Event()
    c.on_connect = lambda *a: up.set()

    def on_pub(*a):
        with lock:
            left[0] -= 1
            if not left[0]:
                done.set()
    c.on_publish = on_pub
    c.connect("127.0.0.1", port)
    c.loop_start()
    up.wait(10)
    print("ready", flush=True)
    sys.stdin.readline()
    for p in data:
        c.publish(topic, p, qos=1)
    done.wait(120)
    print("sent", flush=True)
    c.disconnect()
    c.loop_stop()


def emit(sock, topic, n):
    """Emits streamed by a writer thread while this thread reads the
    answers: the control socket (a stream, answers in order) never sits
    idle between batches, as the raw publisher never waits either."""
    from node.control import Client
    cl = Client(sock)
    print("ready", flush=True)
    sys.stdin.readline()
    bad = []

    def writer():
        try:
            for i in range(n):
                cl.send({"op": "emit", "topic": topic, "data": b"%08d" % i})
        except OSError as e:
            bad.append(e)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    for _ in range(n):
        if not cl.recv().get("ok"):
            raise SystemExit("emit refused")
    t.join(60)
    if bad:
        raise SystemExit("emit failed: %s" % bad[0])
    print("sent", flush=True)
    cl.close()


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "raw":
        raw(int(a[1]), a[2], int(a[3]), int(a[4]))
    elif a[0] == "emit":
        emit(a[1], a[2], int(a[3]))
    else:
        raise SystemExit(__doc__)
