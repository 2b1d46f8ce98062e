"""Simulated MicroPython boards: real MicroPython Unix-port processes behind
a pty (socat), flashed with `aegis flash --board unix` through mpremote,
next to CPython gateways (host_sim/fleet.py) on one broker, plus the
gateway-side proxy host (`aegis proxy`) that runs their modules.

    b = UnixBoard("pico-sim-1", "/tmp/b1", "mqtt://127.0.0.1:1883", ["op.pub"])
    b.start(); b.flash(); b.wait_for("connected to broker"); ...; b.stop()
    p = ProxyHost("gw-1", "/tmp/gw1", broker_url, ["op.pub"], ["pico-sim-1"]).start()

The pty's output (the board's console) is drained by a thread into
`console.log`: an unread pty blocks the board once its buffer fills.
"""
import json
import os
import select
import subprocess
import sys
import threading
import time

from host_sim.proc import terminate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
AEGIS = [sys.executable, "-m", "node.cli.main"]


class UnixBoard:
    def __init__(self, node_id, dir, broker, keys, fleet="test", heap="192K", extra=None,
                 groups=()):
        self.node_id, self.dir, self.heap = node_id, os.path.abspath(dir), heap
        self.work = os.path.join(self.dir, "fs")     # the board's filesystem (its cwd)
        self.pty = os.path.join(self.dir, "tty")
        self.config = os.path.join(self.dir, "node.toml")
        self.console_path = os.path.join(self.dir, "console.log")
        self.proc = None
        self._reader = None
        os.makedirs(self.work, exist_ok=True)
        lines = ['node_id = "%s"' % node_id, 'fleet = "%s"' % fleet,
                 "trusted_keys = %s" % json.dumps([os.path.abspath(k) for k in keys])]
        lines += ["%s = %s" % (k, json.dumps(v)) for k, v in (extra or {}).items()]
        lines += ["", "[mqtt]", 'url = "%s"' % broker, "backoff_max_ms = 1000",
                  "groups = %s" % json.dumps(list(groups))]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10.0):
        """The MicroPython process behind a pty, at its REPL (no files yet)."""
        if os.path.lexists(self.pty):
            os.unlink(self.pty)
        mp = "%s -X heapsize=%s" % (MICROPYTHON, self.heap)
        self.proc = subprocess.Popen(
            ["socat", "PTY,link=%s,raw,echo=0" % self.pty,
             "EXEC:\"%s\",pty,raw,echo=0,stderr,setsid,ctty" % mp],
            cwd=self.work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.pty):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("socat did not create %s" % self.pty)
            time.sleep(0.02)
        return self

    def flash(self, log=None, timeout=180):
        """`aegis flash --board unix --port <pty>`; then drain the console
        (not during the flash: mpremote must read the pty alone)."""
        self._undrain()
        r = subprocess.run(AEGIS + ["flash", "--board", "unix", "--port", self.pty,
                                    "--config", self.config],
                           cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("aegis flash failed (%d):\n%s%s" % (r.returncode, r.stdout,
                                                                   r.stderr))
        self.flash_output = r.stderr
        self._drain()
        return r

    def _drain(self):
        fd = os.open(self.pty, os.O_RDONLY | os.O_NOCTTY)
        out = open(self.console_path, "ab", buffering=0)
        self._draining = True

        def run():
            while self._draining:
                try:
                    if not select.select([fd], [], [], 0.2)[0]:
                        continue
                    b = os.read(fd, 4096)
                except OSError:
                    break
                if not b:
                    break
                out.write(b)
            out.close()
            os.close(fd)
        self._reader = threading.Thread(target=run, daemon=True)
        self._reader.start()

    def _undrain(self):
        if self._reader is not None:
            self._draining = False
            self._reader.join(5)
            self._reader = None

    def console(self):
        try:
            with open(self.console_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, text, timeout=30.0, count=1):
        deadline = time.monotonic() + timeout
        while self.console().count(text) < count:
            if self.proc.poll() is not None:
                raise RuntimeError("board %s exited:\n%s" % (self.node_id, self.console()[-3000:]))
            if time.monotonic() > deadline:
                raise TimeoutError("board %s never said %r:\n%s"
                                   % (self.node_id, text, self.console()[-3000:]))
            time.sleep(0.05)

    def stop(self):
        terminate(self.proc)


class SourceBoard(UnixBoard):
    """The same flash image as `aegis flash --board unix` (built with
    flash.build straight into the board's directory, .mpy and all), booted
    by main.py without a pty or mpremote: quick to start and restart in
    tests; the serial path itself is covered by UnixBoard.  Each start()
    rebuilds slot A (the top level) but keeps the boot marker, so a board
    updated over the mesh into slot B boots B again, as after a power cut."""

    def start(self):
        from node import flash
        board = flash.load_board("unix")
        cfg, files = flash.board_config(board, self.config)
        flash.build(board, cfg, files, self.work, log=lambda m: None)
        self._out = open(self.console_path, "ab")
        self.proc = subprocess.Popen(
            [MICROPYTHON, "-X", "heapsize=" + self.heap, "-c", "import main"],
            cwd=self.work, stdout=self._out, stderr=subprocess.STDOUT)
        return self

    def kill(self):
        """kill -9: a power cut, as far as the board's files are concerned."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class ProxyHost:
    """`aegis proxy` for some boards, with a gateway-style config of its own."""

    def __init__(self, node_id, dir, broker, keys, boards, fleet="test", call_timeout_s=3):
        self.dir = os.path.abspath(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "gateway.toml")
        self.log_path = os.path.join(self.dir, "proxy.log")
        self.proc = None
        with open(self.config, "w") as f:
            f.write('node_id = "%s"\nfleet = "%s"\nstore_dir = "store"\n'
                    'control_socket = "aegis.sock"\ntrusted_keys = %s\n\n[mqtt]\nurl = "%s"\n\n'
                    '[proxy]\nboards = %s\ncall_timeout_s = %s\n'
                    % (node_id, fleet, json.dumps([os.path.abspath(k) for k in keys]), broker,
                       json.dumps(list(boards)), call_timeout_s))

    def start(self):
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(AEGIS + ["proxy", "--config", self.config], cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        terminate(self.proc)
        if self.proc:
            self._log.close()


def main(argv=None):
    import argparse
    import signal
    ap = argparse.ArgumentParser(
        description="run N simulated MicroPython boards (and their proxy host) on a broker; "
        "with host_sim.fleet for CPython gateways on the same broker")
    ap.add_argument("--boards", type=int, default=2)
    ap.add_argument("--broker", required=True, metavar="URL")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--trusted-key", action="append", required=True, metavar="PUB")
    ap.add_argument("--fleet", default="sim")
    ap.add_argument("--group", action="append", metavar="NAME", help="group every board joins")
    ap.add_argument("--flash", action="store_true",
                    help="flash each board through a pty with aegis flash (slower; default: "
                    "run the runtime from the source tree)")
    ap.add_argument("--proxy-id", default="proxy-1", help="node id of the proxy host")
    a = ap.parse_args(argv)
    ids = ["board-%d" % (i + 1) for i in range(a.boards)]
    kind = UnixBoard if a.flash else SourceBoard
    boards = [kind(b, os.path.join(a.dir, b), a.broker, a.trusted_key, fleet=a.fleet,
                   groups=a.group or ["sim"]) for b in ids]
    proxy = ProxyHost(a.proxy_id, os.path.join(a.dir, a.proxy_id), a.broker, a.trusted_key,
                      ids, fleet=a.fleet)
    try:
        for b in boards:
            b.start()
            if a.flash:
                b.flash()
        proxy.start()
        for b in boards:
            b.wait_for("connected to broker", 60)
        print("running %s (proxy host %s) in fleet %s; Ctrl-C stops"
              % (", ".join(ids), a.proxy_id, a.fleet), flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
        signal.sigwait([signal.SIGINT, signal.SIGTERM])
    finally:
        proxy.stop()
        for b in boards:
            b.stop()


if __name__ == "__main__":
    main()
