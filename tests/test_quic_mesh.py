"""Gateways linked over QUIC: events cross a line of three gateways end to
end, both ways, with a middle gateway killed mid-stream: none lost, none
duplicated, none looping back."""
from gateway_proc import wait_for
from quic_proc import (Fleet, addr, counts_from, emit_many, peer_states, pin_port, quic_gw,
                       quic_stats)
from test_mqtt import install_counter


def test_three_gateways_in_a_line(tmp_path, signer):
    fleet = Fleet(tmp_path)
    gs = []
    try:
        c = quic_gw(tmp_path, signer, fleet, "C")
        gs.append(c)
        b = quic_gw(tmp_path, signer, fleet, "B", peers=[pin_port(c)])
        gs.append(b)
        b_addr = pin_port(b)
        a = quic_gw(tmp_path, signer, fleet, "A", peers=[b_addr], listen=False)
        gs.append(a)
        wait_for(lambda: list(peer_states(a).values()) == ["up"], what="A-B link up")
        wait_for(lambda: sorted(peer_states(b).values()) == ["up", "up"], what="B links up")
        wait_for(lambda: list(peer_states(c).values()) == ["up"], what="C-B link up")
        install_counter(a, signer, tmp_path)
        install_counter(c, signer, tmp_path)
        n = 150
        emit_many(a, "sensor/a", range(n))
        emit_many(c, "sensor/c", range(n))
        wait_for(lambda: len(counts_from(c, "A")) >= 20, timeout=30, what="events reach C")
        b.kill()                # the middle gateway dies mid-stream (kill -9)...
        emit_many(a, "sensor/a", range(n))
        emit_many(c, "sensor/c", range(n))
        b.start()               # ...and comes back: outboxes resend, Dedup drops repeats
        want = list(range(1, 2 * n + 1))
        wait_for(lambda: counts_from(c, "A") == want, timeout=60,
                 what="all of A's events at C, once each, in order")
        wait_for(lambda: counts_from(a, "C") == want, timeout=60,
                 what="all of C's events at A, once each, in order")
        # A marker after the batch: any straggling copy would come before it.
        emit_many(a, "sensor/a", [0])
        wait_for(lambda: counts_from(c, "A")[-1:] == [2 * n + 1], what="marker at C")
        assert counts_from(c, "A") == want + [2 * n + 1]
        assert counts_from(a, "C") == want
        sa, sc = quic_stats(a), quic_stats(c)
        assert sa["own"] == 0 and sc["own"] == 0          # nothing loops back
        assert sa["received"] == 2 * n and sc["received"] == 2 * n + 1
        assert all(p["outbox"] == 0 for p in sa["peers"] + sc["peers"])
        # The human status shows the links.
        text = a.cli("status").stdout
        assert "quic:" in text and b_addr in text and " up " in text, text
    finally:
        for g in gs:
            if g.proc and g.proc.poll() is None:
                g.stop()


