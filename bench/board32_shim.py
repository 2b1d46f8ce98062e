# Run by bench/board32.mjs in MicroPython's webassembly port before the
# board runtime: that port's asyncio has no streams (no sockets), so
# asyncio.open_connection is given here over Node's TCP (module jsnet),
# with the three calls node/board/mqtt_async.py makes of a stream.  Its
# objects stand in for asyncio.stream's on a board, in the measured heap.
import asyncio
import gc  # noqa: F401  # bench/board32.mjs samples the heap with it
import os
import sys

import jsnet
import uctypes


class _Stream:
    def __init__(self, host, port):
        self.ev = asyncio.Event()   # set by the socket: up, data, closed
        self.s = jsnet.connect(host, port, self.ev.set)

    async def readinto(self, buf):
        while True:
            n = jsnet.read(self.s, uctypes.addressof(buf), len(buf))
            if n:
                return max(n, 0)    # -1: closed, as a socket's b""
            self.ev.clear()
            await self.ev.wait()

    def write(self, data):
        if jsnet.state(self.s) == 2:
            raise OSError(32)       # EPIPE, as a socket says it
        jsnet.write(self.s, uctypes.addressof(data), len(data))

    async def drain(self):
        pass

    def close(self):
        jsnet.close(self.s)

    async def wait_closed(self):
        pass


async def _open(host, port, **kw):
    if kw:
        raise OSError(95)           # no TLS in this bench (EOPNOTSUPP)
    st = _Stream(host, port)
    while jsnet.state(st.s) == 0:
        st.ev.clear()
        await st.ev.wait()
    if jsnet.state(st.s) == 2:
        raise OSError(111)          # ECONNREFUSED
    return st, st


asyncio.open_connection = _open


async def _boot():
    os.chdir("/board")
    sys.path.insert(0, "/board/lib")
    import json
    with open("aegis.json") as f:
        cfg = json.load(f)
    from node.board import runtime
    await runtime.amain(cfg, "a")
