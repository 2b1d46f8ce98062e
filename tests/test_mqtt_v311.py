"""A broker that speaks only MQTT 3.1.1: the gateway's link (MQTT 5 first)
falls back and works.  The "old broker" is a TCP front on 127.0.0.1 that
refuses a protocol level 5 CONNECT the way a 3.1.1 broker does (CONNACK
return code 1, "unacceptable protocol version") and passes any other
connection through to a real Mosquitto."""
import socket
import threading

from broker import Subscriber, broker  # noqa: F401 (fixture)
from gateway_proc import wait_for
from test_mqtt import install_counter, mqtt_gw, mqtt_stats


class OldBrokerFront:
    def __init__(self, backend_port):
        self.backend = backend_port
        self.levels = []
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.url = "mqtt://127.0.0.1:%d" % self.port
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(10)
        try:
            head = self._connect_packet(c)
            level = self._level(head)
            self.levels.append(level)
            if level == 5:
                c.sendall(b"\x20\x02\x00\x01")      # 3.1.1: unacceptable protocol version
                c.close()
                return
            b = socket.create_connection(("127.0.0.1", self.backend))
            b.sendall(head)
            c.settimeout(None)
            threading.Thread(target=self._pipe, args=(b, c), daemon=True).start()
            self._pipe(c, b)
        except OSError:
            c.close()

    @staticmethod
    def _recv(c, n):
        buf = b""
        while len(buf) < n:
            x = c.recv(n - len(buf))
            if not x:
                raise OSError("closed")
            buf += x
        return buf

    def _connect_packet(self, c):
        first = self._recv(c, 1)
        length, mult, raw = 0, 1, b""
        while True:
            b = self._recv(c, 1)
            raw += b
            length += (b[0] & 0x7F) * mult
            mult *= 128
            if not b[0] & 0x80:
                break
        return first + raw + self._recv(c, length)

    @staticmethod
    def _level(pkt):
        i = 1
        while pkt[i] & 0x80:
            i += 1
        i += 1                              # past the remaining length
        name_len = int.from_bytes(pkt[i:i + 2], "big")
        return pkt[i + 2 + name_len]

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                x = a.recv(65536)
                if not x:
                    break
                b.sendall(x)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        self.srv.close()


class _Url:
    def __init__(self, url):
        self.url = url


def test_gateway_falls_back_to_mqtt_311(tmp_path, signer, broker):
    front = OldBrokerFront(broker.port)
    sub = Subscriber(broker, "aegis/test/ev/#")
    g = mqtt_gw(tmp_path, signer, _Url(front.url))
    try:
        assert front.levels[:2] == [5, 4], front.levels
        install_counter(g, signer, tmp_path)
        for i in range(3):
            g.cli("emit", "sensor/a", "--json", str(i))
        evs = wait_for(lambda: len(sub.envelopes()) >= 3 and sub.envelopes(), what="3 events")
        assert [e["src"] for e in evs] == ["gw1"] * 3
        wait_for(lambda: mqtt_stats(g)["outbox_len"] == 0, what="all acked")
        # On 3.1.1 there is no "no local": the broker echoes our own events
        # back, and the src check drops every one of them.
        wait_for(lambda: mqtt_stats(g)["own"] == 3, what="own events dropped")
        assert mqtt_stats(g)["received"] == 0
    finally:
        sub.close()
        g.stop()
        front.close()


def test_on_311_a_message_over_the_gateways_limit_is_dropped_not_the_link(tmp_path, signer,
                                                                          broker):  # noqa: F811
    # MQTT 5 tells the broker our Maximum Packet Size; 3.1.1 cannot, and a
    # QoS 1 message that ended the connection came back at every reconnect.
    from node.mqtt.aio_link import MAX_IN
    from test_mqtt import envelope
    front = OldBrokerFront(broker.port)
    sub = Subscriber(broker, "aegis/test/node/#")
    g = mqtt_gw(tmp_path, signer, _Url(front.url))
    try:
        install_counter(g, signer, tmp_path)
        sub.publish("aegis/test/ev/ext/sensor/a", b"\x00" * (MAX_IN + 1000))
        wait_for(lambda: mqtt_stats(g)["errors"].get("too_big") == 1, what="dropped, counted")
        assert "over %d bytes" % MAX_IN in mqtt_stats(g)["last_error"]
        # Still connected on its first connection, and the next event gets in.
        sub.publish("aegis/test/ev/ext/sensor/a", envelope("ext", 1, "sensor/a", b"\x01"))
        wait_for(lambda: mqtt_stats(g)["received"] == 1, what="the next event")
        assert mqtt_stats(g)["connected"]
        assert g.logs().count('"mqtt connected"') == 1, g.logs()[-2000:]
        assert "mqtt message dropped" in g.logs()
    finally:
        sub.close()
        g.stop()
        front.close()
