"""A throw-away Mosquitto for the demo and `host_sim`: a free port on
127.0.0.1, a generated config in its own directory, started and stopped by
its process id."""
import os
import shutil
import socket
import subprocess
import time

from host_sim.proc import terminate

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto():
    for p in CANDIDATES:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("mosquitto")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def accepts(port):
    """True while something accepts TCP connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def launch(exe, conf, log_path, port, timeout=10.0):
    """Start `exe -c conf` logging to log_path; return (proc, log file) once
    it accepts on `port`. On failure the process is killed, the log closed and
    RuntimeError carries the log text. Shared with tests/broker.py."""
    log = open(log_path, "a")
    proc = subprocess.Popen([exe, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not accepts(port):
        exited = proc.poll() is not None
        if exited or time.monotonic() > deadline:
            if not exited:
                proc.kill()
                proc.wait(5)
            log.close()
            with open(log_path) as f:
                text = f.read()
            raise RuntimeError("mosquitto %s on %d; log %s:\n%s"
                               % ("exited" if exited else "did not listen", port,
                                  log_path, text))
        time.sleep(0.02)
    return proc, log


class Mosquitto:
    def __init__(self, dir):
        self.dir = os.path.abspath(dir)
        self.exe = find_mosquitto()
        if self.exe is None:
            raise RuntimeError("mosquitto is not installed (make setup installs the "
                               "Debian package `mosquitto`)")
        self.port = free_port()
        self.url = "mqtt://127.0.0.1:%d" % self.port
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        self.proc = None

    def start(self, timeout=10.0):
        os.makedirs(self.dir, exist_ok=True)
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            # set_tcp_nodelay: transfer replies and PUBACKs are small and
            # request/response; docs/MESH.md explains why it matters.
            f.write("listener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
                    "log_dest stderr\nlog_type error\nlog_type warning\n%s"
                    % (self.port, "user root\n" if os.getuid() == 0 else ""))
        self.proc, self._log = launch(self.exe, conf, self.log_path, self.port, timeout)
        return self

    def stop(self):
        terminate(self.proc)
        if self.proc is not None:
            self._log.close()
            self.proc = None
