"""A real Mosquitto on a free 127.0.0.1 port, for the board MQTT tests.

    b = Mosquitto(tmp_path); b.start(); ... b.kill(); b.start()  # same port
    b.stop()

Persistence is on and saved after every change, so a session (subscription
and queued QoS 1 messages) of a client with clean_session=False survives
kill -9 and restart, as it would with a real fleet broker.
"""
import os
import signal
import socket
import subprocess
import time

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=10.0, what="condition"):
    """Poll `cond` until true or raise; polling only, never a fixed sleep."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError("timed out waiting for " + what)
        time.sleep(0.01)


class Mosquitto:
    def __init__(self, workdir, port=None):
        self.dir = str(workdir)
        self.port = port or free_port()
        self.proc = None
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        self.log = os.path.join(self.dir, "mosquitto.log")
        self.db = os.path.join(self.dir, "mosquitto.db")
        lines = ["listener %d 127.0.0.1" % self.port, "allow_anonymous true",
                 "persistence true", "persistence_file mosquitto.db",
                 "persistence_location %s/" % self.dir,
                 "autosave_interval 1", "autosave_on_changes true",
                 "log_dest file %s" % self.log, "log_type all"]
        if os.geteuid() == 0:
            lines.append("user root")      # else it drops to `mosquitto` and can't write here
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_for(self._accepts, timeout, "mosquitto on port %d" % self.port)
        return self

    def _accepts(self):
        if self.proc.poll() is not None:
            raise RuntimeError("mosquitto exited: %s" % self.proc.stderr.read().decode())
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def kill(self):
        """kill -9: no goodbye to clients, nothing saved beyond autosave."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
