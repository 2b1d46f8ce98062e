"""A raw aioquic client for the refusal tests, run as its own process:

    python tests/quic_client.py MODE HOST PORT CA [CERT KEY]

MODE nocert   connect presenting no client certificate, try a push hello
     garbage  connect (with CERT/KEY), write junk on a stream
     mesh     connect (with CERT/KEY), open a mesh stream, print READY, then
              read forever without ever acknowledging an event
     meshbad  connect (with CERT/KEY), open a mesh stream, send an event whose
              envelope is junk, then a frame that is not CBOR
Prints one JSON line: what the connection ended with."""
import asyncio
import json
import ssl
import struct
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

import cbor2


class P(QuicConnectionProtocol):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.end = asyncio.get_running_loop().create_future()
        self.got = 0

    def quic_event_received(self, ev):
        if isinstance(ev, events.ConnectionTerminated) and not self.end.done():
            self.end.set_result({"error_code": ev.error_code, "reason": ev.reason_phrase})
        elif isinstance(ev, events.StreamDataReceived):
            self.got += len(ev.data)


def frame(b):
    return struct.pack(">I", len(b)) + b


async def main(mode, host, port, cafile, cert=None, key=None):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["aegis/1"],
                            verify_mode=ssl.CERT_REQUIRED, cafile=cafile, idle_timeout=30)
    if cert:
        cfg.load_cert_chain(cert, key)
    out = {"mode": mode}
    try:
        async with connect(host, int(port), configuration=cfg, create_protocol=P) as c:
            out["handshake"] = True
            sid = c._quic.get_next_available_stream_id()
            if mode == "nocert":
                c._quic.send_stream_data(sid, frame(cbor2.dumps({"p": "push", "v": 1})))
            elif mode == "garbage":
                c._quic.send_stream_data(sid, b"\x00\x00\x10\x00" + b"GET / HTTP/1.1\r\n" * 300)
            elif mode == "mesh":
                c._quic.send_stream_data(sid, frame(cbor2.dumps({"p": "mesh", "v": 1})))
            elif mode == "meshbad":
                c._quic.send_stream_data(sid, frame(cbor2.dumps({"p": "mesh", "v": 1}))
                                         + frame(cbor2.dumps({"t": "ev", "i": 0, "e": b"junk"}))
                                         + frame(b"\xff\xfe not cbor"))
            c.transmit()
            if mode == "mesh":
                print("READY", flush=True)
            try:
                out.update(await asyncio.wait_for(c.end, 20))
            except asyncio.TimeoutError:
                out["timeout"] = True
            out["bytes_received"] = c.got
    except ConnectionError as e:
        out["connect_error"] = repr(e)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
