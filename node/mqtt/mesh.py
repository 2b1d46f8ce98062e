"""The gateway's MQTT link: one connection carrying forwarded events,
mesh events in, module pushes in, and the retained node status.

Everything here runs on the gateway's asyncio thread: the link
(node.mqtt.aio_link) is an asyncio driver whose callbacks run on the loop,
so the module host is only touched from the event loop, as it requires.
"""
import asyncio
import time

from node.core import fleet as F
from node.mqtt.deploy import Deployer
from node.mqtt.forward import Forwarder
from node.mqtt.aio_link import AioLink

STATUS_EVERY_S = 5.0
STATUS_AFTER_S = 0.005      # a changed status waits for replies sent just before


class Mesh:
    def __init__(self, gw, mcfg):
        self.gw, self.cfg, self.log = gw, mcfg, gw.log
        fleet, node = gw.cfg.fleet, gw.cfg.node_id
        self.status_topic = F.status_topic(fleet, node)
        self.deploy_topics = [F.deploy_topic(fleet, node)] + \
            [F.group_topic(fleet, g) for g in mcfg.groups]
        self.ev_prefix = "aegis/%s/ev/" % fleet
        self._task = None
        self._last_status = None
        self._status_due = True
        self._errors = {}                   # kind -> count (link.py on_error)
        self._err_logged = (None, 0.0)

    def start(self):
        m = self.cfg
        self.link = AioLink(m.url, "aegis-%s-%s" % (self.gw.cfg.fleet, self.gw.cfg.node_id),
                            self._on_message,
                            on_connect=self._on_connect, on_disconnect=self._on_disconnect,
                            on_puback=self._on_puback,
                            will=(self.status_topic, self._status(False)),
                            ca=m.ca, cert=m.cert, key=m.key, username=m.username,
                            password=m.password, keepalive=m.keepalive, inflight=m.inflight,
                            on_error=self._on_error)
        self.fwd = Forwarder(self.gw, self.link, m)
        self.deploy = Deployer(self.gw, self.link, m)
        self.gw.host.taps.append(self.fwd.tap)
        self.link.start()
        self._task = asyncio.ensure_future(self._ticker())
        self.log("info", "mqtt link starting", url=m.url, groups=m.groups)
        self._check_identity()

    def _check_identity(self):
        # A broker set up as docs/SECURITY.md knows a certificate client by
        # its CN: any other node_id would see all its publishes refused.
        m, node = self.cfg, self.gw.cfg.node_id
        if m.cert and m.username is None:
            from node.mqtt.tls import cert_cn
            cn = cert_cn(m.cert)
            if cn != node:
                self.log("warn", "mqtt certificate names another node; a broker that takes "
                         "the CN as user name will refuse this node's topics",
                         cert_cn=cn, node_id=node)

    async def stop(self):
        if self._task:
            self._task.cancel()
        self.fwd.after_pump()
        # Give in-flight events a moment to be acked; the outbox keeps the rest.
        deadline = time.monotonic() + 2.0
        while self.fwd._inflight and self.link.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.fwd.close()
        await self.link.stop((self.status_topic, self._status(False)))

    # ---- link callbacks (event loop thread) --------------------------
    def _on_connect(self):
        # clean_session: subscriptions are made again on every connect.
        # no_local: the broker keeps our own events to itself.
        self.link.subscribe(self.fwd.subscriptions(), no_local=True)
        self.link.subscribe(self.deploy_topics)
        self.log("info", "mqtt connected", url=self.cfg.url, connects=self.link.connects)
        self._status_due = True
        self.publish_status()
        self.fwd.on_connect()
        self.deploy.flush_replies()

    def _on_disconnect(self):
        if self._task is None or self._task.cancelled():
            return      # our own clean stop
        self.log("warn", "mqtt disconnected; reconnecting", url=self.cfg.url,
                 why=self.link.last_drop, outbox=len(self.fwd.outbox))

    def _on_puback(self, mids):
        self.fwd.on_puback(mids)

    def _on_error(self, text, kind):
        # Wrong CA, refused certificate or password, ACL: the link keeps
        # retrying (backing off) and the node keeps serving locally.  One
        # log line per new reason, then one a minute while it persists.
        self._errors[kind] = self._errors.get(kind, 0) + 1
        now = time.monotonic()
        if text != self._err_logged[0] or now - self._err_logged[1] >= 60:
            self._err_logged = (text, now)
            self.log("error", {"denied": "mqtt denied a publish",
                               "too_big": "mqtt message dropped"}.get(
                         kind, "mqtt connect failed; retrying"), url=self.cfg.url, kind=kind,
                     error=text, count=self._errors[kind])

    def _on_message(self, topic, payload):
        try:
            if topic.startswith(self.ev_prefix):
                self.fwd.on_envelope(topic, payload)
            elif topic in self.deploy_topics:
                self.deploy.on_message(topic, payload)
        except Exception as e:  # one bad message must never stop the node
            self.log("error", "mqtt message handling failed", topic=topic, error=repr(e))

    # ---- status -------------------------------------------------------
    def _status(self, online):
        mods = [{"name": m["name"], "version": m["version"], "state": m["state"]}
                for m in self.gw.host.module_list()] if online else []
        counts = {}
        if online:
            counts.update(self.fwd.stats())
            counts.update({"deploy_" + k: v for k, v in self.deploy.stats().items()})
        return F.encode_status(self.gw.cfg.node_id, online, self.cfg.groups, mods,
                               self.cfg.max_chunk, counts, int(time.time() * 1000))

    def status_changed(self):
        # A moment later: the module change came from an install whose
        # pusher waits for its result, which goes out first (the link
        # writes on its next loop turn; building a status takes a while).
        self._status_due = True
        self.gw.loop.call_later(STATUS_AFTER_S, self.publish_status)

    def publish_status(self):
        if not self.link.connected or not self._status_due:
            return
        b = self._status(True)
        self._status_due = False
        self.link.publish(self.status_topic, b, qos=1, retain=True)

    async def _ticker(self):
        while True:
            await asyncio.sleep(STATUS_EVERY_S / 5)
            try:
                self.deploy.tick()
                self.fwd.after_pump()   # events a pump outside the gateway's left
                self._n = getattr(self, "_n", 0) + 1
                if self._n % 5 == 0:
                    self._status_due = True
                    self.publish_status()
            except Exception as e:
                self.log("error", "mqtt tick failed", error=repr(e))

    def stats(self):
        d = {"url": self.cfg.url, "connected": self.link.connected,
             "protocol": "5" if self.link.protocol == 5 else "3.1.1",
             "window": self.link.c.window(),
             "groups": self.cfg.groups, "last_error": self.link.last_error,
             "errors": dict(self._errors)}
        d.update(self.fwd.stats())
        d.update({"deploy_" + k: v for k, v in self.deploy.stats().items()})
        return d
