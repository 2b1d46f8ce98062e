"""The gateway's QUIC side: one mutually authenticated listener serving
push streams (node/quic/deploy.py) and mesh streams (node/quic/mesh.py),
plus the links this gateway dials to its `[quic] peers`.  Started by the
daemon when the config has a [quic] section; runs on its event loop."""
import asyncio

from node.quic import driver
from node.quic import tls as qtls
from node.quic.deploy import Deployer
from node.quic.mesh import Mesh
from node.quic.tls import TLSFiles

TICK_S = 1.0


class QuicNode:
    def __init__(self, gw, qcfg):
        self.gw, self.cfg, self.log = gw, qcfg, gw.log
        self.files = TLSFiles(qcfg.cert, qcfg.key, qcfg.ca)
        self.deploy = Deployer(gw, qcfg.max_package)
        self.mesh = None
        self.server = self.tickets = None
        self.port = None
        self.counts = {"links": 0, "refused": 0, "refused_streams": 0}
        self.links = set()
        self._task = None
        self._lines = {}

    def _limited_log(self, level, msg, **kw):
        """Anyone can make a server-side link log (a refused handshake, a
        garbage stream): the first 50 of each kind, then one per 1000."""
        n = self._lines[msg] = self._lines.get(msg, 0) + 1
        if n <= 50 or n % 1000 == 0:
            if n > 50:
                kw["total"] = n
            self.log(level, msg, **kw)

    async def start(self):
        try:
            # Peers know a node by its certificate's CN; the loop rules
            # compare that with envelope `src`, so the two must agree.
            cn = qtls.cert_cn(self.files.cert)
            if cn != self.gw.cfg.node_id:
                raise ValueError("certificate %s is for %r, not this node's id %r (issue one "
                                 "with `aegis ca issue %s`)" % (self.files.cert, cn,
                                                                self.gw.cfg.node_id,
                                                                self.gw.cfg.node_id))
        except ValueError as e:
            self.log("error", "quic cannot start", error=str(e))
            raise SystemExit(2)
        self.mesh = Mesh(self, self.gw, self.cfg)
        if self.cfg.listen is not None:
            host, port = self.cfg.listen
            try:
                self.server, self.tickets = await driver.serve(
                    host, port, self.files, self, self._limited_log,
                    idle_timeout=self.cfg.idle_timeout)
            except (OSError, ValueError) as e:
                # A gateway that was told to serve QUIC and cannot must say so.
                self.log("error", "quic cannot start", listen="%s:%d" % (host, port),
                         error=str(e))
                raise SystemExit(2)
            self.port = driver.bound_port(self.server)
        self.mesh.start()
        self._task = asyncio.ensure_future(self._ticker())
        self.log("info", "quic started", listen="%s:%d" % (self.cfg.listen[0], self.port)
                 if self.server else None, peers=["%s:%d" % a for a in self.cfg.peers])

    async def stop(self):
        if self._task:
            self._task.cancel()
        await self.mesh.stop()
        for lk in list(self.links):
            lk.close(error_code=driver.ERR_SHUTDOWN, reason_phrase="gateway stopping")
        if self.server is not None:
            await asyncio.sleep(0.05)       # let the closes leave
            self.server.close()

    async def _ticker(self):
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.deploy.tick()
                self.mesh.tick()
            except Exception as e:
                self.log("error", "quic tick failed", error=repr(e))

    # ---- driver callbacks ---------------------------------------------------
    def on_link(self, link):
        self.links.add(link)
        self.counts["links"] += 1

    def on_refused(self, link, reason):
        self.counts["refused"] += 1

    def on_stream(self, link, stream, kind):
        if kind == "push":
            return self.deploy.stream(link, stream)
        if kind == "mesh":
            h = self.mesh.accept_stream(link, stream)
            if h is None:
                self.counts["refused_streams"] += 1
            return h
        return None

    def on_link_closed(self, link, why):
        self.links.discard(link)
        if self.mesh is not None:
            self.mesh.link_closed(link, why)

    def stats(self):
        d = {"listen": "%s:%d" % (self.cfg.listen[0], self.port) if self.server else None,
             "connections": sum(1 for lk in self.links if not lk.closed)}
        d.update(self.counts)
        d.update({"deploy_" + k: v for k, v in self.deploy.stats().items()})
        d.update(self.mesh.stats())
        return d