def test_mqtt_and_quic_bridged_without_duplicates(tmp_path, signer):
    """m1 is on MQTT only, q3 on QUIC only, br on both: events cross the
    bridge once each way, and the copy br gets back from the broker (it
    published q3's events under q3's tree) is dropped by the shared Dedup."""
    from broker import Broker, Subscriber
    from test_mqtt import mqtt_gw
    brk = Broker(tmp_path / "broker").start()
    sub = Subscriber(brk, "aegis/test/ev/#")
    gs = []
    try:
        m1 = mqtt_gw(tmp_path, signer, brk, node_id="m1", sub="m1")
        gs.append(m1)
        br = quic_gw(tmp_path, signer, fleet := Fleet(tmp_path), "br",
                     extra='[mqtt]\nurl = "%s"\n' % brk.url)
        gs.append(br)
        wait_for(lambda: '"mqtt connected"' in br.logs(), what="br on mqtt")
        q3 = quic_gw(tmp_path, signer, fleet, "q3", peers=[addr(br)], listen=False)
        gs.append(q3)
        wait_for(lambda: list(peer_states(q3).values()) == ["up"], what="q3-br link up")
        install_counter(m1, signer, tmp_path)
        install_counter(q3, signer, tmp_path)
        n = 60
        emit_many(m1, "sensor/m", range(n))
        emit_many(q3, "sensor/q", range(n))
        want = list(range(1, n + 1))
        wait_for(lambda: counts_from(q3, "m1") == want, timeout=60, what="m1's events at q3")
        wait_for(lambda: counts_from(m1, "q3") == want, timeout=60, what="q3's events at m1")
        emit_many(m1, "sensor/m", [0])          # markers, then look for stragglers
        emit_many(q3, "sensor/q", [0])
        wait_for(lambda: counts_from(q3, "m1")[-1:] == [n + 1], what="marker at q3")
        wait_for(lambda: counts_from(m1, "q3")[-1:] == [n + 1], what="marker at m1")
        want.append(n + 1)
        assert counts_from(q3, "m1") == want and counts_from(m1, "q3") == want
        assert counts_from(br, "m1") == want and counts_from(br, "q3") == want
        # On the broker, q3's events appear once each, under q3's own tree.
        evs = [e for e in sub.envelopes() if e["src"] == "q3"]
        assert sorted(e["seq"] for e in evs) == sorted({e["seq"] for e in evs})
        assert len(evs) == n + 1
        assert all(t.startswith("aegis/test/ev/q3/") for t, _ in sub.msgs
                   if b"q3" in _ and "/ev/" in t)
        assert quic_stats(q3)["own"] == 0
    finally:
        sub.close()
        for g in gs:
            if g.proc and g.proc.poll() is None:
                g.stop()
        brk.kill()


def test_a_ring_of_three_does_not_loop(tmp_path, signer):
    """A dials B, B dials C, C dials A: every event reaches each other
    gateway by two paths; each delivers it once and relays only the first
    copy, so nothing circulates."""
    fleet = Fleet(tmp_path)
    gs = []
    try:
        a = quic_gw(tmp_path, signer, fleet, "A", start=False)
        b = quic_gw(tmp_path, signer, fleet, "B", start=False)
        c = quic_gw(tmp_path, signer, fleet, "C", start=False)
        import socket
        ports = []
        for _ in range(3):      # free UDP ports, pinned in each config
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            ports.append(s)
        nums = [s.getsockname()[1] for s in ports]
        for s in ports:
            s.close()
        for g, port, nxt in ((a, nums[0], nums[1]), (b, nums[1], nums[2]), (c, nums[2], nums[0])):
            with open(g.config) as f:
                text = f.read()
            text = text.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:%d"' % port)
            text = text.replace("peers = []", 'peers = ["127.0.0.1:%d"]' % nxt)
            with open(g.config, "w") as f:
                f.write(text)
            gs.append(g.start())
        for g in gs:
            wait_for(lambda: sorted(peer_states(g).values()) == ["up", "up"],
                     what="two links up at each")
        install_counter(a, signer, tmp_path)
        n = 50
        emit_many(a, "sensor/a", range(n))
        want = list(range(1, n + 1))
        for g in (b, c):
            wait_for(lambda: counts_from(g, "A") == want, timeout=60, what="A's events, once")
        emit_many(a, "sensor/a", [0])           # marker: stragglers would precede it
        for g in (b, c):
            wait_for(lambda: counts_from(g, "A")[-1:] == [n + 1], what="marker")
            assert counts_from(g, "A") == want + [n + 1]
        sb, sc = quic_stats(b), quic_stats(c)
        assert sb["received"] == sc["received"] == n + 1
        assert sb["dups"] + sc["dups"] >= n + 1         # the second path's copies
        assert quic_stats(a)["received"] == 0           # never back to the origin
    finally:
        for g in gs:
            if g.proc and g.proc.poll() is None:
                g.stop()
