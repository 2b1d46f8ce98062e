"""The `forward` and `accept` filter lists of [mqtt], over a real
Mosquitto: only matching module events go out, only matching mesh events
come in, and CLI emits never go out."""
import json

import cbor2

from broker import Subscriber, broker  # noqa: F401 (fixture)
from gateway_proc import wait_for
from test_mqtt import envelope, install_counter, mqtt_gw, mqtt_stats


def local_events(g, flt):
    return [json.loads(x) for x in g.cli("events", "--json", "--topic", flt).stdout.splitlines()]


def test_forward_and_accept_filters(tmp_path, signer, broker):
    g = mqtt_gw(tmp_path, signer, broker,
                extra='forward = ["alarm/#"]\naccept = ["sensor/+/temp"]\n')
    sub = Subscriber(broker, "aegis/test/ev/#")
    try:
        install_counter(g, signer, tmp_path)         # emits count/total: not forwarded
        thr = tmp_path / "thr.pkg"
        thr.write_bytes(signer.example("threshold"))  # emits alarm/<id>: forwarded
        g.cli("install", str(thr))
        for v in ("35.0", "20.0", "36.0"):            # alarm, clear, alarm
            g.cli("emit", "sensor/k1/temp", "--json", v)
        wait_for(lambda: len(local_events(g, "count/#")) == 3, what="counter ran 3 times")
        wait_for(lambda: len(sub.envelopes()) >= 3, what="3 alarm events on the broker")
        # In: an accepted mesh event reaches the modules (counter counts it,
        # threshold alarms on it, and that module event goes out); one outside
        # `accept` is not even subscribed to.
        sub.publish("aegis/test/ev/ext/sensor/k2/temp",
                    envelope("ext", 1, "sensor/k2/temp", cbor2.dumps(40.0)))
        sub.publish("aegis/test/ev/ext/sensor/k2/humidity",
                    envelope("ext", 2, "sensor/k2/humidity", cbor2.dumps(50.0)))
        sub.publish("aegis/test/ev/ext/config/threshold",
                    envelope("ext", 3, "config/threshold", cbor2.dumps(0.0)))
        wait_for(lambda: len(local_events(g, "count/#")) == 4, what="mesh event counted")
        wait_for(lambda: len(sub.envelopes()) >= 4, what="alarm/k2 forwarded")
        # A marker through the same path: once it is in, the two refused
        # envelopes (published before it, same publisher) have been handled.
        sub.publish("aegis/test/ev/ext/sensor/k3/temp",
                    envelope("ext", 4, "sensor/k3/temp", cbor2.dumps(1.0)))
        wait_for(lambda: mqtt_stats(g)["received"] == 2, what="marker received")
        got = {e["topic"]: e["src"] for e in local_events(g, "#") if e["src"] == "ext"}
        assert got == {"sensor/k2/temp": "ext", "sensor/k3/temp": "ext"}, got
        mine = [e for e in sub.envelopes() if e["src"] == "gw1"]
        assert [e["topic"] for e in mine] == ["alarm/k1", "alarm/k1/clear", "alarm/k1",
                                              "alarm/k2"]
        assert all(e["mod"] == "threshold@1.0.0" for e in mine)
        st = mqtt_stats(g)
        assert st["outbox_pushed"] == 4 and st["received"] == 2
        # Nothing the node published came back to it (MQTT 5 no local).
        assert st["own"] == 0
    finally:
        sub.close()
        g.stop()
