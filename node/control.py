"""The control socket protocol between the `aegis` CLI and a daemon.

Frames on a Unix stream socket: u32 big-endian length, then one CBOR map.
A request is {"op": NAME, ...}; each answer is {"ok": True, ...} or
{"ok": False, "error": TEXT}.  `events` with follow=True keeps streaming
{"ok": True, "event": {...}} frames until the client hangs up.
"""
import socket
import struct

from node.core import cbor

FRAME_MAX = 64 << 20  # a package travels in one frame


class ControlError(Exception):
    pass


def encode(msg):
    b = cbor.dumps(msg)
    return struct.pack(">I", len(b)) + b


async def read_frame(reader):
    head = await reader.readexactly(4)
    n = struct.unpack(">I", head)[0]
    if n > FRAME_MAX:
        raise ControlError("frame of %d bytes is over the %d limit" % (n, FRAME_MAX))
    msg = cbor.loads(await reader.readexactly(n))
    if not isinstance(msg, dict):
        raise ControlError("control frame is not a map")
    return msg


class Client:
    """Blocking client used by the CLI."""

    def __init__(self, path, timeout=30.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except FileNotFoundError:
            raise ControlError("no gateway control socket at %s (is `aegis gateway` running? "
                               "pass --socket PATH)" % path)
        except ConnectionRefusedError:
            raise ControlError("gateway at %s refused the connection (not running?)" % path)
        except PermissionError:
            raise ControlError("no permission to open %s" % path)

    def _recv(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ControlError("gateway closed the connection")
            buf += chunk
        return bytes(buf)

    def send(self, msg):
        self.sock.sendall(encode(msg))

    def recv(self):
        n = struct.unpack(">I", self._recv(4))[0]
        if n > FRAME_MAX:
            raise ControlError("answer too large")
        return cbor.loads(self._recv(n))

    def request(self, op, **kw):
        kw["op"] = op
        self.send(kw)
        r = self.recv()
        if not r.get("ok"):
            raise ControlError(r.get("error", "request failed"))
        return r

    def close(self):
        self.sock.close()
