"""Run a real `aegis gateway` process and the real `aegis` CLI in tests."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


def read_lines(proc, n, timeout=10.0):
    """Read n lines from a binary stdout pipe, failing after timeout seconds
    rather than blocking forever on a process that went quiet."""
    import select
    deadline = time.monotonic() + timeout
    buf, lines = b"", []
    fd = proc.stdout.fileno()
    while len(lines) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out after %.1fs: got %d of %d lines: %r"
                                 % (timeout, len(lines), n, lines))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError("process closed stdout after %d lines" % len(lines))
            buf += chunk
            while b"\n" in buf and len(lines) < n:
                line, buf = buf.split(b"\n", 1)
                lines.append(line.decode())
    return lines


def cli(*args, sock=None, check=True, timeout=30, input=None):
    cmd = [sys.executable, "-m", "node.cli.main"] + list(args)
    if sock and args and args[0] not in ("keygen", "pack", "gateway"):
        cmd += ["--socket", sock]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       input=input)
    if check and r.returncode != 0:
        raise AssertionError("aegis %s failed (%d): %s%s" % (" ".join(args), r.returncode,
                                                              r.stdout, r.stderr))
    return r


class Gateway:
    def __init__(self, tmp, pubs, node_id="gw1", extra=""):
        self.dir = str(tmp)
        self.sock = os.path.join(self.dir, "aegis.sock")
        self.config = os.path.join(self.dir, "gateway.toml")
        self.log_path = os.path.join(self.dir, "gateway.log")
        self.write_config(pubs, node_id, extra)
        self.proc = None

    def write_config(self, pubs, node_id="gw1", extra=""):
        with open(self.config, "w") as f:
            f.write('node_id = "%s"\nfleet = "test"\nstore_dir = "store"\n'
                    'control_socket = "aegis.sock"\ntrusted_keys = %s\n%s\n'
                    % (node_id, json.dumps(pubs), extra))

    def start(self):
        self.log = open(self.log_path, "a")
        mark = os.path.getsize(self.log_path)
        self.proc = subprocess.Popen([sys.executable, "-m", "node.cli.main", "gateway",
                                      "--config", self.config], cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None
                 or '"gateway started"' in self.logs()[mark:],
                 what="gateway start")
        assert self.proc.poll() is None, self.logs()
        return self

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def log_lines(self):
        return [json.loads(x) for x in self.logs().splitlines() if x.startswith("{")]

    def cli(self, *args, **kw):
        return cli(*args, sock=self.sock, **kw)

    def status(self):
        return json.loads(self.cli("status", "--json").stdout)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
        self.log.close()
        return self.proc.returncode

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)
        self.log.close()


@pytest.fixture
def gw(tmp_path, signer):
    """A started gateway trusting the `signer` fixture's key; stopped after."""
    g = Gateway(tmp_path, [signer.pub]).start()
    yield g
    if g.proc.poll() is None:
        g.stop()
