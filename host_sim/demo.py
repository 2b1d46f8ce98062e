"""`make demo`: a gateway, four modules, a stream of sensor events, and a
hot swap of one module mid-stream that loses and doubles nothing; then the
mesh (host_sim/demo_mesh.py): a Mosquitto, three simulated nodes, one
`aegis push` to the group, and every node's events counted on the broker.

Everything runs for real: the `aegis` CLI signs packages and talks to a
real `aegis gateway` daemon over its control socket; modules run in wasm3;
the broker is the Debian `mosquitto` on a free loopback port.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "demo-run")
AEGIS = [sys.executable, "-m", "node.cli.main"]
N_EVENTS = 600
SWAP_AT = 300
RATE = 200.0  # events per second: slow enough to watch


def say(msg):
    print(msg, flush=True)


def aegis(*args, quiet=False):
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    if not quiet:
        say("\033[1m$ aegis %s\033[0m" % shown)
    r = subprocess.run(AEGIS + list(args), cwd=RUN, capture_output=True, text=True)
    out = (r.stderr + r.stdout).strip()
    if out and not quiet:
        say("  " + out.replace("\n", "\n  "))
    if r.returncode != 0:
        raise SystemExit("demo: `aegis %s` failed (%d)" % (shown, r.returncode))
    return r.stdout


def module_toml(name, toml="module.toml"):
    import tomllib
    with open(os.path.join(ROOT, "modules", name, toml), "rb") as f:
        return tomllib.load(f)


def pack(name, toml="module.toml"):
    t = module_toml(name, toml)
    out = "%s-%s.pkg" % (t["name"], t["version"])
    args = ["pack", os.path.join(ROOT, "modules", name, t["wasm"]), "--name", t["name"],
            "--version", t["version"], "--subscribe"] + t["subscribe"] + ["--emit"] + t["emit"]
    if t.get("ports"):
        args += ["--port"] + t["ports"]
    aegis(*(args + ["--key", "operator.key", "--out", out]))
    return out


class Watcher(threading.Thread):
    """`aegis events --follow --json` in a subprocess, tallied as it streams."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        # --last replays the ring first, so nothing emitted before the
        # follower connected is missed.
        self.proc = subprocess.Popen(AEGIS + ["events", "--follow", "--json", "--last", "1000",
                                              "--socket", sock],
                                     cwd=RUN, stdout=subprocess.PIPE, text=True)
        self.counts = []          # (count, module label) from count/total
        self.alarms = 0
        self.seen = 0
        self.lock = threading.Lock()

    def run(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            t = ev["topic"]
            with self.lock:
                self.seen += 1
                if t == "count/total":
                    self.counts.append((ev["data"], ev["mod"]))
                elif t.startswith("alarm/"):
                    self.alarms += 1
                    if t.endswith("/clear"):
                        what = "cleared"
                    else:
                        what = "ALARM %.1f > %.1f" % (ev["data"]["value"], ev["data"]["threshold"])
                    say("  \033[33m%-22s %s\033[0m (%s)" % (t, what, ev["mod"]))
                elif t.startswith("$aegis/module/"):
                    say("  \033[36m%-30s %s\033[0m" % (t, ev["data"]))

    def last(self):
        with self.lock:
            return self.counts[-1][0] if self.counts else 0


def feed(sock, watcher, swap_pkg):
    from node.control import Client
    from node.core import cbor
    c = Client(sock)
    t0 = time.monotonic()
    swapper = None
    for i in range(N_EVENTS):
        # Three sensors; k2 runs hot now and then to trip the threshold alarm.
        sensor = "k%d" % (i % 3)
        hot = sensor == "k2" and (i // 90) % 2 == 1
        temp = 22.0 + (i % 17) * 0.25 + (12.0 if hot else 0.0)
        c.request("emit", topic="sensor/%s/temp" % sensor, data=cbor.dumps(temp))
        if i == SWAP_AT:
            say("\n\033[1m-- hot-swapping counter 1.0.0 -> 2.0.0 while events keep flowing --\033[0m")
            swapper = threading.Thread(target=aegis, args=("install", swap_pkg, "--socket", sock))
            swapper.start()
        if i % 100 == 99:
            say("  sent %4d sensor events   counter module says %4d" % (i + 1, watcher.last()))
        # Pace the stream so it can be watched (pacing, not synchronisation).
        delay = t0 + (i + 1) / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    c.close()
    if swapper:
        swapper.join(30)


def wait_until(cond, timeout):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def report(watcher):
    counts = [c for c, _ in watcher.counts]
    by_mod = {}
    for c, mod in watcher.counts:
        lo, hi = by_mod.get(mod, (c, c))
        by_mod[mod] = (min(lo, c), max(hi, c))
    say("")
    for mod, (lo, hi) in sorted(by_mod.items()):
        say("  %-15s counted events %d..%d" % (mod, lo, hi))
    ok = counts == list(range(1, N_EVENTS + 1)) and len(by_mod) == 2
    if ok:
        say("\033[32m  sent %d, counted %d: every event counted exactly once across the "
            "swap, none lost or handled twice\033[0m" % (N_EVENTS, counts[-1]))
    else:
        say("\033[31m  MISMATCH: sent %d, %d counts seen (last %s)\033[0m"
            % (N_EVENTS, len(counts), counts[-1:] or None))
    return ok


def main():
    if os.path.exists(RUN):
        shutil.rmtree(RUN)
    os.makedirs(RUN)
    say("\033[1m== aegis-edge demo: signed wasm modules, live hot swap, no lost events ==\033[0m")
    say("work dir: %s\n" % RUN)
    from host_sim import demo_mesh
    from host_sim.mosquitto import Mosquitto
    broker = Mosquitto(os.path.join(RUN, "mosquitto")).start()
    say("mosquitto listening on %s (log: demo-run/mosquitto/mosquitto.log)" % broker.url)
    aegis("keygen", "--out", "operator")
    with open(os.path.join(RUN, "gateway.toml"), "w") as f:
        f.write('node_id = "demo-gw"\nfleet = "demo"\nstore_dir = "store"\n'
                'control_socket = "aegis.sock"\ntrusted_keys = ["operator.pub"]\n\n'
                '[ports.facts]\nadapter = "node_facts"\n\n'
                '[mqtt]\nurl = "%s"\ngroups = ["%s"]\n' % (broker.url, demo_mesh.GROUP))
    pkgs = [pack("threshold"), pack("counter"), pack("movavg"), pack("facts")]
    swap_pkg = pack("counter", "module_v2.toml")
    sock = os.path.join(RUN, "aegis.sock")
    log = open(os.path.join(RUN, "gateway.log"), "w")
    say("\033[1m$ aegis gateway --config gateway.toml &\033[0m   (log: demo-run/gateway.log)")
    gw = subprocess.Popen(AEGIS + ["gateway", "--config", "gateway.toml"], cwd=RUN,
                          stdout=log, stderr=subprocess.STDOUT)
    watcher = None
    try:
        if not wait_until(lambda: os.path.exists(sock) or gw.poll() is not None, 15) \
                or gw.poll() is not None:
            raise SystemExit("demo: gateway did not start; see demo-run/gateway.log")
        for p in pkgs:
            aegis("install", p, "--socket", sock)
        watcher = Watcher(sock)
        watcher.start()
        if not wait_until(lambda: watcher.seen >= len(pkgs), 15):
            raise SystemExit("demo: the event follower did not connect")
        say("\n\033[1m-- streaming %d sensor events from 3 sensors --\033[0m" % N_EVENTS)
        feed(sock, watcher, swap_pkg)
        wait_until(lambda: watcher.last() >= N_EVENTS, 15)
        say("")
        aegis("status", "--socket", sock)
        swap_ok = report(watcher)
        mesh_ok = demo_mesh.run({"run_dir": RUN, "say": say, "aegis": aegis, "aegis_cmd": AEGIS,
                                 "broker": broker, "fleet": "demo", "pack": pack,
                                 "gateway": ("demo-gw", sock)})
        return 0 if swap_ok and mesh_ok else 1
    finally:
        if watcher:
            watcher.proc.terminate()
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(15)
        except subprocess.TimeoutExpired:
            gw.kill()
        log.close()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
