"""Gateway side of `aegis push --quic`: a transfer.Receiver fed from push
streams; a finished package is installed through the host's A/B lifecycle
and the final `result` goes back on the stream it came from.

One stream carries one push: hello {"p": "push"}, then transfer messages
(node/core/transfer.py) one per frame, replies on the same stream.  The
Receiver keeps its files under `incoming-quic/` so a push over MQTT of the
same package at the same time cannot collide with it.
"""
from node.push_install import PushInstaller, now_ms


class PushStream:
    def __init__(self, deployer, link, stream):
        self.d, self.link, self.stream = deployer, link, stream

    def on_frame(self, payload):
        self.d.rx.receive_data(payload, now_ms())
        self.d.drain(self)

    def on_close(self, why):
        pass    # the Receiver keeps the progress; a new stream resumes it

    def reply(self, msg):
        try:
            self.stream.send(msg)
        except ConnectionError:
            pass    # link gone: the sender re-offers after reconnecting


class Deployer(PushInstaller):
    LOG_TAG = {"transport": "quic"}

    def __init__(self, gw, max_package):
        PushInstaller.__init__(self, gw, max_package, prefix="incoming-quic/")
        # A finished package installs on a later loop turn, after the
        # driver has transmitted the last ack (node/push_install.py).
        self.later = gw.loop.call_soon

    def stream(self, link, stream):
        return PushStream(self, link, stream)

    def tick(self):
        self.rx.tick(now_ms())
        self.drain(None)

    def drain(self, ps):
        send = (lambda: self._send(ps)) if ps is not None else None
        self.drain_events({"peer": ps.link.peer if ps else None}, send)
        self._send(ps)

    def _send(self, ps):
        for _tid, msg in self.rx.messages_to_send():
            if ps is not None:      # replies answer the message just fed
                ps.reply(msg)
