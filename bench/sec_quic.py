"""Section `quic` (issue 6): push and reconnects over real aioquic.

(a) push_4m: `aegis push --quic` machinery (node.quic.push.QuicPush) of a
    4 MiB package to a gateway until the gateway reports it active, vs a
    raw aioquic transfer of the same bytes on one stream (write all, FIN,
    wait for the server's "ok") between the same two processes: the bench
    gateway process (bench/quic_gw.py) hosts both servers.  Both include
    the connection handshake.  Target ratio (throughput) >= 0.8.
(b) reconnect: connect + first round trip (a PING, which the gateway can
    only answer once it has verified the client) with a session ticket
    (resumption, no certificates) vs a full mutual-TLS handshake.
    Target ratio < 1.
"""
import asyncio
import os
import ssl
import subprocess
import sys
import time

from benchlib import ROOT, echo_wasm, median, pad_wasm, result, settle, target

SECTION = "quic"
SIZE = 4 << 20


def _package(ctx, version, size):
    """A metered, signed package of about `size` bytes (custom-section pad)."""
    from node.cli.packing import prepare_wasm
    from node.core import package as pk
    sign, raw, _ = ctx.keys()
    wasm, _ = echo_wasm()
    wasm = prepare_wasm(wasm, 16)
    wasm = pad_wasm(wasm, size - 700, version.encode())
    m = pk.make_manifest("bigecho", version, wasm, ["in/#"], ["echo/"], [], None, metered=True)
    return pk.build(m, wasm, sign, raw)


def _start(ctx):
    from node import ca
    d = ctx.mkdtemp("quic-gw")
    ca.init(os.path.join(d, "ca"), "bench")
    gw = os.path.join(d, "qb1")
    ops = os.path.join(d, "ops")
    ca.issue("qb1", os.path.join(d, "ca"), gw, ips=["127.0.0.1"])
    ca.issue("ops", os.path.join(d, "ca"), ops)
    ctx.keys()
    cfg = os.path.join(d, "gw.toml")
    with open(cfg, "w") as f:
        f.write('node_id = "qb1"\nfleet = "bench"\nstore_dir = "store"\ncontrol_socket = "s.sock"\n'
                'trusted_keys = ["%s"]\n[quic]\nlisten = "127.0.0.1:0"\ncert = "%s.crt"\n'
                'key = "%s.key"\nca = "%s.ca.crt"\n'
                % (os.path.join(ctx.tmpdir, "bench-key.pub"), gw, gw, gw))
    logp, portfile = os.path.join(d, "gw.log"), os.path.join(d, "rawport")
    log = open(logp, "a")
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "quic_gw.py"), cfg,
                          gw + ".crt", gw + ".key", portfile], cwd=ROOT, stdout=log,
                         stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    port = None
    while port is None or not os.path.exists(portfile):
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("bench QUIC gateway did not start: %s" % open(logp).read()[-2000:])
        for line in open(logp).read().splitlines():
            if '"quic started"' in line:
                port = int(line.split('"listen": "')[1].split('"')[0].rsplit(":", 1)[1])
        time.sleep(0.05)
    raw_port = int(open(portfile).read())
    return p, port, raw_port, ops


async def _raw(port, data, ca):
    from aioquic.asyncio.client import connect
    from aioquic.quic.configuration import QuicConfiguration
    from node.quic import tls as qtls
    c = QuicConfiguration(is_client=True, alpn_protocols=[qtls.ALPN], idle_timeout=20.0,
                          max_stream_data=1 << 20, max_data=4 << 20,
                          verify_mode=ssl.CERT_REQUIRED, cafile=ca, server_name="127.0.0.1")
    t0 = time.perf_counter()
    async with connect("127.0.0.1", port, configuration=c) as conn:
        r, w = await conn.create_stream()
        w.write(data)
        w.write_eof()
        reply = await r.read()
    dt = time.perf_counter() - t0
    assert reply == b"ok %d" % len(data), reply
    return dt


async def _push(port, ops, data):
    from node.quic.push import QuicPush
    p = QuicPush("127.0.0.1:%d" % port, ops, data, log=lambda m: None)
    t0 = time.perf_counter()
    ok, detail = await p.run()
    dt = time.perf_counter() - t0
    assert ok and "already" not in detail, detail
    return dt


async def _reconnects(port, ops, n):
    from node.quic import driver
    from node.quic.tls import TLSFiles
    files = TLSFiles.from_prefix(ops)
    box = {}
    full, resumed = [], []
    for i in range(n):
        for kind in ("full", "resumed"):
            ticket = box.get("t") if kind == "resumed" else None
            t0 = time.perf_counter()
            link = await driver.connect("127.0.0.1", port, files, ticket=ticket,
                                        on_ticket=lambda t: box.__setitem__("t", t))
            await link.ping()
            dt = time.perf_counter() - t0
            assert link.resumed == (kind == "resumed"), kind
            (full if kind == "full" else resumed).append(dt)
            await driver.close_link(link)
    return full, resumed


def run(ctx):
    proc, port, raw_port, ops = _start(ctx)
    out = []
    try:
        pushes, raws = [], []
        for r in range(ctx.rounds):
            pkg = _package(ctx, "1.0.%d" % r, SIZE)
            settle()
            raws.append(asyncio.run(_raw(raw_port, pkg, ops + ".ca.crt")))
            settle()
            pushes.append(asyncio.run(_push(port, ops, pkg)))
            ctx.log("  round %d: raw %.0f ms, push until active %.0f ms"
                    % (r, raws[-1] * 1000, pushes[-1] * 1000))
        mb = SIZE / 1e6
        out.append(result(SECTION, "push_4m", mb / median(pushes), "MB/s", mb / median(raws),
                          "raw aioquic, same bytes, one stream", target(">=", 0.8, "ratio"),
                          samples=[round(x * 1000, 1) for x in pushes],
                          raw_samples_ms=[round(x * 1000, 1) for x in raws],
                          note="push until active (verify + install), handshake included"))
        settle()
        full, resumed = asyncio.run(_reconnects(port, ops, 10 if ctx.quick else 20))
        out.append(result(SECTION, "reconnect_resumed", median(resumed) * 1000, "ms",
                          median(full) * 1000, "full mutual-TLS handshake",
                          target("<", 1.0, "ratio"),
                          samples=[round(x * 1000, 2) for x in resumed],
                          note="connect + first PING answered; session ticket, no 0-RTT"))
    finally:
        proc.terminate()
        proc.wait(15)
    return out
