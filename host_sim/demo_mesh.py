"""`make demo`, second act: the mesh over MQTT.

The demo's gateway and three simulated nodes (host_sim.fleet, the same
runtime in their own processes) share a Mosquitto the demo started.  One
`aegis push` streams a module to the whole group, then every node gets
sensor readings and the module's events arrive on the broker, where a plain
MQTT subscriber (as any client would) counts them per node: exactly the
number each node was sent, no more, no less.
"""
import os
import subprocess
import threading
import time

import paho.mqtt.client as mqtt

from host_sim.fleet import Fleet

READINGS = 40           # per node
GROUP = "lab"


class MeshWatcher:
    """A plain paho subscriber on aegis/<fleet>/ev/#, decoding each CBOR
    envelope: what a dashboard or another team's service would do."""

    def __init__(self, url_port, fleet):
        import cbor2
        self._loads = cbor2.loads
        self.fleet = fleet
        self.lock = threading.Lock()
        self.events = {}        # (src, mod) -> {seq: topic}
        self.messages = 0
        self.sample = None
        self.subscribed = threading.Event()
        c = self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.on_connect = lambda c, u, f, rc, p: c.subscribe("aegis/%s/ev/#" % fleet, 1)
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = self._msg
        c.connect("127.0.0.1", url_port)
        c.loop_start()
        if not self.subscribed.wait(10):
            raise SystemExit("demo: the mesh subscriber could not subscribe")

    def _msg(self, c, u, m):
        ev = self._loads(m.payload)
        with self.lock:
            self.messages += 1
            self.events.setdefault((ev["src"], ev["mod"]), {})[ev["seq"]] = ev["topic"]
            if self.sample is None and ev["mod"].startswith("zigstats@"):
                self.sample = (m.topic, ev)

    def count(self, src, mod):
        with self.lock:
            return len(self.events.get((src, mod), ()))

    def total(self, mod):
        with self.lock:
            return sum(len(v) for (s, m), v in self.events.items() if m == mod)

    def duplicates(self):
        with self.lock:
            return self.messages - sum(len(v) for v in self.events.values())

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def aegis_live(aegis_cmd, run_dir, say, *args):
    """Run `aegis ARGS`, echoing its output (push progress) as it comes."""
    say("\033[1m$ aegis %s\033[0m" % " ".join(args))
    p = subprocess.Popen(aegis_cmd + list(args), cwd=run_dir, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        say("  " + line.rstrip())
    if p.wait(120) != 0:
        raise SystemExit("demo: `aegis %s` failed (%d)" % (" ".join(args), p.returncode))


def feed(sock, node_id, n):
    from node.control import Client
    from node.core import cbor
    c = Client(sock)
    try:
        for i in range(n):
            c.request("emit", topic="sensor/%s-t/temp" % node_id,
                      data=cbor.dumps(20.0 + (i % 10) * 0.5))
    finally:
        c.close()


def run(ctx):
    """ctx: run_dir, say, aegis (quiet-capable helper), aegis_cmd, broker
    (host_sim.mosquitto.Mosquitto), fleet, gateway (node id, control socket),
    pack (name -> package path).  True when every count matched."""
    say, b = ctx["say"], ctx["broker"]
    fleet_name, (gw_id, gw_sock) = ctx["fleet"], ctx["gateway"]
    say("\n\033[1m== the mesh: Mosquitto on %s, the gateway and 3 simulated nodes ==\033[0m"
        % b.url)
    fl = Fleet(3, b.url, os.path.join(ctx["run_dir"], "fleet"),
               [os.path.join(ctx["run_dir"], "operator.pub")], fleet=fleet_name,
               groups=[GROUP], prefix="sim")
    watcher = None
    try:
        fl.start()
        say("  started %s (host_sim.fleet: one `aegis gateway` process each)"
            % ", ".join(fl.node_ids))
        nodes = [(gw_id, gw_sock)] + [(n.node_id, n.sock) for n in fl.nodes]
        ids = [n for n, _ in nodes]
        _wait_fleet(ctx, ids)
        ctx["aegis"]("status", "--broker", b.url, "--fleet", fleet_name)
        watcher = MeshWatcher(b.port, fleet_name)
        say("\n\033[1m-- one push to group:%s: every node gets the chunks at once "
            "(256-byte chunks, as a small board would ask) --\033[0m" % GROUP)
        pkg = ctx["pack"]("zigstats")
        label = "zigstats@1.0.0"
        aegis_live(ctx["aegis_cmd"], ctx["run_dir"], say, "push", pkg, "--to", "group:" + GROUP,
                   "--broker", b.url, "--fleet", fleet_name, "--chunk", "256")
        ctx["aegis"]("status", "--broker", b.url, "--fleet", fleet_name)
        say("\n\033[1m-- %d sensor readings into each node; a plain MQTT subscriber on "
            "aegis/%s/ev/# counts the module's events --\033[0m" % (READINGS, fleet_name))
        threads = [threading.Thread(target=feed, args=(sock, nid, READINGS)) for nid, sock in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        deadline = time.monotonic() + 30
        while watcher.total(label) < READINGS * len(nodes) and time.monotonic() < deadline:
            time.sleep(0.05)
        if watcher.sample:
            import cbor2
            topic, ev = watcher.sample
            shown = {k: ev[k] for k in ("src", "seq", "ts", "topic", "mod")}
            say("  one envelope as any MQTT client sees it (mosquitto_sub -t 'aegis/%s/ev/#' "
                "prints the same CBOR):\n    %s\n    %s\n    data (CBOR bytes, decoded): %s"
                % (fleet_name, topic, shown, cbor2.loads(ev["data"])))
        ok = True
        for nid in ids:
            got = watcher.count(nid, label)
            good = got == READINGS
            ok = ok and good
            say("  \033[%sm%-10s %3d readings in, %3d %s events on the broker%s\033[0m"
                % ("32" if good else "31", nid, READINGS, got, label,
                   "" if good else "  MISMATCH"))
        dups = watcher.duplicates()
        if ok:
            say("\033[32m  every node's events arrived in the mesh exactly once "
                "(%d events, %d duplicates)\033[0m" % (READINGS * len(nodes), dups))
        return ok
    finally:
        if watcher:
            watcher.close()
        fl.stop()


def _wait_fleet(ctx, ids, timeout=20.0):
    """Until every node's retained status says online (the push needs it)."""
    from node.mqtt.operator import fleet_status
    deadline = time.monotonic() + timeout
    while True:
        nodes, _ = fleet_status(ctx["broker"].url, ctx["fleet"])
        if all(nodes.get(n, {}).get("online") for n in ids):
            return
        if time.monotonic() > deadline:
            raise SystemExit("demo: nodes %s never reported online" % ids)
        time.sleep(0.1)
