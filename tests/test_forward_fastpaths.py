"""The per-event shortcuts on the forwarding path produce exactly what the
slow paths do: the forwarder's envelope encoding (each (topic, mod) checked
once) and the control socket's batched frame reader."""
import asyncio

import cbor2
import pytest

from node.control import FRAME_MAX, ControlError, FrameReader, encode
from node.core import envelope as E
from node.gateway import config as cfgmod
from node.mqtt.forward import Forwarder
from node.store import DirStore


class _Cfg:
    node_id, fleet = "gw1", "test"


class _Gw:
    """What Forwarder takes from a gateway: a real store, the config, a log."""

    def __init__(self, d):
        self.store = DirStore(str(d))
        self.cfg, self.host, self.lines = _Cfg(), None, []
        self.log = lambda level, msg, **kw: self.lines.append((level, msg, kw))


def test_forwarder_encoding_equals_envelope_encode(tmp_path):
    mcfg = cfgmod.MqttConfig({"url": "mqtt://127.0.0.1:1883"}, lambda p: p)
    fwd = Forwarder(_Gw(tmp_path), None, mcfg)
    for seq, topic, data in ((1, "a/b", b"x"), (2, "a/b", b""), (3, "a/b", b"y" * 300),
                             (2 ** 40, "c", b"\x00\xff"), (4, "a/b", b"z" * E.MAX_DATA)):
        for _ in range(2):          # first checked in full, then from the cache
            assert fwd._encode(seq, 1700000000000, topic, data, "m@1.0") == \
                E.encode("gw1", seq, 1700000000000, topic, data, "m@1.0")
    assert ("a/b", "m@1.0") in fwd._checked
    # What the cache does not vouch for is still refused.
    with pytest.raises(E.EnvelopeError):
        fwd._encode(5, 1, "a/b", b"z" * (E.MAX_DATA + 1), "m@1.0")
    with pytest.raises(E.EnvelopeError):
        fwd._encode(5, -1, "a/b", b"", "m@1.0")
    with pytest.raises(E.EnvelopeError):
        fwd._encode(5, 1, "a/+", b"", "m@1.0")


def _reader(chunks):
    r = asyncio.StreamReader()
    for c in chunks:
        r.feed_data(c)
    r.feed_eof()
    return FrameReader(r)


def test_frame_reader_batches_and_splits_anywhere():
    msgs = [{"op": "emit", "topic": "t", "data": b"%d" % i} for i in range(50)]
    stream = b"".join(encode(m) for m in msgs)

    async def main(step):
        fr = _reader([stream[i:i + step] for i in range(0, len(stream), step)])
        got = []
        while True:
            try:
                batch = await fr.batch()
            except asyncio.IncompleteReadError:
                return got
            assert batch, "a batch is never empty"
            got.extend(batch)

    for step in (1, 3, 7, len(stream)):
        assert asyncio.run(main(step)) == msgs


def test_frame_reader_bad_frames_end_the_batch():
    ok = encode({"op": "status"})

    async def first_batch(data):
        return await _reader([data]).batch()

    for bad, why in ((b"\x00\x00\x00\x02\xff\xff", "CBOR"),
                     (encode([1, 2]), "not a map"),
                     ((FRAME_MAX + 1).to_bytes(4, "big"), "over the")):
        b = asyncio.run(first_batch(ok + bad + ok))
        assert b[0] == {"op": "status"} and len(b) == 2, b
        assert isinstance(b[1], ControlError) and why.lower() in str(b[1]).lower(), b[1]
    assert encode({"ok": True}) == encode(dict(ok=True)) and \
        cbor2.loads(encode({"ok": True})[4:]) == {"ok": True}
