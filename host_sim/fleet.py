"""Simulated nodes: N real `aegis gateway` processes (CPython) on one
broker, each with its own config, store and control socket.

    python -m host_sim.fleet --nodes 3 --broker mqtt://127.0.0.1:1883 \\
        --dir /tmp/fleet --trusted-key op.pub [--fleet F] [--group lab]

or from Python (tests, `make demo`):

    f = Fleet(3, "mqtt://127.0.0.1:1883", "/tmp/fleet", ["op.pub"], groups=["lab"])
    f.start(); f.node_ids; f.nodes[0].sock; f.stop()
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Node:
    def __init__(self, node_id, dir, fleet, broker, keys, groups, extra=""):
        self.node_id, self.dir = node_id, dir
        self.sock = os.path.join(dir, "aegis.sock")
        self.config = os.path.join(dir, "gateway.toml")
        self.log_path = os.path.join(dir, "gateway.log")
        self.proc = None
        os.makedirs(dir, exist_ok=True)
        with open(self.config, "w") as f:
            f.write('node_id = "%s"\nfleet = "%s"\nstore_dir = "store"\n'
                    'control_socket = "aegis.sock"\ntrusted_keys = %s\n\n'
                    '[mqtt]\nurl = "%s"\ngroups = %s\n%s\n'
                    % (node_id, fleet, json.dumps([os.path.abspath(k) for k in keys]),
                       broker, json.dumps(list(groups)), extra))

    def start(self):
        self._mark = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "node.cli.main", "gateway",
                                      "--config", self.config], cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def connected(self):
        if self.proc.poll() is not None:
            raise RuntimeError("node %s exited:\n%s" % (self.node_id, self.logs()[-2000:]))
        return '"mqtt connected"' in self.logs()[self._mark:]

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc:
            self._log.close()


class Fleet:
    def __init__(self, n, broker, dir, trusted_keys, fleet="sim", groups=("sim",),
                 prefix="sim", extra=""):
        self.broker, self.fleet = broker, fleet
        self.nodes = [Node("%s-%d" % (prefix, i + 1), os.path.join(dir, "%s-%d" % (prefix, i + 1)),
                           fleet, broker, trusted_keys, groups, extra) for i in range(n)]

    @property
    def node_ids(self):
        return [n.node_id for n in self.nodes]

    def start(self, timeout=20.0):
        """Spawn every node; returns once each is connected to the broker."""
        for n in self.nodes:
            n.start()
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            while not n.connected():
                if time.monotonic() > deadline:
                    raise RuntimeError("node %s did not connect to %s" % (n.node_id, self.broker))
                time.sleep(0.05)
        return self

    def stop(self):
        for n in self.nodes:
            if n.proc and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            n.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description="run N simulated aegis nodes on a broker")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--broker", required=True, metavar="URL")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--trusted-key", action="append", required=True, metavar="PUB")
    ap.add_argument("--fleet", default="sim")
    ap.add_argument("--group", action="append", metavar="NAME",
                    help="group every node joins (default: sim)")
    a = ap.parse_args(argv)
    f = Fleet(a.nodes, a.broker, a.dir, a.trusted_key, a.fleet, a.group or ["sim"])
    f.start()
    print("running %s in fleet %s (Ctrl-C stops)" % (", ".join(f.node_ids), a.fleet), flush=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
    signal.sigwait([signal.SIGINT, signal.SIGTERM])
    f.stop()


if __name__ == "__main__":
    main()
