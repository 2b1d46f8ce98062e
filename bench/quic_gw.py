"""Bench helper process: a real gateway (QUIC push receiver) AND a raw
aioquic sink on the same event loop, so the push and its raw baseline run
between the same two processes.

    python bench/quic_gw.py CONFIG.toml RAW_CERT RAW_KEY PORTFILE

The raw sink reads one stream to its end and answers b"ok"; it uses the
gateway's certificate but no client authentication (plain aioquic)."""
import asyncio
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from aioquic.asyncio.server import serve  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402

from node.gateway import config as cfgmod  # noqa: E402
from node.gateway.daemon import Gateway  # noqa: E402
from node.quic import tls as qtls  # noqa: E402


def raw_config(cert, key):
    # Same transport parameters as node/quic/tls.py's server_config.
    c = QuicConfiguration(is_client=False, alpn_protocols=[qtls.ALPN], idle_timeout=20.0,
                          max_stream_data=1 << 20, max_data=4 << 20)
    c.load_cert_chain(cert, key)
    return c


async def main(config, cert, key, portfile):
    gw = Gateway(cfgmod.load(config))

    def handler(reader, writer):
        async def sink():
            n = 0
            while True:
                b = await reader.read(1 << 20)
                if not b:
                    break
                n += len(b)
            writer.write(b"ok %d" % n)
            writer.write_eof()
        asyncio.ensure_future(sink())

    raw = await serve("127.0.0.1", 0, configuration=raw_config(cert, key),
                      stream_handler=handler)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(raw._transport.get_extra_info("sockname")[1]))
    os.replace(portfile + ".tmp", portfile)
    await gw.run()
    raw.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
