"""The control socket protocol between the `aegis` CLI and a daemon.

Frames on a Unix stream socket: u32 big-endian length, then one CBOR map.
A request is {"op": NAME, ...}; each answer is {"ok": True, ...} or
{"ok": False, "error": TEXT}.  `events` with follow=True keeps streaming
{"ok": True, "event": {...}} frames until the client hangs up.
"""
import asyncio
import socket
import struct

from node.core import cbor

FRAME_MAX = 64 << 20  # a package travels in one frame


class ControlError(Exception):
    pass


_OK = {"ok": True}
_OK_FRAME = struct.pack(">I", len(cbor.dumps(_OK))) + cbor.dumps(_OK)


def encode(msg):
    if msg == _OK:          # most answers (every emit): encoded once
        return _OK_FRAME
    b = cbor.dumps(msg)
    return struct.pack(">I", len(b)) + b


class FrameReader:
    """Requests from a stream in batches: every complete frame that one read
    brought in, so a client pipelining many small requests (a stream of
    emits) costs one wakeup per read, not one per request, and the daemon
    can answer them in one write."""

    def __init__(self, reader):
        self.reader = reader
        self.buf = bytearray()

    async def batch(self):
        """[request map, ...] (at least one) in arrival order.  A bad frame
        ends the list as a ControlError (answer it, then hang up: the stream
        cannot be trusted after it).  asyncio.IncompleteReadError at EOF."""
        while True:
            out, need = self._split()
            if out:
                return out
            data = await self.reader.read(max(1 << 16, need))
            if not data:
                raise asyncio.IncompleteReadError(bytes(self.buf), None)
            self.buf += data

    def _split(self):
        buf, out, i = self.buf, [], 0
        need = 0
        while len(buf) - i >= 4:
            n = int.from_bytes(buf[i:i + 4], "big")
            if n > FRAME_MAX:
                out.append(ControlError("frame of %d bytes is over the %d limit"
                                        % (n, FRAME_MAX)))
                break
            if len(buf) - i - 4 < n:
                need = n + 4 - (len(buf) - i)
                break
            try:
                msg = cbor.loads(bytes(buf[i + 4:i + 4 + n]))
            except ValueError as e:
                out.append(ControlError(str(e)))
                break
            i += 4 + n
            if not isinstance(msg, dict):
                out.append(ControlError("control frame is not a map"))
                break
            out.append(msg)
        del buf[:i]
        return out, need


class Client:
    """Blocking client used by the CLI."""

    def __init__(self, path, timeout=30.0):
        self.path = path
        self._buf = bytearray()     # received; what is before _at was returned
        self._at = 0
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
        # Buffered: a pipelining client (a stream of emits) gets many answers
        # per recv call instead of two calls per answer.
        buf, at = self._buf, self._at
        if len(buf) - at < n:
            buf = self._buf = buf[at:]
            at = 0
            while len(buf) < n:
                chunk = self.sock.recv(max(65536, n - len(buf)))
                if not chunk:
                    raise ControlError("gateway closed the connection")
                buf += chunk
        self._at = at + n
        return bytes(buf[at:at + n])

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
